"""`interp cache PATH`: store the activations of chosen hooks over a prompt file, per checkpoint and hook."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interp.analyses.unit import CpusPerTask, GpusPerTask, RayAddress, Workers, help_of
from interp.cli import app
from interp.data.tokens import BOS_DEFAULT, BOS_HELP
from interp.errors import InterpError


@app.command()
def cache(
    path: Path = typer.Argument(..., help="A checkpoint directory or a training-run directory (every checkpoint)."),
    prompts: Path = typer.Option(..., "--prompts", "-p",
                                 help='Prompt file: text, one prompt a line, or JSONL of {"prompt": ...}.'),
    hooks: list[str] = typer.Option(..., "--hook", help="Hook name, e.g. blocks.0.hook_resid_post (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Cache directory; a run gets one sub-directory per checkpoint. It must be new or "
                                  "empty, or an earlier cache with the same checkpoint, prompt file, positions, dtype "
                                  "and BOS choice (reused; more hooks may be added)."),
    positions: str = typer.Option("all", help="all, last, or comma-separated positions (negative from the end)."),
    batch_size: int = typer.Option(8, help="Prompts per forward pass (bounds memory)."),
    dtype: str = typer.Option("float32", help="Stored dtype: float32, float16 or bfloat16."),
    bos: bool = typer.Option(BOS_DEFAULT, "--bos/--no-bos", help=BOS_HELP),
    shard_mb: int = typer.Option(256, help="Start a new shard file after about this many MiB per hook."),
    backend: str = typer.Option("auto", help="auto (native when interp implements the family, else "
                                             "transformer_lens), native, transformer_lens or nnsight (same "
                                             "activations)."),
    device: str | None = typer.Option(None, help="torch device, e.g. cuda or cpu (default: the loader's choice)."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds (another cache, other files)."),
    workers: int = typer.Option(1, "--workers", help=help_of(Workers)),
    ray: Optional[str] = typer.Option(None, "--ray", help=help_of(RayAddress)),
    gpus_per_task: float = typer.Option(0.0, "--gpus-per-task", help=help_of(GpusPerTask)),
    cpus_per_task: Optional[float] = typer.Option(None, "--cpus-per-task", help=help_of(CpusPerTask)),
) -> None:
    """Cache activations; the same request again reuses the files after checking every shard against its recorded
    sha256, shapes and dtypes (a damaged cache is recomputed, with a note). A run's checkpoints must share shapes."""
    from interp.cache import cache_run, check_cache_out, check_request, claim_cache_out
    from interp.checkpoints import Run
    from interp.executors import Executor
    from interp.models.auto_backend import auto_backend
    from interp.data.prompts import read_prompts
    from interp.loading import resolve_device, resolve_dtype

    parsed = parse_positions(positions)
    settings = {"path": str(path.expanduser().resolve()), "prompts": str(prompts.expanduser().resolve()),
                "positions": parsed, "dtype": dtype, "bos": bos}
    check_cache_out(out, settings, force)
    executor = Executor(workers, ray, gpus_per_task, cpus_per_task).checked()
    stored = resolve_dtype(dtype)
    device_ = executor.device(device or "auto") if gpus_per_task else resolve_device(device)
    texts = read_prompts(prompts)
    check_request(texts, hooks, batch_size, shard_mb * 2**20, backend, stored)
    run = Run.verified(path)
    if backend == "auto":
        backend = auto_backend(run.checkpoints[0].path)
    claim_cache_out(out, settings, force)
    handles = cache_run(run, texts, hooks, out, executor, positions=parsed, batch_size=batch_size, dtype=stored,
                        bos=bos, shard_bytes=shard_mb * 2**20, backend=backend, device=device_)
    for handle in handles:
        for hook in handle.hooks:
            meta = handle.meta(hook)
            state = "reused" if hook in handle.reused else "rebuilt" if hook in handle.rebuilt else "written"
            note = f" ({handle.rebuilt[hook]}; recomputed)" if hook in handle.rebuilt else ""
            typer.echo(f"{state:<8} {handle.path / hook}  shape {meta['shape']} {meta['dtype']}, "
                       f"{len(meta['shards'])} shard{'s' if len(meta['shards']) != 1 else ''}{note}")


def parse_positions(text: str) -> str | list[int]:
    """`all`, `last`, or `0,5,-1` as a list of ints."""
    if text in ("all", "last"):
        return text
    try:
        return [int(p) for p in text.split(",")]
    except ValueError as err:
        raise InterpError(f"cannot read positions {text!r}", fix="use all, last, or integers like 0,3,-1") from err
