"""Left-padded batches and residual-stream activations at chosen hooks and token positions.

Positions are negative offsets from the end of each prompt (-1 = last token), which stay valid under left padding
for every row of a batch at once. On a `HookedModel` of a hook backend (no attention mask in its interface) prompts
are batched by length instead, so no row is padded: the same numbers, exactly, in a few more forwards.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.tokens import pad
from interp.models.hooked import HookedModel
from interp.models.native import NativeTransformer
from interp.progress import progress

Runner = NativeTransformer | HookedModel  # what the functions below run: interp's own forward or any backend's


def runner(model: HookedModel) -> Runner:
    """The native forward on the native backend (left-padded batches, as before); the model itself otherwise."""
    return model.native() if model.backend == "native" else model


def residual_layout(model: HookedModel) -> tuple[int, bool]:
    """(layers, whether attention and MLP run in parallel: no resid_mid), from the hooks the model has."""
    return model.summary.n_layers, "blocks.0.hook_resid_mid" not in model.hook_names()


def model_device(nt: NativeTransformer) -> torch.device:
    """The device a native model's weights live on."""
    return nt.W_E.device


def length_batches(ids: Sequence[Sequence[int]], batch_size: int, desc: str | None = None) -> Iterable[list[int]]:
    """Row indices grouped by prompt length, at most `batch_size` a group: batches that need no padding."""
    by_length: dict[int, list[int]] = {}
    for row, seq in enumerate(ids):
        by_length.setdefault(len(seq), []).append(row)
    groups = [rows[i:i + batch_size] for rows in by_length.values() for i in range(0, len(rows), batch_size)]
    return groups if desc is None or len(groups) < 2 else progress(groups, desc=desc, unit="batch", leave=False)


def _rows(model: HookedModel, ids: Sequence[Sequence[int]], rows: list[int]) -> Tensor:
    return torch.tensor([list(ids[row]) for row in rows], dtype=torch.long, device=model.device)


def batches(n: int, batch_size: int, desc: str | None = None) -> Iterable[slice]:
    """Consecutive slices covering range(n), with a progress bar that advances as they are used when `desc` is given
    and there are several."""
    slices = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if desc is None or len(slices) < 2:
        return slices
    return progress(slices, desc=desc, unit="batch", leave=False)


@torch.no_grad()
def collect(
    nt: Runner,
    ids: Sequence[Sequence[int]],
    hook_names: Sequence[str],
    positions: Sequence[int] = (-1,),
    tokenizer: Any = None,
    batch_size: int = 32,
    desc: str | None = None,
) -> Float[Tensor, "hook prompt position d_model"]:
    """Activations of `hook_names` at `positions` (negative offsets from each prompt's end) for every prompt; on the
    native forward `tokenizer` pads the batches (on the left)."""
    if any(p >= 0 for p in positions):
        raise ValueError(f"positions must be negative offsets from the end of the prompt, got {list(positions)}")
    index = torch.tensor(list(positions))
    out: dict[str, list[Tensor]] = {name: [] for name in hook_names}

    def save(act: Tensor, name: str) -> None:
        out[name].append(act[:, index + act.shape[1]].float().cpu())

    if isinstance(nt, HookedModel):
        order: list[int] = []
        for rows in length_batches(ids, batch_size, desc):
            with nt.hooks([(name, save) for name in hook_names]):
                nt(_rows(nt, ids, rows))
            order += rows
        restore = torch.tensor(order).argsort()
        return torch.stack([torch.cat(out[name])[restore] for name in hook_names])
    for part in batches(len(ids), batch_size, desc):
        tokens, mask = pad(tokenizer, ids[part], "left", model_device(nt))
        with nt.hooks([(name, save) for name in hook_names]):
            nt(tokens, attention_mask=mask)
    return torch.stack([torch.cat(out[name]) for name in hook_names])


@torch.no_grad()
def tail_logits(
    nt: Runner,
    ids: Sequence[Sequence[int]],
    n_last: int = 1,
    tokenizer: Any = None,
    batch_size: int = 32,
    desc: str | None = None,
) -> Float[Tensor, "prompt n_last d_vocab"]:
    """Logits at the last `n_last` positions of every prompt (with whatever hooks the caller has attached)."""
    if isinstance(nt, HookedModel):
        found: dict[int, Tensor] = {}
        for group in length_batches(ids, batch_size, desc):
            found.update(zip(group, nt(_rows(nt, ids, group))[:, -n_last:].float().cpu()))
        return torch.stack([found[row] for row in range(len(ids))])
    rows = []
    for part in batches(len(ids), batch_size, desc):
        tokens, mask = pad(tokenizer, ids[part], "left", model_device(nt))
        rows.append(nt(tokens, attention_mask=mask)[:, -n_last:].float().cpu())
    return torch.cat(rows)


@torch.no_grad()
def generate(
    nt: Runner,
    ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    tokenizer: Any = None,
    eos_token_id: int | None = None,
    batch_size: int = 32,
    desc: str | None = None,
) -> list[list[int]]:
    """Greedy continuations (new token ids only, cut at EOS) of every prompt, hooks included."""
    if isinstance(nt, HookedModel):
        return _generate_hooked(nt, ids, max_new_tokens, eos_token_id, batch_size, desc)
    new: list[list[int]] = []
    for part in batches(len(ids), batch_size, desc):
        tokens, mask = pad(tokenizer, ids[part], "left", model_device(nt))
        for row in nt.generate(tokens, max_new_tokens, attention_mask=mask, eos_token_id=eos_token_id).tolist():
            new.append(row[: row.index(eos_token_id)] if eos_token_id in row else row)
    return new


def _generate_hooked(model: HookedModel, ids: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int | None,
                     batch_size: int, desc: str | None) -> list[list[int]]:
    """Greedy continuations by full forwards over equal-length prompts (no cache, no padding), cut at EOS."""
    found: dict[int, list[int]] = {}
    for group in length_batches(ids, batch_size, desc):
        tokens = _rows(model, ids, group)
        for _ in range(max_new_tokens):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
            if eos_token_id is not None and bool((tokens[:, len(ids[group[0]]):] == eos_token_id).any(1).all()):
                break
        for row, seq in zip(group, tokens[:, len(ids[group[0]]):].tolist()):
            found[row] = seq[: seq.index(eos_token_id)] if eos_token_id in seq else seq
    return [found[row] for row in range(len(ids))]
