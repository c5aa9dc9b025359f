"""The `interp` command line. Each sub-command lives in `interp/commands/<name>.py`.

Heavy imports (torch, transformers) happen inside the commands, so `interp --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

from interp.errors import InterpError

app = typer.Typer(
    name="interp",
    help="Mechanistic interpretability across training: base vs post-trained models and checkpoints of one run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_STATE = {"debug": False}

# Sub-command modules; importing one registers its commands on `app`.
COMMAND_MODULES = [
    "interp.commands.info",
]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


for _module in COMMAND_MODULES:
    importlib.import_module(_module)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except InterpError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as done:
        code = getattr(done, "exit_code", getattr(done, "code", 0))
        sys.exit(code or 0)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
