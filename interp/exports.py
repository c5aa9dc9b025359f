"""Exports in the formats other tools read: paired base/post activation caches and refusal/truth directions.

- `paired_cache_dictionary_learning`: dictionary_learning's `ActivationCache` layout (Marks et al.'s
  `dictionary_learning/cache.py`; crosscoders train on a `PairedActivationCache(out/base, out/post, submodule)`):
  per model `<hook>_out/shard_{i}.memmap` (raw [tokens, d] rows) + `shard_{i}.meta` (`shape`, `dtype`),
  `config.json` (`total_size`, `shard_count`, `d_model`, ...), `mean.pt`/`std.pt`, and beside them `tokens.pt`
  (the token of every row) and `sequence_ranges.pt` (each prompt's first row, then the total).
- `activations_saelens`: SAELens's cached-activations layout (`CacheActivationsRunner`, read by `ActivationsStore`
  through `datasets.load_from_disk`): per model a Hugging Face dataset with one row per prompt, the hook's column an
  `Array2D(context_size, d_in)` and `token_ids` a `Sequence(int32, length=context_size)`.
- `direction_files`: the refusal_direction repository's `direction.pt` (the d_model vector) and
  `direction_metadata.json` (`pos`, `layer`), one pair per model, from a `directions refusal|truth` results directory.

Both caches hold the same prompts at the same positions for both models (the two tokenizers must give identical
ids), padding excluded: dictionary_learning keeps every real token of every prompt; SAELens's rows have one fixed
length, so every prompt is cut to `context_size` tokens (default: the shortest prompt's; the model is causal, so the
kept positions' activations do not depend on the cut). Activations with a head axis (`hook_z`, `hook_q`, ...) are
flattened to `heads * d_head`, as SAELens does; attention patterns and scores (no single position axis) are refused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.tokens import BOS_DEFAULT, encode, pad
from interp.errors import InterpError
from interp.models.hooked import HookedModel
from interp.options import check_context, check_range
from interp.outdir import check_out, replace_dir, scratch_dir
from interp.results import atomic_write_json, read_results

RECORD = "export.json"  # at the root of every export: what it holds and where it came from
ROLES = ("base", "post")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SAELENS_DTYPES = ("float32", "float16")  # what an Arrow `Array2D` column holds
_ATTENTION_HOOKS = ("hook_pattern", "hook_attn_scores")
# results tensors of each direction analysis: (tensor name pattern, summary key of the layer)
_DIRECTIONS = {"refusal": ("direction_{role}", "layer"), "truth": ("theta_{role}", "probe_layer")}


@dataclass(frozen=True)
class PairedTokens:
    """The prompts' token ids, identical under both models' tokenizers, and the site they are read at."""

    seqs: list[list[int]]
    hook: str
    bos: bool


def check_export_out(out: str | Path, force: bool = False) -> Path:
    """`out` as a directory an export may write: new or empty, or `force`; never a file, a checkpoint or a run."""
    out = Path(out).expanduser()
    if (out / RECORD).is_file() and not force:
        raise InterpError(f"--out {out} already holds an interp export",
                          fix="choose another --out directory (or pass --force to replace it)")
    return check_out(out, "export", {}, force)


def check_options(fmt: str, batch_size: int, dtype: str, shard_size: int = 1, context_size: int | None = None
                  ) -> None:
    """Refuse, before loading anything, option values outside their ranges and a dtype `fmt` cannot store."""
    check_range("--batch-size", batch_size, 1)
    check_range("--shard-size", shard_size, 1)
    check_range("--context-size", context_size, 1)
    allowed = SAELENS_DTYPES if fmt == "saelens" else tuple(DTYPES)
    if dtype not in allowed:
        raise InterpError(f"cannot export {fmt} activations as {dtype!r}", fix=f"use one of {', '.join(allowed)}")


def paired_tokens(base: HookedModel, post: HookedModel, prompts: Sequence[str], hook: str, bos: bool = BOS_DEFAULT
                  ) -> PairedTokens:
    """Check a paired export's request before any compute: prompts, the hook on both models (one position axis),
    identical token ids under both tokenizers, every prompt within both contexts."""
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InterpError("the prompt set is empty or holds empty prompts", fix="pass a file of non-empty prompts")
    if hook.endswith(_ATTENTION_HOOKS):
        raise InterpError(f"{hook} has no single position axis (attention [batch, head, query, key])",
                          fix="export a [batch, pos, ...] hook, e.g. blocks.0.hook_resid_post or blocks.0.attn.hook_z")
    for model in (base, post):
        model.resolve_names([hook])
    seqs = [encode(base.tokenizer, p, bos) for p in prompts]
    for number, (text, ids) in enumerate(zip(prompts, seqs), start=1):
        if encode(post.tokenizer, text, bos) != ids:
            raise InterpError(f"prompt {number} ({text[:40]!r}) has other token ids under the post model's tokenizer "
                              "than under the base model's, so positions would not pair",
                              fix="export a base and a post model that share one tokenizer")
    check_context(seqs, list(prompts), min(base.summary.n_ctx, post.summary.n_ctx))
    return PairedTokens(seqs, hook, bos)


def token_activations(model: HookedModel, seqs: list[list[int]], hook: str, batch_size: int
                      ) -> Iterator[Float[Tensor, "token d"]]:
    """`hook`'s activations at every real position of every prompt, prompts in order, one batch at a time (right
    padding, which a causal model never sees from earlier positions, is dropped); trailing axes flattened."""
    for start in range(0, len(seqs), batch_size):
        tokens, mask = pad(model.tokenizer, seqs[start:start + batch_size], "right", model.device)
        _, cache = model.run_with_cache(tokens, names=[hook])
        flat = rearrange(cache[hook], "batch pos ... -> batch pos (...)")
        yield flat[mask.bool()].float().cpu()


def _flat_tokens(seqs: list[list[int]]) -> tuple[Int[Tensor, "token"], Int[Tensor, "prompt_plus_1"]]:
    """Every real token in prompt order, and each prompt's first row followed by the total (dictionary_learning's
    `tokens.pt` and `sequence_ranges.pt`)."""
    lengths = torch.tensor([0, *map(len, seqs)])
    return torch.tensor([t for s in seqs for t in s], dtype=torch.long), torch.cumsum(lengths, 0)


class _MemmapShards:
    """dictionary_learning's shards of one model's hook: `shard_{i}.memmap` of at most `shard_size` rows each, with
    `shard_{i}.meta`; bfloat16 rows are stored as their int16 bits, as dictionary_learning does."""

    def __init__(self, store: Path, total: int, shard_size: int, dtype: torch.dtype) -> None:
        self.store, self.total, self.shard_size, self.dtype = store, total, shard_size, dtype
        self.written, self.maps = 0, []
        self.moments = torch.zeros(2, 1, dtype=torch.float64)  # sum and sum of squares of the stored rows
        store.mkdir(parents=True)

    def add(self, rows: Float[Tensor, "token d"]) -> None:
        """Append rows, opening the next shard whenever one is full."""
        rows = rows.to(self.dtype)
        wide = rows.double()
        moments = torch.stack([wide.sum(0), wide.square().sum(0)])
        self.moments = self.moments + moments
        data = (rows.view(torch.int16) if self.dtype == torch.bfloat16 else rows).numpy()
        while len(data):
            shard, offset = divmod(self.written, self.shard_size)
            if shard == len(self.maps):
                shape = (min(self.shard_size, self.total - self.written), data.shape[1])
                self.maps.append(np.memmap(self.store / f"shard_{shard}.memmap", dtype=data.dtype, mode="w+",
                                           shape=shape))
                atomic_write_json(self.store / f"shard_{shard}.meta",
                                  {"shape": list(shape), "dtype": str(self.dtype).removeprefix("torch.")})
            take = min(len(data), self.maps[shard].shape[0] - offset)
            self.maps[shard][offset:offset + take] = data[:take]
            self.written, data = self.written + take, data[take:]

    def close(self, config: dict[str, Any]) -> None:
        """Flush the shards, write `mean.pt`, `std.pt` (float64 over every stored row, std unbiased) and
        `config.json`."""
        for memmap in self.maps:
            memmap.flush()
        (total, squares), n = self.moments, self.written
        mean = total / n
        torch.save(mean, self.store / "mean.pt")
        torch.save(((squares - n * mean.square()) / max(n - 1, 1)).clamp_min(0).sqrt(), self.store / "std.pt")
        atomic_write_json(self.store / "config.json", {**config, "d_model": len(mean), "total_size": n,
                                                        "shard_count": len(self.maps)})


def paired_cache_dictionary_learning(base: HookedModel, post: HookedModel, prompts: Sequence[str], hook: str,
                                     out: str | Path, bos: bool = BOS_DEFAULT, batch_size: int = 8,
                                     shard_size: int = 10**6, dtype: str = "float32", force: bool = False) -> Path:
    """Write `hook`'s activations of both models over `prompts` as dictionary_learning caches `out/base`, `out/post`
    (`PairedActivationCache(out/"base", out/"post", f"{hook}_out")`): row i of both is the same token of the same
    prompt. Returns `out`."""
    out = check_export_out(out, force)
    check_options("dictionary_learning", batch_size, dtype, shard_size)
    paired = paired_tokens(base, post, prompts, hook, bos)
    tokens, ranges = _flat_tokens(paired.seqs)
    tmp = scratch_dir(out)
    try:
        for role, model in zip(ROLES, (base, post)):
            shards = _MemmapShards(tmp / role / f"{hook}_out", len(tokens), shard_size, DTYPES[dtype])
            for rows in token_activations(model, paired.seqs, hook, batch_size):
                shards.add(rows)
            shards.close({"batch_size": batch_size, "context_len": max(map(len, paired.seqs)),
                          "shard_size": shard_size, "shuffle_shards": False, "io": "out", "store_tokens": True,
                          "store_sequence_ranges": True})
            torch.save(tokens, tmp / role / "tokens.pt")
            torch.save(ranges, tmp / role / "sequence_ranges.pt")
        _record(tmp, "dictionary_learning", base, post, paired, n_rows=len(tokens), dtype=dtype)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
    return out


def activations_saelens(base: HookedModel, post: HookedModel, prompts: Sequence[str], hook: str, out: str | Path,
                        context_size: int | None = None, bos: bool = BOS_DEFAULT, batch_size: int = 8,
                        dtype: str = "float32", force: bool = False) -> Path:
    """Write `hook`'s activations of both models over `prompts` as SAELens cached-activation datasets `out/base`,
    `out/post` (`ActivationsStore(cached_activations_path=...)`, or `datasets.load_from_disk`): one row per prompt,
    its first `context_size` tokens (default: the shortest prompt's length). Returns `out`."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    out = check_export_out(out, force)
    check_options("saelens", batch_size, dtype, context_size=context_size)
    paired = paired_tokens(base, post, prompts, hook, bos)
    shortest = min(map(len, paired.seqs))
    check_range("--context-size", context_size, 1, shortest)
    size = context_size or shortest
    seqs = [s[:size] for s in paired.seqs]
    tmp, bars = scratch_dir(out), is_progress_bar_enabled()
    disable_progress_bar()  # one bar per batch's part would flood the terminal
    try:
        for role, model in zip(ROLES, (base, post)):
            _saelens_dataset(model, seqs, hook, batch_size, dtype, tmp / role, tmp / ".parts" / role)
        shutil.rmtree(tmp / ".parts")
        _record(tmp, "saelens", base, post, paired, n_rows=len(seqs), context_size=size, dtype=dtype)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bars:
            enable_progress_bar()
    replace_dir(tmp, out)
    return out


def _saelens_dataset(model: HookedModel, seqs: list[list[int]], hook: str, batch_size: int, dtype: str,
                     target: Path, parts: Path) -> None:
    """One model's SAELens dataset at `target`: each batch saved as a part under `parts` (memory bounded by a
    batch), then the memory-mapped parts concatenated and saved whole."""
    from datasets import Array2D, Dataset, Features, Sequence as HFSequence, Value, concatenate_datasets

    size, saved = len(seqs[0]), []
    for i, rows in enumerate(token_activations(model, seqs, hook, batch_size)):
        acts = rearrange(rows, "(prompt pos) d -> prompt pos d", pos=size)
        features = Features({hook: Array2D(shape=(size, acts.shape[-1]), dtype=dtype),
                             "token_ids": HFSequence(Value("int32"), length=size)})
        ids = seqs[i * batch_size:i * batch_size + len(acts)]
        Dataset.from_dict({hook: acts.to(DTYPES[dtype]).numpy(), "token_ids": ids},
                          features=features).save_to_disk(str(parts / f"shard_{i:05d}"))
        saved.append(Dataset.load_from_disk(str(parts / f"shard_{i:05d}")))
    concatenate_datasets(saved).save_to_disk(str(target))


def direction_files(results_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write each model's direction of a `directions refusal` or `directions truth` results directory as
    `out/<base|post>/direction.pt` (the unnormalised d_model vector at the chosen layer) and
    `direction_metadata.json` (`pos`, `layer`, as refusal_direction's `run_pipeline.py`; plus `hook` and where it
    came from). Refusal: the difference in means at `blocks.{layer}.hook_resid_pre` (Arditi et al. 2024); truth: the
    mass-mean direction at the probe layer, hook and `pos` (Du et al. 2025; null from results written before the
    truth summary recorded `pos`). Returns `out`."""
    out = check_export_out(out, force)
    results = read_results(results_dir)
    analysis = results.summary.get("analysis")
    if analysis not in _DIRECTIONS:
        raise InterpError(f"{results_dir} holds results of `{analysis}`, not of `directions refusal` or "
                          "`directions truth`", fix="pass the --out directory of `interp directions refusal|truth`")
    pattern, layer_key = _DIRECTIONS[analysis]
    layer = results.summary[layer_key]
    hook = (f"blocks.{layer}.hook_resid_pre" if analysis == "refusal"
            else f"blocks.{layer}.hook_{results.summary['hook']}")
    tmp = scratch_dir(out)
    try:
        for role in ROLES:
            (tmp / role).mkdir()
            torch.save(results.tensors[pattern.format(role=role)][layer].clone(), tmp / role / "direction.pt")
            atomic_write_json(tmp / role / "direction_metadata.json",
                              {"pos": results.summary.get("pos"), "layer": layer, "hook": hook, "model": role,
                               "analysis": analysis, "results": str(Path(results_dir).resolve())})
        atomic_write_json(tmp / RECORD, {"format": "refusal_direction", "analysis": analysis, "layer": layer,
                                         "results": str(Path(results_dir).resolve())})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
    return out


def _record(tmp: Path, fmt: str, base: HookedModel, post: HookedModel, paired: PairedTokens, **extra: Any) -> None:
    """`export.json`: the format, both models, the hook, the BOS choice and the counts."""
    atomic_write_json(tmp / RECORD, {"format": fmt, "base": str(base.path), "post": str(post.path),
                                     "hook": paired.hook, "bos": paired.bos, "n_prompts": len(paired.seqs), **extra})
