"""`interp patch RUN_OR_CKPT --task TASK.jsonl --out DIR`: exact activation patching over every checkpoint."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from interp.cli import app
from interp.errors import InterpError

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20, "g": 2**30,
          "gb": 2**30, "gib": 2**30}


def parse_memory(text: str | None) -> int | None:
    """'2GiB', '512M', '1000000' -> bytes (a budget under one byte is refused when the settings are checked)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise InterpError(f"cannot read --max-memory {text!r}", fix="write e.g. 2GiB, 512MiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@app.command()
def patch(
    run: Path = typer.Argument(..., help="A checkpoint directory or a training-run directory (every checkpoint)."),
    task: Path = typer.Option(..., "--task", help='JSONL lines {"clean", "corrupted", "answer", "wrong"}.'),
    out: Path = typer.Option(..., "--out", help="Results directory: new or empty, or an earlier run of this sweep "
                                                "with the same settings (resumes it)."),
    sites: str = typer.Option("resid_pre,attn_out,mlp_out,z", "--sites",
                              help="Comma-separated: resid_pre resid_mid resid_post attn_out mlp_out z z_by_pos "
                                   "q k v pattern (+ _by_pos)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Patch activations of this checkpoint or run in "
                                                                 "(cross-model); default the model itself."),
    noising: bool = typer.Option(False, "--noising", help="Run the clean prompt, patch in corrupted activations."),
    metric: str = typer.Option("logit_diff", "--metric", help="logit_diff, prob, kl, or module:function."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, or auto."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts per engine pass (default all)."),
    backend: str = typer.Option("torch", "--backend", help="torch, triton or auto."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Variant-batch memory budget, e.g. 2GiB "
                                                                        "(default: half free GPU memory, or RAM/4)."),
    bos: bool = typer.Option(True, "--bos/--no-bos", help="Prepend the tokenizer's BOS token to every prompt."),
    attribution: bool = typer.Option(False, "--attribution", help="Also run attribution patching (one forward and "
                                     "backward) and report its correlation with exact patching per checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds (never a checkpoint directory)."),
) -> None:
    """Sweep every checkpoint: results.safetensors ([checkpoint, layer, ...] per site), summary.json, report.html.

    Every input is checked before any model is loaded; a finished checkpoint is reused only while its weights,
    config, the task and the settings are unchanged."""
    from interp.options import parse_names
    from patching.sites import SITES
    from patching.sweep import Settings, run_sweep

    settings = Settings(sites=parse_names("--sites", sites, tuple(SITES)), metric=metric, noising=noising,
                        prepend_bos=bos, batch_size=batch_size, max_memory=parse_memory(max_memory), backend=backend,
                        device=device, attribution=attribution)
    written = run_sweep(run, task, out, settings, source=source, force=force)
    typer.echo(f"report: {written / 'report.html'}")
