"""`interp gradients MODEL --data FILE --out DIR`: layer-wise gradient nuclear norms (Li, Li & Zhou 2025)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interp.cli import app


@app.command()
def gradients(
    model: Path = typer.Argument(..., help="Checkpoint directory (Hugging Face layout)."),
    data: Path = typer.Option(..., "--data", help='JSONL of {"instruction": str, "response": str}.'),
    out: Path = typer.Option(..., "--out", help="Results directory (an interrupted run there is resumed)."),
    data_b: Optional[Path] = typer.Option(None, "--data-b", help="Compare with this dataset (condition b)."),
    model_b: Optional[Path] = typer.Option(None, "--model-b", help="Compare with this checkpoint (condition b)."),
    label_a: Optional[str] = typer.Option(None, "--label-a", help="Name of condition a in reports."),
    label_b: Optional[str] = typer.Option(None, "--label-b", help="Name of condition b in reports."),
    template: str = typer.Option("auto", "--template",
                                 help="auto | plain (instruction + newline) | chat (tokenizer's or the zoo's)."),
    prepend_bos: Optional[bool] = typer.Option(None, "--prepend-bos/--no-prepend-bos",
                                               help="Put BOS first (default: only for zoo checkpoints)."),
    mlp: bool = typer.Option(False, "--mlp", help="Also the MLP matrices (gate/up/down)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per forward/backward pass (at least 1)."),
    max_length: int = typer.Option(1024, "--max-length", help="Truncate samples to this many tokens (at least 2)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples (at least 1)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16, float16 or float64."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Gradient nuclear norm, sigma_1 ratio and Frobenius norm per layer and projection; MAD tables; comparisons."""
    from interp.dynamics.gradients.pipeline import Condition, Options, run_gradients

    options = Options(template=template, include_mlp=mlp, batch_size=batch_size, max_length=max_length,
                      prepend_bos=prepend_bos, limit=limit, device=device, dtype=dtype)
    if data_b is None and model_b is None:
        conditions = [Condition(model, data, label_a or data.stem)]
    else:
        b_model, b_data = model_b or model, data_b or data

        def name(m: Path, d: Path) -> str:
            return f"{m.parent.name}/{m.name}" if b_data == data else d.stem

        conditions = [Condition(model, data, label_a or name(model, data)),
                      Condition(b_model, b_data, label_b or name(b_model, b_data))]
    typer.echo(run_gradients(conditions, out, options, force)["mad_markdown"])
    typer.echo(f"wrote {out}")
