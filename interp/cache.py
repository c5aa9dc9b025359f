"""Activation caches on disk: the activations of chosen hooks over a prompt set, per checkpoint and hook.

Layout: `out_dir/<hook>/meta.json` plus `shard-00000.safetensors`, ... (tensors `activations` [prompt, ...] and
`lengths` [prompt], the prompt's token count). Prompts run in batches and shards are flushed once they pass
`shard_bytes`, so memory is bounded by the batch and one shard, never by the dataset. Every file is written
atomically; `meta.json` is written last and marks a complete cache, so an interrupted run is simply redone and the
same request again reuses the files without loading the model.

A cache is reused only when it was made for the same request (checkpoint path and content: weights, config and
tokenizer files; hook, positions, dtype, BOS, prompts) and it checks out: `meta.json` records every shard's sha256
and tensor shapes and dtypes, and a reuse or a load verifies them. A damaged cache (a truncated, rewritten or
reshaped shard, rows missing) is recomputed on reuse (`CacheHandle.rebuilt` says why) and is an `InterpError` on load.

Positions: "all" keeps every position (right-padded with zeros to the longest prompt), "last" the last token of
each prompt, a list of ints those positions (negative ones count from each prompt's end). For attention patterns
and scores [batch, head, query, key] the positions select queries; keys are padded to the longest prompt.

`interp cache --out` is checked like a results directory (`check_cache_out`): it must be new or empty, a cache made
with the same settings (reused; more hooks may be added), or `--force` empties it; never a file or a checkpoint, run
or zoo directory. A `cache.json` at its root records the settings.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import safetensors.torch
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import loading
from interp.checkpoints import Run, step_of, weights_sha256
from interp.data.tokens import BOS_DEFAULT, encode, pad
from interp.executors import SEQUENTIAL, Executor
from interp.errors import InterpError
from interp.models.hooked import HookedModel
from interp.options import check_context
from interp.outdir import check_out, settings_hash
from interp.progress import progress
from interp.results import atomic_write_bytes, atomic_write_json

Positions = Literal["all", "last"] | Sequence[int]
META = "meta.json"
MARKER = "cache.json"  # at the root of `interp cache --out`: the settings the directory was made with
FORMAT = 2
_ATTENTION_HOOKS = ("hook_pattern", "hook_attn_scores")
_SHARD_NAME = re.compile(r"shard-\d{5}\.safetensors")
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
_MODEL_TEXT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                     "tokenizer.model", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
                     "chat_template.jinja")
_REBUILD_FIX = "rerun `interp cache` (or `cache_activations`) with the same options: it recomputes a damaged cache"


@dataclass(frozen=True)
class CacheHandle:
    """The cached activations of one checkpoint: one sub-directory per hook, read one shard at a time or whole.

    Every shard read is checked against `meta.json` (sha256, shapes, dtypes); a damaged one is an `InterpError`.
    `rebuilt` maps each hook whose earlier cache was damaged (and so recomputed) to what was wrong with it.
    """

    path: Path
    hooks: tuple[str, ...]
    reused: tuple[str, ...] = ()
    rebuilt: dict[str, str] = field(default_factory=dict)

    def meta(self, hook: str) -> dict[str, Any]:
        """The metadata of one hook's cache (model path, step, positions, dtype, shape, shards, ...)."""
        return _read_meta(self.path / hook)

    def shards(self, hook: str) -> Iterator[Float[Tensor, "prompt ..."]]:
        """One hook's activations, shard by shard, in prompt order (for datasets that do not fit in memory)."""
        for shard in self.meta(hook)["shards"]:
            yield _load_shard(self.path / hook, shard)["activations"]

    def load(self, hook: str) -> Float[Tensor, "prompt ..."]:
        """All of one hook's activations in one tensor."""
        return torch.cat(list(self.shards(hook)))

    def lengths(self) -> Int[Tensor, "prompt"]:
        """Token count of every prompt (positions at or past it are padding under positions="all")."""
        hook_dir = self.path / self.hooks[0]
        return torch.cat([_load_shard(hook_dir, s)["lengths"] for s in _read_meta(hook_dir)["shards"]])


