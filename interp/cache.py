"""Activation caches on disk: the activations of chosen hooks over a prompt set, per checkpoint and hook.

Layout: `out_dir/<hook>/meta.json` plus `shard-00000.safetensors`, ... (tensors `activations` [prompt, ...] and
`lengths` [prompt], the prompt's token count). Prompts run in batches and shards are flushed once they pass
`shard_bytes`, so memory is bounded by the batch and one shard, never by the dataset. Every file is written
atomically; `meta.json` is written last and marks a complete cache, so an interrupted run is simply redone and the
same request again reuses the files without loading the model.

Positions: "all" keeps every position (right-padded with zeros to the longest prompt), "last" the last token of
each prompt, a list of ints those positions (negative ones count from each prompt's end). For attention patterns
and scores [batch, head, query, key] the positions select queries; keys are padded to the longest prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm

from interp import loading
from interp.checkpoints import Run, step_of
from interp.errors import InterpError
from interp.models.hooked import HookedModel
from interp.results import atomic_save_tensors, atomic_write_json

Positions = Literal["all", "last"] | Sequence[int]
META = "meta.json"
FORMAT = 1
_ATTENTION_HOOKS = ("hook_pattern", "hook_attn_scores")
_KEY_FIELDS = ("format", "model_path", "model_fingerprint", "step", "hook", "positions", "dtype", "prepend_bos",
               "prompts_sha256")


@dataclass(frozen=True)
class CacheHandle:
    """The cached activations of one checkpoint: one sub-directory per hook, read one shard at a time or whole."""

    path: Path
    hooks: tuple[str, ...]
    reused: tuple[str, ...] = ()

    def meta(self, hook: str) -> dict[str, Any]:
        """The metadata of one hook's cache (model path, step, positions, dtype, shape, shards, ...)."""
        return _read_meta(self.path / hook)

    def shards(self, hook: str) -> Iterator[Float[Tensor, "prompt ..."]]:
        """One hook's activations, shard by shard, in prompt order (for datasets that do not fit in memory)."""
        for shard in self.meta(hook)["shards"]:
            yield _read_tensor(self.path / hook / shard["file"], "activations")

    def load(self, hook: str) -> Float[Tensor, "prompt ..."]:
        """All of one hook's activations in one tensor."""
        return torch.cat(list(self.shards(hook)))

    def lengths(self) -> Int[Tensor, "prompt"]:
        """Token count of every prompt (positions at or past it are padding under positions="all")."""
        hook = self.hooks[0]
        return torch.cat([_read_tensor(self.path / hook / s["file"], "lengths") for s in self.meta(hook)["shards"]])


def cache_activations(
    model_or_path: HookedModel | str | Path,
    prompts: Sequence[str],
    hooks: Sequence[str],
    out_dir: str | Path,
    positions: Positions = "all",
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    prepend_bos: bool = False,
    shard_bytes: int = 256 * 2**20,
    backend: str = "native",
    device: str | torch.device | None = None,
) -> CacheHandle:
    """Cache the activations of `hooks` over `prompts` for one checkpoint under `out_dir`, reusing a matching cache.

    A path is loaded (with `backend`, `device`; every backend gives the same activations, native is the fastest)
    only when some hook has no matching cache yet. `dtype` is the stored dtype; the model runs in float32.
    """
    prompts, positions, hooks = list(prompts), _check_positions(positions), list(dict.fromkeys(hooks))
    _check_request(prompts, hooks, batch_size)
    given = model_or_path if isinstance(model_or_path, HookedModel) else None
    path = Path(given.path if given else model_or_path).expanduser().resolve()
    out = Path(out_dir)
    keys = {hook: _request_key(path, hook, positions, dtype, prepend_bos, prompts) for hook in hooks}
    todo = [hook for hook in hooks if not _matches(out / hook, keys[hook])]
    if todo:
        model = given or loading.load(path, backend=backend, device=device)
        _check_hooks(model, todo)
        writers = {hook: _ShardWriter(out / hook, keys[hook], shard_bytes) for hook in todo}
        _compute(model, prompts, writers, positions, prepend_bos, batch_size)
    return CacheHandle(out, tuple(hooks), reused=tuple(h for h in hooks if h not in todo))


