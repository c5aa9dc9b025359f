"""`interp zoo build|list`: build the embedded model zoo (cached per code hash and seed) and show what it learned."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import typer

from interp.cli import app
from interp.errors import InterpError

zoo_app = typer.Typer(help="The embedded model zoo: small Llama models trained here (base and chat runs).",
                      no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

# (header, metric, format) of the per-checkpoint table
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("induction", "induction_score", "{:.3f}"),
    ("head", "induction_head", "{}"),
    ("rep.loss", "repeated_half_loss", "{:.2f}"),
    ("facts", "fact_recall", "{:.3f}"),
    ("truth", "truth_accuracy", "{:.3f}"),
    ("layer", "truth_layer", "{}"),
    ("refuse.harm", "refusal_harmful", "{:.2f}"),
    ("refuse.ok", "refusal_harmless", "{:.2f}"),
    ("chat.qa", "chat_fact_accuracy", "{:.2f}"),
    ("arith.fast", "arithmetic_fast", "{:.2f}"),
    ("arith.slow", "arithmetic_slow", "{:.2f}"),
)


def _copy_zoo(source: Path, out: Path) -> None:
    """Replace `out` (missing, or an earlier zoo) with a copy of the zoo at `source`."""
    from interp.zoo.build import MANIFEST

    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InterpError(f"{out} exists and is not a zoo (no {MANIFEST})", fix="choose another --out or empty it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def print_zoo(root: Path) -> None:
    """Each run's checkpoints (found by `interp.checkpoints.discover`) with their measured behaviour, then the
    thresholds."""
    from interp.checkpoints import discover
    from interp.zoo.build import RUNS, read_manifest

    manifest = read_manifest(root)
    kind = "quick" if manifest["quick"] else "full"
    typer.echo(f"zoo {root}  ({kind}, seed {manifest['seed']}, {manifest['n_params']:,} parameters, built in "
               f"{manifest['built_seconds']:.0f} s)")
    for run in RUNS:
        by_path = {(root / entry["path"]).resolve(): entry for entry in manifest["runs"][run]}
        rows = [[str(c.step), c.path.name] + _cells(by_path[c.path.resolve()]["metrics"]) for c in discover(root / run)]
        _table(f"\n{run}", ["step", "directory", *(h for h, _, _ in COLUMNS)], rows)
    typer.echo("\nthresholds" + ("  (a quick zoo need not meet them)" if manifest["quick"] else ""))
    for name, check in manifest["thresholds"].items():
        mark = "PASS" if check["passed"] else "FAIL"
        typer.echo(f"  {mark}  {name:<22} {check['value']:.3f} {check['op']} {check['limit']}  {check['description']}")


def _cells(metrics: dict[str, Any]) -> list[str]:
    return [fmt.format(metrics[key]) for _, key, fmt in COLUMNS]


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    typer.echo(title)
    for row in [header, *rows]:
        typer.echo("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


@zoo_app.command("build")
def build_command(
    out: Path = typer.Option(Path("data/zoo"), "--out", "-o", help="Where to write the zoo (base/, chat/, manifest)."),
    quick: bool = typer.Option(False, "--quick", help="A small zoo in about a minute (for unit tests; it need not "
                                                      "meet the behaviour thresholds)."),
    seed: int = typer.Option(0, help="Seed for initialisation and corpus sampling."),
    rebuild: bool = typer.Option(False, help="Train again even when the cache holds this zoo."),
) -> None:
    """Generate the corpora, train the base and chat runs, measure them, and write the zoo (reusing the cache)."""
    from interp.zoo.build import ensure_zoo

    _copy_zoo(ensure_zoo(quick=quick, seed=seed, rebuild=rebuild), out)
    print_zoo(out)


@zoo_app.command("list")
def list_command(
    path: Optional[Path] = typer.Argument(None, help="A zoo directory (default: data/zoo, else the cached zoo)."),
) -> None:
    """Print the runs, their checkpoints and each checkpoint's measured behaviour."""
    from interp.zoo.build import MANIFEST, cache_dir, cache_key

    candidates = [path] if path else [Path("data/zoo"), cache_dir() / cache_key(quick=False, seed=0)]
    found = [c for c in candidates if (c / MANIFEST).is_file()]
    if not found:
        raise InterpError(f"no zoo at {path or 'data/zoo'} (no {MANIFEST})", fix="run `interp zoo build` first")
    print_zoo(found[0])