def cache_activations(
    model_or_path: HookedModel | str | Path,
    prompts: Sequence[str],
    hooks: Sequence[str],
    out_dir: str | Path,
    positions: Positions = "all",
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    bos: bool = BOS_DEFAULT,
    shard_bytes: int = 256 * 2**20,
    backend: str = "native",
    device: str | torch.device | None = None,
) -> CacheHandle:
    """Cache the activations of `hooks` over `prompts` for one checkpoint under `out_dir`, reusing a matching cache.

    A path is verified first (`interp.loading.verify_checkpoint`), and loaded (with `backend`, `device`; every
    backend gives the same activations, native is the fastest) only when some hook has no matching, undamaged cache
    yet. `dtype` is the stored dtype (a float type); the model runs in float32. `bos`: every prompt starts with the
    tokenizer's BOS token (`interp.data.tokens`, never doubled), recorded in the metadata.
    """
    prompts, positions, hooks = list(prompts), _check_positions(positions), list(dict.fromkeys(hooks))
    check_request(prompts, hooks, batch_size, shard_bytes, backend, dtype)
    device = loading.resolve_device(device)
    given = model_or_path if isinstance(model_or_path, HookedModel) else None
    path = Path(given.path if given else model_or_path).expanduser().resolve()
    if given is None:
        loading.verify_checkpoint(path)
    out = Path(out_dir)
    content = _model_content(path)
    keys = {hook: _request_key(path, content, hook, positions, dtype, bos, prompts) for hook in hooks}
    todo, rebuilt = [], {}
    for hook in hooks:
        try:
            if _reusable(out / hook, keys[hook]):
                continue
        except InterpError as err:
            rebuilt[hook] = err.message
        todo.append(hook)
    if todo:
        model = given or loading.load(path, backend=backend, device=device)
        _check_hooks(model, todo)
        seqs, index = _tokenise(model, prompts, positions, bos)
        writers = {hook: _ShardWriter(out / hook, keys[hook], shard_bytes) for hook in todo}
        _compute(model, seqs, index, writers, batch_size)
    return CacheHandle(out, tuple(hooks), reused=tuple(h for h in hooks if h not in todo), rebuilt=rebuilt)


def cache_run(path: str | Path | Run, prompts: Sequence[str], hooks: Sequence[str], out_dir: str | Path,
              executor: Executor = SEQUENTIAL, **options: Any) -> list[CacheHandle]:
    """Cache every checkpoint of a run (or a single checkpoint) under `out_dir/<checkpoint label>/`, on `executor`
    (each checkpoint's worker writes its own directory).

    Every checkpoint is verified first (`Run.verified`; pass its `Run` to skip doing it twice) and they must share
    shapes and tokenizer, so their caches are comparable; one model is in memory per worker at a time.
    """
    run = path if isinstance(path, Run) else Run.verified(path)
    calls = [(ckpt.path, list(prompts), list(hooks), Path(out_dir) / ckpt.label) for ckpt in run.checkpoints]
    return executor.results(partial(cache_activations, **options), calls, desc="checkpoints")


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


# --- the output directory of `interp cache` -------------------------------------------------------------------------
def check_cache_out(out: str | Path, settings: dict[str, Any], force: bool = False) -> Path:
    """`out` as a directory `interp cache` may write, checked before any work: new or empty, a cache made with the
    same `settings` (reused; its `cache.json` says so), or `force`; never a file, a checkpoint, run or zoo directory,
    or an analysis's results."""
    return check_out(out, "cache", settings, force)


def claim_cache_out(out: str | Path, settings: dict[str, Any], force: bool = False) -> None:
    """Record the settings `out` is a cache of, once every check has passed; `force` first empties it."""
    out = Path(out).expanduser()
    if force and out.is_dir():
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    atomic_write_json(out / MARKER, {"analysis": "cache", "settings_sha256": settings_hash(settings),
                                     "settings": settings})


# --- the request ---------------------------------------------------------------------------------------------------
def _check_positions(positions: Positions) -> str | list[int]:
    if positions in ("all", "last"):
        return str(positions)
    if isinstance(positions, str) or not all(isinstance(p, int) for p in positions) or not positions:
        raise InterpError(f"positions must be 'all', 'last' or a non-empty list of ints, not {positions!r}",
                          fix="e.g. positions='last' or positions=[0, -1] (--positions last, --positions 0,-1)")
    return list(positions)


def check_request(prompts: list[str], hooks: list[str], batch_size: int, shard_bytes: int, backend: str,
                  dtype: torch.dtype) -> None:
    """Refuse an empty prompt set, hook names that are not names, a batch or shard size below 1, an unknown backend,
    a stored dtype that is not a float type."""
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InterpError("the prompt set is empty or holds empty / non-string prompts",
                          fix="pass a non-empty list of non-empty strings")
    if not hooks:
        raise InterpError("no hooks chosen", fix="name at least one hook, e.g. blocks.0.hook_resid_post")
    for hook in hooks:  # each names a sub-directory of out_dir: never a path that leads out of it
        if not isinstance(hook, str) or hook in ("", ".", "..") or "/" in hook or "\\" in hook:
            raise InterpError(f"{hook!r} is not a hook name", fix="name hooks like blocks.0.hook_resid_post")
    if batch_size < 1:
        raise InterpError(f"batch size must be at least 1, not {batch_size}", fix="e.g. --batch-size 8")
    if shard_bytes < 1:
        raise InterpError(f"the shard size must be at least 1 byte, not {shard_bytes}", fix="e.g. --shard-mb 256")
    if backend not in (*loading.BACKENDS, "auto"):
        raise InterpError(f"unknown backend {backend!r}", fix=f"use one of auto, {', '.join(loading.BACKENDS)}")
    if str(dtype).removeprefix("torch.") not in _SAFETENSORS_DTYPES:
        raise InterpError(f"activations cannot be stored as {dtype}",
                          fix=f"use one of {', '.join(_SAFETENSORS_DTYPES)}")