def cache_run(path: str | Path, prompts: Sequence[str], hooks: Sequence[str], out_dir: str | Path,
              **options: Any) -> list[CacheHandle]:
    """Cache every checkpoint of a run (or a single checkpoint) under `out_dir/<checkpoint label>/`.

    Checkpoints must share shapes and tokenizer, so their caches are comparable; one model is in memory at a time.
    """
    run = Run.open(path)
    run.check_compatible()
    return [cache_activations(ckpt.path, prompts, hooks, Path(out_dir) / ckpt.label, **options)
            for ckpt in tqdm(run.checkpoints, desc="checkpoints", disable=len(run.checkpoints) == 1)]


def load_activations(cache_dir: str | Path, hook: str) -> Float[Tensor, "prompt ..."]:
    """The activations of `hook` stored under `cache_dir` (a directory `cache_activations` wrote)."""
    return open_cache(cache_dir).load(hook)


def open_cache(cache_dir: str | Path) -> CacheHandle:
    """A handle on an existing cache directory (every complete hook cache under it)."""
    root = Path(cache_dir)
    hooks = tuple(sorted(p.parent.name for p in root.glob(f"*/{META}")))
    if not hooks:
        raise InterpError(f"{root} holds no activation cache (no */{META})",
                          fix="pass the --out directory of `interp cache` (one checkpoint's sub-directory for a run)")
    return CacheHandle(root, hooks)


# --- the request ---------------------------------------------------------------------------------------------------
def _check_positions(positions: Positions) -> str | list[int]:
    if positions in ("all", "last"):
        return str(positions)
    if isinstance(positions, str) or not all(isinstance(p, int) for p in positions) or not positions:
        raise InterpError(f"positions must be 'all', 'last' or a non-empty list of ints, not {positions!r}",
                          fix="e.g. positions='last' or positions=[0, -1] (--positions last, --positions 0,-1)")
    return list(positions)


def _check_request(prompts: list[str], hooks: list[str], batch_size: int) -> None:
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InterpError("the prompt set is empty or holds empty / non-string prompts",
                          fix="pass a non-empty list of non-empty strings")
    if not hooks:
        raise InterpError("no hooks chosen", fix="name at least one hook, e.g. blocks.0.hook_resid_post")
    if batch_size < 1:
        raise InterpError(f"batch size must be at least 1, not {batch_size}", fix="e.g. --batch-size 8")


def _request_key(path: Path, hook: str, positions: str | list[int], dtype: torch.dtype, prepend_bos: bool,
                 prompts: list[str]) -> dict[str, Any]:
    """What a cache must match to be reused: the checkpoint on disk, the hook and what was kept of it."""
    return {
        "format": FORMAT,
        "model_path": str(path),
        "model_fingerprint": _fingerprint(path),
        "step": step_of(path) if path.is_dir() else None,
        "hook": hook,
        "positions": positions,
        "dtype": str(dtype).removeprefix("torch."),
        "prepend_bos": prepend_bos,
        "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
    }


def _fingerprint(path: Path) -> list[list[Any]]:
    """Size and modification time of the checkpoint's config and weights: a retrained checkpoint is not reused."""
    files = sorted([*path.glob("*.safetensors"), *path.glob("*.bin"), path / "config.json"])
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _matches(hook_dir: Path, key: dict[str, Any]) -> bool:
    """Whether `hook_dir` holds a complete cache made for exactly this request."""
    try:
        meta = _read_meta(hook_dir)
    except InterpError:
        return False
    return (all(meta.get(k) == v for k, v in key.items())
            and all((hook_dir / s["file"]).is_file() for s in meta["shards"]))


