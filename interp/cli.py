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
    rich_markup_mode=None,  # help text is shown as written: `[checkpoint, layer]` is a shape, not markup
)

_STATE = {"debug": False}

# Sub-command modules; importing one registers its commands on `app`.
COMMAND_MODULES = [
    "interp.commands.info",
    "interp.commands.cache",
    "interp.commands.tuco",
    "interp.commands.directions",
    "interp.commands.knowledge",
    "interp.commands.gradients",
    "interp.commands.induction",
    "interp.commands.patch",
    "interp.commands.app",
    "interp.commands.zoo",
]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


for _module in COMMAND_MODULES:
    importlib.import_module(_module)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2 (`--debug`: the traceback)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in args:  # accepted anywhere on the line; the root option handles it
        args = ["--debug", *(arg for arg in args if arg != "--debug")]
    args = args or ["--help"]
    _STATE["debug"] = False
    try:
        code = app(args=args, prog_name="interp", standalone_mode=False)
    except InterpError as err:
        if _STATE["debug"]:
            raise
        _fail(str(err))
    except typer.TyperException as err:  # usage errors: unknown option, missing argument, bad value
        ctx = getattr(err, "ctx", None)
        _fail(err.format_message() + (f" (fix: see '{ctx.command_path} --help')" if ctx is not None else ""))
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # a bug, not a user error: still one line, with the way to the traceback
        if _STATE["debug"]:
            raise
        typer.echo(f"error: internal error {type(err).__name__}: {' '.join(str(err).split())[:300]} (fix: this is a "
                   "bug in interp; rerun with --debug and report the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    """Print one error line on stderr and exit with status 2."""
    typer.echo("error: " + " ".join(message.splitlines()), err=True)
    sys.exit(2)


if __name__ == "__main__":
    from interp.cli import main as registered_main  # the commands registered on the imported module, not __main__

    registered_main()