def _model_content(path: Path) -> dict[str, str]:
    """What the checkpoint's activations depend on besides its path: sha256 of the weights, the config and the
    tokenizer files, so replaced weights or a new tokenizer are recomputed even at the same path."""
    digest = hashlib.sha256()
    for name in _MODEL_TEXT_FILES:
        if (path / name).is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256((path / name).read_bytes()).digest())
    return {"weights_sha256": weights_sha256(path), "config_and_tokenizer_sha256": digest.hexdigest()}


def _request_key(path: Path, content: dict[str, str], hook: str, positions: str | list[int], dtype: torch.dtype,
                 bos: bool, prompts: list[str]) -> dict[str, Any]:
    """What a cache must match to be reused: the checkpoint on disk (path and content), the hook and what was kept."""
    return {
        "format": FORMAT,
        "model_path": str(path),
        "model_content": content,
        "step": step_of(path) if path.is_dir() else None,
        "hook": hook,
        "positions": positions,
        "dtype": str(dtype).removeprefix("torch."),
        "bos": bos,
        "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
    }


def _reusable(hook_dir: Path, key: dict[str, Any]) -> bool:
    """Whether `hook_dir` holds a complete cache made for exactly this request, every shard checked against its
    meta.json; an `InterpError` says what is damaged when the cache there cannot be trusted."""
    if not (hook_dir / META).exists():
        return False
    meta = _read_json(hook_dir)
    if any(meta.get(k) != v for k, v in key.items()):
        return False
    _check_meta(hook_dir, meta)
    for shard in meta["shards"]:
        _read_shard(hook_dir, shard)
    return True


# --- reading and verifying -----------------------------------------------------------------------------------------
def _damaged(hook_dir: Path, what: str) -> InterpError:
    return InterpError(f"the activation cache {hook_dir} is damaged: {what}", fix=_REBUILD_FIX)