def _read_meta(hook_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((hook_dir / META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InterpError(f"{hook_dir} holds no readable {META} ({err})",
                          fix="re-run `interp cache` to rebuild this cache") from err


def _read_tensor(file: Path, name: str) -> Tensor:
    with safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(name)


def _check_hooks(model: HookedModel, hooks: list[str]) -> None:
    try:
        model.resolve_names(hooks)
    except KeyError as err:
        raise InterpError(f"{model.path}: {err.args[0]}", fix="pick hook names from `model.hook_names()`") from err


# --- computing -----------------------------------------------------------------------------------------------------
def _compute(model: HookedModel, prompts: list[str], writers: dict[str, "_ShardWriter"],
             positions: str | list[int], prepend_bos: bool, batch_size: int) -> None:
    """Run the prompts in batches and stream each hook's kept activations into shards, then write the metadata."""
    seqs = [model.to_tokens(p, prepend_bos=prepend_bos)[0].cpu() for p in prompts]
    lengths = torch.tensor([len(s) for s in seqs])
    index = None if positions == "all" else _position_index([-1] if positions == "last" else positions, lengths)
    width = int(lengths.max())
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"caching {model.path.name}", leave=False):
        rows = slice(start, start + batch_size)
        tokens = torch.nn.utils.rnn.pad_sequence(seqs[rows], batch_first=True, padding_value=pad).to(model.device)
        _, acts = model.run_with_cache(tokens, names=list(writers))
        for hook, writer in writers.items():
            kept = _keep(acts.pop(hook), hook, lengths[rows], None if index is None else index[rows], width)
            writer.add(kept.to("cpu", getattr(torch, writer.key["dtype"])), lengths[rows])
    for writer in writers.values():
        writer.close(n_prompts=len(prompts), width=width)


def _position_index(positions: list[int], lengths: Int[Tensor, "prompt"]) -> Int[Tensor, "prompt kept"]:
    """Absolute position of every kept position of every prompt; refuses positions past a prompt's end."""
    wanted = torch.tensor(positions)
    index = torch.where(wanted < 0, lengths[:, None] + wanted, wanted.expand(len(lengths), -1))
    bad = ((index < 0) | (index >= lengths[:, None])).any(dim=1).nonzero()
    if len(bad):
        row = int(bad[0])
        raise InterpError(f"positions {positions} do not fit prompt {row}, which has {int(lengths[row])} tokens",
                          fix="use positions within every prompt (negative ones count from the end) or 'last'")
    return index


def _keep(act: Tensor, hook: str, lengths: Int[Tensor, "batch"], index: Int[Tensor, "batch kept"] | None,
          width: int) -> Tensor:
    """The kept positions of one batch's activation, padded to the dataset's longest prompt."""
    attention = hook.endswith(_ATTENTION_HOOKS)
    if attention:
        act = _pad(act, -1, width)
    pos_dim = 2 if attention else 1
    by_pos = act.movedim(pos_dim, 1)
    if index is None:
        by_pos = _pad(by_pos, 1, width)
        real = (torch.arange(width) < lengths[:, None]).to(act.device)
        by_pos = torch.where(real.view(*real.shape, *[1] * (by_pos.ndim - 2)), by_pos, 0)
    else:
        by_pos = by_pos[torch.arange(len(index))[:, None], index.to(act.device)]
    return by_pos.movedim(1, pos_dim)


def _pad(x: Tensor, dim: int, width: int) -> Tensor:
    """Zero-pad `x` along `dim` up to `width`."""
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


class _ShardWriter:
    """Collects one hook's batches and writes them as safetensors shards of about `shard_bytes`, then meta.json."""

    def __init__(self, hook_dir: Path, key: dict[str, Any], shard_bytes: int) -> None:
        self.dir, self.key, self.shard_bytes = hook_dir, key, shard_bytes
        self.pending: list[tuple[Tensor, Tensor]] = []
        self.shards: list[dict[str, Any]] = []
        self.item_shape: list[int] = []
        hook_dir.mkdir(parents=True, exist_ok=True)
        (hook_dir / META).unlink(missing_ok=True)  # the old cache is no longer complete

    def add(self, acts: Tensor, lengths: Tensor) -> None:
        self.pending.append((acts, lengths))
        self.item_shape = list(acts.shape[1:])
        if sum(a.numel() * a.element_size() for a, _ in self.pending) >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        acts = torch.cat([a for a, _ in self.pending])
        name = f"shard-{len(self.shards):05d}.safetensors"
        atomic_save_tensors(self.dir / name, {"activations": acts, "lengths": torch.cat([n for _, n in self.pending])})
        self.shards.append({"file": name, "rows": len(acts)})
        self.pending = []

    def close(self, n_prompts: int, width: int) -> None:
        self.flush()
        names = {s["file"] for s in self.shards}
        for stale in self.dir.glob("shard-*.safetensors"):
            if stale.name not in names:
                stale.unlink()
        meta = {**self.key, "n_prompts": n_prompts, "max_tokens": width, "shape": [n_prompts, *self.item_shape],
                "shards": self.shards}
        atomic_write_json(self.dir / META, meta)
