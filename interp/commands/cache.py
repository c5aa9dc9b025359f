"""`interp cache PATH`: store the activations of chosen hooks over a prompt file, per checkpoint and hook."""

from __future__ import annotations

from pathlib import Path

import typer

from interp.cli import app
from interp.errors import InterpError


@app.command()
def cache(
    path: Path = typer.Argument(..., help="A checkpoint directory or a training-run directory (every checkpoint)."),
    prompts: Path = typer.Option(..., "--prompts", "-p",
                                 help='Prompt file: text, one prompt a line, or JSONL of {"prompt": ...}.'),
    hooks: list[str] = typer.Option(..., "--hook", help="Hook name, e.g. blocks.0.hook_resid_post (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache directory; a run gets one sub-directory per checkpoint."),
    positions: str = typer.Option("all", help="all, last, or comma-separated positions (negative from the end)."),
    batch_size: int = typer.Option(8, help="Prompts per forward pass (bounds memory)."),
    dtype: str = typer.Option("float32", help="Stored dtype: float32, float16 or bfloat16."),
    prepend_bos: bool = typer.Option(False, help="Prepend the tokenizer's BOS token to every prompt."),
    shard_mb: int = typer.Option(256, help="Start a new shard file after about this many MiB per hook."),
    backend: str = typer.Option("native", help="native, transformer_lens or nnsight (same activations)."),
    device: str | None = typer.Option(None, help="torch device, e.g. cuda or cpu (default: the loader's choice)."),
) -> None:
    """Cache activations; the same request again reuses the files. A run's checkpoints must share shapes."""
    from interp.cache import cache_run
    from interp.finetuning.prompts import read_prompts
    from interp.loading import resolve_dtype

    handles = cache_run(path, read_prompts(prompts), hooks, out, positions=parse_positions(positions),
                        batch_size=batch_size, dtype=resolve_dtype(dtype), prepend_bos=prepend_bos,
                        shard_bytes=shard_mb * 2**20, backend=backend, device=device)
    for handle in handles:
        for hook in handle.hooks:
            meta = handle.meta(hook)
            state = "reused" if hook in handle.reused else "written"
            typer.echo(f"{state:<8} {handle.path / hook}  shape {meta['shape']} {meta['dtype']}, "
                       f"{len(meta['shards'])} shard{'s' if len(meta['shards']) != 1 else ''}")


def parse_positions(text: str) -> str | list[int]:
    """`all`, `last`, or `0,5,-1` as a list of ints."""
    if text in ("all", "last"):
        return text
    try:
        return [int(p) for p in text.split(",")]
    except ValueError as err:
        raise InterpError(f"cannot read positions {text!r}", fix="use all, last, or integers like 0,3,-1") from err
