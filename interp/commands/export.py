"""`interp export`: paired base/post activation caches for dictionary_learning or SAELens, and refusal/truth
directions in the refusal_direction repository's format (`interp.exports`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interp.cli import app
from interp.data.tokens import BOS_DEFAULT, BOS_HELP
from interp.errors import InterpError

FORMATS = ("dictionary_learning", "saelens", "direction")


@app.command()
def export(
    paths: list[Path] = typer.Argument(..., help="BASE POST checkpoint directories (dictionary_learning, saelens), "
                                                 "or the results directory of `interp directions refusal|truth` "
                                                 "(direction)."),
    fmt: str = typer.Option(..., "--format", help="dictionary_learning (PairedActivationCache memmap shards), "
                                                  "saelens (Hugging Face datasets of cached activations) or direction "
                                                  "(direction.pt + direction_metadata.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write (new or empty; --force replaces it)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p", help='Prompt file for the caches: text, one '
                                                                         'prompt a line, or JSONL of {"prompt": ...}.'),
    hook: Optional[str] = typer.Option(None, "--hook", help="Hook whose activations the caches hold, e.g. "
                                                            "blocks.1.hook_resid_post."),
    context_size: Optional[int] = typer.Option(None, "--context-size", help="saelens: tokens kept per prompt "
                                                                            "(default: the shortest prompt's)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts per forward pass (bounds memory)."),
    shard_size: int = typer.Option(10**6, "--shard-size", help="dictionary_learning: rows (tokens) per shard."),
    dtype: str = typer.Option("float32", help="Stored dtype: float32, float16 (or bfloat16 for dictionary_learning)."),
    bos: bool = typer.Option(BOS_DEFAULT, "--bos/--no-bos", help=BOS_HELP),
    backend: str = typer.Option("auto", help="auto, native, transformer_lens or nnsight (same activations)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Export base/post activations over identical prompts and positions (padding excluded) for crosscoder or SAE
    training, or a directions analysis's refusal or truth directions; every input is checked before loading."""
    from interp import exports

    if fmt not in FORMATS:
        raise InterpError(f"unknown --format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    exports.check_export_out(out, force)
    if fmt == "direction":
        _expect(paths, 1, "RESULTS", fmt)
        written = exports.direction_files(paths[0], out, force)
    else:
        written = _paired(fmt, paths, out, prompts, hook, context_size, batch_size, shard_size, dtype, bos, backend,
                          device, force)
    typer.echo(f"wrote {written}")


def _expect(paths: list[Path], n: int, names: str, fmt: str) -> None:
    if len(paths) != n:
        raise InterpError(f"--format {fmt} takes {names}, not {len(paths)} path{'s' if len(paths) != 1 else ''}",
                          fix=f"e.g. interp export {names} --format {fmt} --out OUT")


def _paired(fmt: str, paths: list[Path], out: Path, prompts: Path | None, hook: str | None,
            context_size: int | None, batch_size: int, shard_size: int, dtype: str, bos: bool, backend: str,
            device: str, force: bool) -> Path:
    """A paired cache export: options, the checkpoint pair and the prompt file checked, then both models loaded."""
    from interp import exports
    from interp.analyses.pairs import check_pair
    from interp.data.prompts import read_prompts
    from interp.loading import BACKENDS, load
    from interp.models.auto_backend import auto_backend

    _expect(paths, 2, "BASE POST", fmt)
    if prompts is None or hook is None:
        raise InterpError(f"--format {fmt} needs --prompts and --hook",
                          fix="e.g. --prompts prompts.txt --hook blocks.1.hook_resid_post")
    if backend not in (*BACKENDS, "auto"):
        raise InterpError(f"unknown backend {backend!r}", fix=f"use one of auto, {', '.join(BACKENDS)}")
    exports.check_options(fmt, batch_size, dtype, shard_size, context_size)
    base, post = paths
    check_pair(base, post, device)
    texts = read_prompts(prompts)
    backend = auto_backend(base) if backend == "auto" else backend
    models = [load(path, backend=backend, device=device) for path in (base, post)]
    if fmt == "saelens":
        return exports.activations_saelens(*models, texts, hook, out, context_size=context_size, bos=bos,
                                           batch_size=batch_size, dtype=dtype, force=force)
    return exports.paired_cache_dictionary_learning(*models, texts, hook, out, bos=bos, batch_size=batch_size,
                                                    shard_size=shard_size, dtype=dtype, force=force)
