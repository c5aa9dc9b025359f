"""What an analysis is: a settings dataclass (`Spec`), `run(spec) -> Results`, `figures(results)` and an explorer
page, bundled as one `Analysis` and registered by living in `interp/analyses/<name>/`.

A `Spec`'s fields carry their command-line form as `Annotated` metadata (`Arg` for a positional argument, `Opt` for
an option); `interp.cli` turns every registered `Spec` into a command, so the Python API and the CLI take the same
settings with the same defaults. Nothing here imports typer, torch or the app: registering stays instant.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from interp.checkpoints import REVISIONS_HELP
from interp.data.tokens import BOS_HELP

if TYPE_CHECKING:
    from interp.executors import Executor
    from interp.results import Axes, Results

@dataclass(frozen=True)
class Arg:
    """A `Spec` field given positionally on the command line."""

    help: str


@dataclass(frozen=True)
class Opt:
    """A `Spec` field given as an option; `flags` override the default `--field-name` (e.g. "--bos/--no-bos")."""

    help: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    """One registered analysis.

    `name` is what `write_results` records as `analysis` (and the explorer picks the page by); `command` the words
    of its CLI command (("directions", "truth") is `interp directions truth`); `page` the module holding the
    explorer page's `render(results, found)`, which reads results and nothing else.
    """

    name: str
    title: str
    command: tuple[str, ...]
    spec: type
    run: Callable[[Any], Results]
    figures: Callable[[Results], list[Any]]
    page: str
    example: str = ""  # a command line for the explorer's run page, e.g. "knowledge BASE POST --out results/k"

    def fields(self) -> list[dataclasses.Field[Any]]:
        """The Spec's settings, in command-line order: that of its `__init__`, keyword-only fields (an inherited
        `ExecutorSpec`'s) last."""
        return sorted(dataclasses.fields(self.spec), key=lambda field: field.kw_only)


# Options that many Specs declare alike: the data layer's BOS policy, and the revisions of a hub id swept as a run.
Bos = typing.Annotated[bool, Opt(BOS_HELP, ("--bos/--no-bos",))]
Revisions = typing.Annotated[typing.Optional[str], Opt(REVISIONS_HELP, ("--revisions",))]

# The fields of a Spec whose sweep runs its units on an executor (`executor_of`); the results never depend on them.
Workers = typing.Annotated[int, Opt("Run checkpoints on N local processes (results identical to one).",
                                    ("--workers",))]
RayAddress = typing.Annotated[typing.Optional[str], Opt(
    "Run checkpoints as Ray tasks: --ray alone starts Ray on this machine, --ray ADDRESS (or RAY_ADDRESS) joins a "
    "cluster (needs `pip install 'interp[ray]'`).", ("--ray",))]
GpusPerTask = typing.Annotated[float, Opt("GPUs per Ray task (fractions share a GPU); with --ray.",
                                          ("--gpus-per-task",))]
CpusPerTask = typing.Annotated[typing.Optional[float], Opt(
    "CPU cores (torch threads) per worker process or Ray task (default 1), or of a sweep in this process (default: "
    "torch's). Results are the same bytes at the same thread count.", ("--cpus-per-task",))]


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec:
    """Where a Spec's sweep runs its units (`executor_of`): a Spec inherits these options after its own."""

    workers: Workers = 1
    ray: RayAddress = None
    gpus_per_task: GpusPerTask = 0.0
    cpus_per_task: CpusPerTask = None


# Where results go, whether to replace them, and where the work runs: not what the results are.
SETTINGS_EXCLUDED = ("out", "force", *(field.name for field in dataclasses.fields(ExecutorSpec)))


def help_of(field: Any) -> str:
    """The help text of an `Annotated[..., Opt(...)]` alias (for a tool command that takes the same option)."""
    return next(e.help for e in typing.get_args(field)[1:] if isinstance(e, (Arg, Opt)))


def executor_of(spec: ExecutorSpec) -> Executor:
    """The checked executor a Spec's `workers`, `ray`, `gpus_per_task` and `cpus_per_task` fields ask for."""
    from interp.executors import Executor

    return Executor(spec.workers, spec.ray, spec.gpus_per_task, spec.cpus_per_task).checked()


def cli_form(spec: type, name: str) -> tuple[Any, Arg | Opt]:
    """(type, Arg or Opt) of the Spec field `name`, read from its `Annotated` hint."""
    hint = typing.get_type_hints(spec, include_extras=True)[name]
    if typing.get_origin(hint) is not typing.Annotated:
        raise TypeError(f"{spec.__qualname__}.{name} has no Arg/Opt annotation")
    base, *extras = typing.get_args(hint)
    marker = next((e for e in extras if isinstance(e, (Arg, Opt))), None)
    if marker is None:
        raise TypeError(f"{spec.__qualname__}.{name} has no Arg/Opt annotation")
    return base, marker


def absolute(value: Any) -> Any:
    """A setting as recorded: paths absolute (so a rerun from elsewhere matches; a hub id as given, as
    `interp.checkpoints.run_location` records runs), sequences as lists."""
    from interp.checkpoints import run_location

    if isinstance(value, Path):
        return run_location(value)
    if isinstance(value, (list, tuple)):
        return [absolute(v) for v in value]
    return value


def settings_of(spec: Any) -> dict[str, Any]:
    """The settings a results directory is keyed by (`interp.outdir.check_out`): every field but `out` and `force`."""
    return {f.name: absolute(getattr(spec, f.name)) for f in dataclasses.fields(spec)
            if f.name not in SETTINGS_EXCLUDED}


def write(unit: Analysis, out: Path, tensors: Mapping[str, Any], summary: dict[str, Any], *, title: str,
          axes: Mapping[str, Axes], tokenization: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]],
          settings: dict[str, Any]) -> Results:
    """Write `unit`'s results directory, its report drawn by `unit.figures` from exactly what is written (so the report
    and the explorer draw the same figures), and read it back."""
    from interp.results import Results, describe_tensors, read_results, write_results

    shown = {**summary, "tensors": describe_tensors(tensors, axes)}  # what `read_results` will give the page
    figures = unit.figures(Results(path=Path(out), tensors=dict(tensors), summary=shown))
    path = write_results(out, dict(tensors), summary, figures, title=title, analysis=unit.name, axes=axes,
                         tokenization=tokenization, inputs=inputs, settings=settings)
    return read_results(path)