def _read_json(hook_dir: Path) -> dict[str, Any]:
    """The raw meta.json of a hook's cache."""
    try:
        meta = json.loads((hook_dir / META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InterpError(f"{hook_dir} holds no readable {META} ({err})", fix=_REBUILD_FIX) from err
    if not isinstance(meta, dict):
        raise _damaged(hook_dir, f"{META} is not a JSON object")
    return meta


def _read_meta(hook_dir: Path) -> dict[str, Any]:
    """A hook's meta.json, checked to describe a complete cache consistently."""
    meta = _read_json(hook_dir)
    _check_meta(hook_dir, meta)
    return meta


def _check_meta(hook_dir: Path, meta: dict[str, Any]) -> None:
    """Refuse a meta.json whose shards do not add up to its shape (rows, item shape, dtype, file names)."""
    if meta.get("format") != FORMAT:
        raise _damaged(hook_dir, f"{META} is not a format-{FORMAT} cache (made by another interp version?)")
    try:
        shards, n_prompts = meta["shards"], meta["n_prompts"]
        rows = sum(s["rows"] for s in shards)
        wrong = [s["file"] for s in shards if not _SHARD_NAME.fullmatch(s["file"])
                 or s["tensors"] != _shard_tensors(meta, s["rows"]) or not isinstance(s["sha256"], str)]
        consistent = rows == n_prompts == meta["shape"][0] and not wrong
    except (KeyError, TypeError, IndexError) as err:
        raise _damaged(hook_dir, f"{META} does not describe its shards ({type(err).__name__}: {err})") from err
    if not consistent:
        what = (f"{META} records shapes for {wrong[0]} that do not fit the cache's shape {meta['shape']}" if wrong
                else f"its shards hold {rows} rows but {META} says {n_prompts} prompts")
        raise _damaged(hook_dir, what)


def _shard_tensors(meta: dict[str, Any], rows: int) -> dict[str, dict[str, Any]]:
    """The safetensors header a shard of `rows` prompts must have: names, dtypes and shapes."""
    return {"activations": {"dtype": _SAFETENSORS_DTYPES[meta["dtype"]],
                            "shape": [rows, *meta["shape"][1:]]},
            "lengths": {"dtype": "I64", "shape": [rows]}}


def _header(data: bytes) -> dict[str, dict[str, Any]] | None:
    """The tensors a safetensors file's bytes declare ({name: {"dtype", "shape"}}), or None if it has no header."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        return {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _read_shard(hook_dir: Path, shard: dict[str, Any]) -> bytes:
    """One shard's bytes, checked against its meta.json entry: sha256, then the tensors its header declares."""
    try:
        data = (hook_dir / shard["file"]).read_bytes()
    except OSError as err:
        raise _damaged(hook_dir, f"{shard['file']} cannot be read ({err.strerror or err})") from err
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        raise _damaged(hook_dir, f"{shard['file']} is not the file {META} records (sha256 differs: truncated or "
                                 "rewritten)")
    if _header(data) != shard["tensors"]:
        raise _damaged(hook_dir, f"{shard['file']} holds other tensors, shapes or dtypes than {META} records")
    return data


def _load_shard(hook_dir: Path, shard: dict[str, Any]) -> dict[str, Tensor]:
    """One verified shard's tensors."""
    data = _read_shard(hook_dir, shard)
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own error types for malformed data
        raise _damaged(hook_dir, f"{shard['file']} cannot be read ({type(err).__name__}: {err})") from err


def _check_hooks(model: HookedModel, hooks: list[str]) -> None:
    try:
        model.resolve_names(hooks)
    except KeyError as err:
        raise InterpError(f"{model.path}: {err.args[0]}", fix="pick hook names from `model.hook_names()`") from err


# --- computing -----------------------------------------------------------------------------------------------------
def _tokenise(model: HookedModel, prompts: list[str], positions: str | list[int], bos: bool
              ) -> tuple[list[list[int]], Int[Tensor, "prompt kept"] | None]:
    """Every prompt's tokens and the kept positions (None: all), refusing prompts longer than the model's context."""
    seqs = [encode(model.tokenizer, p, bos) for p in prompts]
    lengths = torch.tensor([len(s) for s in seqs])
    check_context(seqs, prompts, model.summary.n_ctx)
    index = None if positions == "all" else _position_index([-1] if positions == "last" else positions, lengths)
    return seqs, index


def _compute(model: HookedModel, seqs: list[list[int]], index: Int[Tensor, "prompt kept"] | None,
             writers: dict[str, "_ShardWriter"], batch_size: int) -> None:
    """Run the prompts in batches and stream each hook's kept activations into shards, then write the metadata."""
    lengths = torch.tensor([len(s) for s in seqs])
    width = int(lengths.max())
    for start in progress(range(0, len(seqs), batch_size), desc=f"caching {model.path.name}", unit="batch"):
        rows = slice(start, start + batch_size)
        tokens, _ = pad(model.tokenizer, seqs[rows], "right", model.device)  # causal: padding after a row is unseen
        _, acts = model.run_with_cache(tokens, names=list(writers))
        for hook, writer in writers.items():
            kept = _keep(acts.pop(hook), hook, lengths[rows], None if index is None else index[rows], width)
            writer.add(_finite(kept.to("cpu", getattr(torch, writer.key["dtype"])), hook, start), lengths[rows])
    for writer in writers.values():
        writer.close(n_prompts=len(seqs), width=width)


def _finite(acts: Tensor, hook: str, first_row: int) -> Tensor:
    """`acts` if every value is finite, else an `InterpError` naming the hook and the prompt (never a NaN cache)."""
    bad = (~torch.isfinite(acts)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise InterpError(f"the {hook} activations of prompt {first_row + bad[0]} are NaN or infinite (stored as "
                          f"{str(acts.dtype).removeprefix('torch.')})",
                          fix="store float32 (--dtype float32) if float16 overflows, or check the checkpoint")
    return acts


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
        """Queue one batch; write a shard once the queue passes `shard_bytes`."""
        self.pending.append((acts, lengths))
        self.item_shape = list(acts.shape[1:])
        if sum(a.numel() * a.element_size() for a, _ in self.pending) >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the queued batches as the next shard, recording its sha256 and tensor header for later checks."""
        if not self.pending:
            return
        acts = torch.cat([a for a, _ in self.pending])
        name = f"shard-{len(self.shards):05d}.safetensors"
        data = safetensors.torch.save({"activations": acts.contiguous(),
                                       "lengths": torch.cat([n for _, n in self.pending])})
        atomic_write_bytes(self.dir / name, data)
        self.shards.append({"file": name, "rows": len(acts), "sha256": hashlib.sha256(data).hexdigest(),
                            "tensors": _header(data)})
        self.pending = []

    def close(self, n_prompts: int, width: int) -> None:
        """Write the last shard, remove stale ones, then meta.json (which marks the cache complete)."""
        self.flush()
        names = {s["file"] for s in self.shards}
        for stale in self.dir.glob("shard-*.safetensors"):
            if stale.name not in names:
                stale.unlink()
        meta = {**self.key, "n_prompts": n_prompts, "max_tokens": width, "shape": [n_prompts, *self.item_shape],
                "shards": self.shards}
        atomic_write_json(self.dir / META, meta)
