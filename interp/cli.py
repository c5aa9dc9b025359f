"""The `interp` command line: one command per registered analysis (`interp.analyses`), generated from its Spec, and
the tools in `interp/commands/` (info, cache, export, zoo, app, induction train).

Heavy imports (torch, transformers) happen inside the commands, so `interp --help` is instant.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import sys
import typing
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from interp import commands
from interp.analyses import analyses
from interp.analyses.unit import Analysis, Arg, cli_form
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
# Sub-command groups: (help, the sub-command a bare `interp GROUP ARG ...` means, if any).
GROUPS = {"directions": ("Truthfulness and refusal directions of a base and a post-trained model (Du et al. 2025).",
                         None),
          "induction": ("Induction heads across a training run: scores per checkpoint, and clamped training.",
                        "scores")}


class DefaultSubcommand(TyperGroup):
    """A group where an argument that names no sub-command starts the default one (`interp induction RUN` is
    `interp induction scores RUN`)."""

    default: str | None = None

    def parse_args(self, ctx: typer.core._click.Context, args: list[str]) -> list[str]:  # typer vendors click
        if self.default and args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


def group(name: str) -> typer.Typer:
    """The sub-command group `interp NAME ...`, created on first use."""
    for info in app.registered_groups:
        if info.name == name:
            return info.typer_instance
    help_text, default = GROUPS[name]
    cls = type(f"{name.title()}Group", (DefaultSubcommand,), {"default": default})
    sub = typer.Typer(help=help_text, no_args_is_help=True, cls=cls)
    app.add_typer(sub, name=name)
    return sub


def command_params(unit: Analysis) -> list[inspect.Parameter]:
    """The typer parameters of `unit`'s command, one per Spec field: `Arg` positional, `Opt` an option (a sequence
    field a repeatable option), with the Spec's defaults."""
    params = []
    for field in unit.fields():
        kind, form = cli_form(unit.spec, field.name)
        default = (field.default if field.default is not dataclasses.MISSING
                   else field.default_factory() if field.default_factory is not dataclasses.MISSING else ...)
        if typing.get_origin(kind) in (tuple, list):  # typer's repeatable option: a list, None when absent
            kind, default = Optional[list[typing.get_args(kind)[0]]], None if default == () else default
        info = (typer.Argument(help=form.help) if isinstance(form, Arg)
                else typer.Option(*form.flags, help=form.help))
        params.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info],
                                        default=inspect.Parameter.empty if default is ... else default))
    return params


def add_command(unit: Analysis) -> None:
    """Register `interp <unit.command>`: build the Spec from the arguments, run it, print where results went."""
    sequences = {f.name for f in unit.fields() if typing.get_origin(cli_form(unit.spec, f.name)[0]) in (tuple, list)}

    def command(**kwargs: Any) -> None:
        # typer gives a repeatable option as a list (None when absent); the Spec holds a tuple
        settings = {k: tuple(v or ()) if k in sequences else v for k, v in kwargs.items()}
        results = unit.run(unit.spec(**settings))
        typer.echo(f"wrote {results.path}")

    params = command_params(unit)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = unit.spec.__doc__
    *path, name = unit.command
    (group(path[0]) if path else app).command(name)(command)


for _unit in analyses().values():
    add_command(_unit)
for _module in pkgutil.iter_modules(commands.__path__):  # the tools: info, cache, export, zoo, app, induction train
    importlib.import_module(f"{commands.__name__}.{_module.name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2 (`--debug`: the traceback)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in args:  # accepted anywhere on the line; the root option handles it
        args = ["--debug", *(arg for arg in args if arg != "--debug")]
    args = ray_alone(args) or ["--help"]
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


def ray_alone(args: list[str]) -> list[str]:
    """`--ray` with no address after it (at the end, before another option, or before a path) as `--ray=local`:
    typer's options take a value or none, never an optional one."""
    from interp.executors import LOCAL, is_ray_address

    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or not is_ray_address(out[i + 1])):
            out[i] = f"--ray={LOCAL}"
    return out


def _fail(message: str) -> None:
    """Print one error line on stderr and exit with status 2."""
    typer.echo("error: " + " ".join(message.splitlines()), err=True)
    sys.exit(2)


if __name__ == "__main__":
    from interp.cli import main as registered_main  # the commands registered on the imported module, not __main__

    registered_main()
