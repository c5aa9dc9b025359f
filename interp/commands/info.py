"""`interp info PATH`: what a checkpoint or run directory holds (architecture, sizes, checkpoints and steps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from interp.cli import app

if TYPE_CHECKING:
    from interp.models.hooked import ModelSummary


@app.command()
def info(path: Path = typer.Argument(..., help="A checkpoint directory or a training-run directory.")) -> None:
    """Print architecture, parameter count, layers, heads and sizes, which backends and analyses the model supports
    (and why not), and the checkpoints found with their steps. Every checkpoint is verified first (config, weights
    matching it exactly, tokenizer): a broken one is an error."""
    from interp.checkpoints import discover, read_summary
    from interp.loading import read_config, verify_checkpoint
    from interp.support import report

    checkpoints = discover(path)
    for ckpt in checkpoints:
        verify_checkpoint(ckpt.path)
    first = checkpoints[0]
    s = read_summary(first.path)
    heads = f"{s.n_heads}" + (f" ({s.n_kv_heads} key/value heads)" if s.n_kv_heads != s.n_heads else "")
    rows = [
        ("path", str(Path(path).expanduser().resolve())),
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
        typer.echo(f"\n{len(checkpoints)} checkpoints (sizes above are from {first.path.name})")
    step_width = max(len("step"), *(len(str(c.step)) for c in checkpoints))
    typer.echo(f"\n  {'step':>{step_width}}  directory")
    root = Path(path).expanduser().resolve()
    for ckpt in checkpoints:
        step = "?" if ckpt.step is None else str(ckpt.step)
        shown = ckpt.path.relative_to(root) if ckpt.path.is_relative_to(root) and ckpt.path != root else ckpt.path
        note = _differences(s, read_summary(ckpt.path)) if ckpt != first else ""
        typer.echo(f"  {step:>{step_width}}  {shown}{note}")


def _differences(first: ModelSummary, other: ModelSummary) -> str:
    """`   differs: n_layers 3, d_model 32` for sizes unlike the first checkpoint's, else nothing."""
    changed = [f"{k} {v}" for k, v in other.as_dict().items() if k != "n_params" and v != first.as_dict()[k]]
    return f"   differs: {', '.join(changed)}" if changed else ""
