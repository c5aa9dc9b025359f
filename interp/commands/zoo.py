"""`interp zoo build|list`: build the embedded model zoo (cached per code hash and seed) and show what it learned."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from interp.cli import app
from interp.errors import InterpError
from interp.outdir import current_umask, replace_dir, scratch_dir

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


MARKER = ".interp-zoo.json"
MARKER_KIND, MARKER_SCHEMA = "interp-zoo", 1


def is_zoo_copy(out: Path) -> bool:
    """Whether `out` holds interp's own marker (a regular file, not a link): proof that `interp zoo build` wrote it."""
    marker = out / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        found = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(found, dict) and found.get("kind") == MARKER_KIND and found.get("schema") == MARKER_SCHEMA


def check_zoo_out(out: Path) -> Path:
    """`out` as a directory `interp zoo build` may replace: missing, empty, or a zoo it wrote (its marker); never a
    file, a link, the working directory or one of its parents, nor inside the cache the copy is made from. An
    `InterpError` otherwise, before any work."""
    from interp.zoo.build import cache_dir

    out = Path(out).expanduser()
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == out else f"is under {parent}, which is"
            raise InterpError(f"--out {out} {where} a file, not a directory", fix="choose another --out directory")
    if out.is_symlink():
        raise InterpError(f"--out {out} is a symbolic link; the zoo builder never replaces through links",
                          fix="pass the real directory, or another --out")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise InterpError(f"--out {out} is the working directory or one of its parents",
                          fix="choose a new directory for the zoo, e.g. --out data/zoo")
    if out.resolve().is_relative_to(cache_dir().resolve()):
        raise InterpError(f"--out {out} is inside interp's zoo cache ({cache_dir()}), which the copy is made from",
                          fix="choose a directory outside the cache, e.g. --out data/zoo")
    if not out.exists() or not any(out.iterdir()) or is_zoo_copy(out):
        return out
    older = (out / "manifest.json").exists()
    old = " (it holds a manifest.json: a zoo from an older interp has no marker)" if older else ""
    raise InterpError(f"--out {out} is not empty and has no {MARKER}, so `interp zoo build` did not write it{old}",
                      fix=f"choose another --out, or remove {out} yourself if you no longer need it")


def _copy_file(src: str, dst: str) -> None:
    """Copy a file's bytes and give the copy the user's umask (the cache's weights may be private)."""
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o666 & ~current_umask())


def _copy_zoo(source: Path, out: Path) -> None:
    """Replace `out` (checked by `check_zoo_out`) with a copy of the zoo at `source`, as a whole: the copy is written
    into a hidden sibling, marked as interp's, then renamed into place."""
    from interp.results import atomic_write_json
    from interp.zoo.build import read_manifest

    out = check_zoo_out(out)  # again: the build may have taken minutes
    tmp = scratch_dir(out)
    try:
        shutil.copytree(source, tmp, copy_function=_copy_file, dirs_exist_ok=True)
        for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink())]:
            folder.chmod(0o777 & ~current_umask())
        atomic_write_json(tmp / MARKER, {"kind": MARKER_KIND, "schema": MARKER_SCHEMA, "source": source.name,
                                         "code_hash": read_manifest(source).get("code_hash"),
                                         "written": datetime.now(timezone.utc).isoformat()})
        replace_dir(tmp, out, keep=())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

    check_zoo_out(out)
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
