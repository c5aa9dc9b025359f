"""`interp info PATH`: what a checkpoint or run directory holds (architecture, sizes, checkpoints and steps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from interp.checkpoints import REVISIONS_HELP
from interp.cli import app

if TYPE_CHECKING:
    from interp.checkpoints import Checkpoint
    from interp.models.hooked import ModelSummary


@app.command()
def info(path: Path = typer.Argument(..., help="A checkpoint directory, a training-run directory, or a hub id "
                                                "(`org/name`: its revisions in the Hugging Face cache)."),
         revisions: Optional[str] = typer.Option(None, "--revisions", help=REVISIONS_HELP)) -> None:
    """Print architecture, parameter count, layers, heads and sizes, which backends and analyses the model supports
    (and why not), and the checkpoints found with their steps, tokens seen, weights' sha256 (prefix) and revisions or
    directories, and a warning for checkpoints with identical weights. Every checkpoint is verified first (config,
    weights matching it exactly, tokenizer): a broken one is an error."""
    from interp.checkpoints import identical_weights, read_summary, run_checkpoints, weights_sha256
    from interp.hub import is_hub_id
    from interp.loading import read_config, verify_checkpoint
    from interp.support import report

    hub = is_hub_id(str(path))
    checkpoints = run_checkpoints(path, revisions)
    for ckpt in checkpoints:
        verify_checkpoint(ckpt.path)
    first = checkpoints[0]
    s = read_summary(first.path)
    heads = f"{s.n_heads}" + (f" ({s.n_kv_heads} key/value heads)" if s.n_kv_heads != s.n_heads else "")
    root = Path(path).expanduser().resolve()
    rows = [
        ("path", str(path) if hub else str(root)),
        ("architecture", s.architecture),
        ("parameters", f"{s.n_params:,}"),
        ("layers", str(s.n_layers)),
        ("heads", heads),
        ("d_model", str(s.d_model)),
        ("d_head", str(s.d_head)),
        ("d_mlp", str(s.d_mlp)),
        ("vocab", f"{s.d_vocab:,}"),
        ("context", f"{s.n_ctx:,}"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        typer.echo(f"{key:<{width}}{value}")
    typer.echo("\nsupport (backends, then analyses)")
    for line in report(read_config(first.path)):
        typer.echo(f"  {line}")
    if len(checkpoints) > 1:
        typer.echo(f"\n{len(checkpoints)} checkpoints (sizes above are from {first.name})")
    name = "revision" if any(ckpt.revision for ckpt in checkpoints) else "directory"
    hashes = [weights_sha256(ckpt.path) for ckpt in checkpoints]
    table = [_columns(ckpt, root, name, sha) for ckpt, sha in zip(checkpoints, hashes)]
    notes = [_differences(s, read_summary(ckpt.path)) if ckpt != first else "" for ckpt in checkpoints]
    _print_table(table, notes)
    for finding in identical_weights(checkpoints, hashes):
        typer.echo(f"\nwarning: {finding}")


def _columns(ckpt: Checkpoint, root: Path, name: str, sha: str) -> dict[str, str]:
    """One checkpoint's row: step, tokens seen ("" when its name does not say), its weights' sha256 (first 12 hex
    digits), and (as `name`) its revision or directory."""
    shown = ckpt.path.relative_to(root) if ckpt.path.is_relative_to(root) and ckpt.path != root else ckpt.path
    return {"step": "?" if ckpt.step is None else str(ckpt.step),
            "tokens": "" if ckpt.tokens is None else f"{ckpt.tokens / 1e9:g}B", "sha256": sha[:12],
            name: ckpt.revision or str(shown)}


def _print_table(table: list[dict[str, str]], notes: list[str]) -> None:
    """The checkpoints table: right-aligned columns, the last (the name) left-aligned; a column empty in every row is
    left out."""
    keys = [k for k in dict.fromkeys(k for row in table for k in row) if any(row.get(k) for row in table)]
    widths = {k: max(len(k), *(len(row.get(k, "")) for row in table)) for k in keys[:-1]}
    typer.echo("\n  " + "  ".join([*(f"{k:>{widths[k]}}" for k in keys[:-1]), keys[-1]]))
    for row, note in zip(table, notes):
        cells = [f"{row.get(k, ''):>{widths[k]}}" for k in keys[:-1]]
        typer.echo("  " + "  ".join([*cells, row.get(keys[-1], "")]) + note)


def _differences(first: ModelSummary, other: ModelSummary) -> str:
    """`   differs: n_layers 3, d_model 32` for sizes unlike the first checkpoint's, else nothing."""
    changed = [f"{k} {v}" for k, v in other.as_dict().items() if k != "n_params" and v != first.as_dict()[k]]
    return f"   differs: {', '.join(changed)}" if changed else ""
