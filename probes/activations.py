"""Left-padded batches and residual-stream activations at chosen hooks and token positions.

Positions are negative offsets from the end of each prompt (-1 = last token), which stay valid under left padding
for every row of a batch at once.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from interp.models.native import NativeTransformer
from interp.progress import progress


def model_device(nt: NativeTransformer) -> torch.device:
    """The device a native model's weights live on."""
    return nt.W_E.device


def left_pad(ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
             ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token id lists -> (tokens, attention_mask), padded on the left so position -1 is every row's last token."""
    width = max(len(seq) for seq in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        if len(seq):
            tokens[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return tokens.to(device), mask.to(device)


def pad_id_of(tokenizer: object) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padded positions are masked anyway)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def batches(n: int, batch_size: int, desc: str | None = None) -> Iterable[slice]:
    """Consecutive slices covering range(n), with a progress bar that advances as they are used when `desc` is given
    and there are several."""
    slices = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if desc is None or len(slices) < 2:
        return slices
    return progress(slices, desc=desc, unit="batch", leave=False)


@torch.no_grad()
def collect(
    nt: NativeTransformer,
    ids: Sequence[Sequence[int]],
    hook_names: Sequence[str],
    positions: Sequence[int] = (-1,),
    pad_id: int = 0,
    batch_size: int = 32,
    desc: str | None = None,
) -> Float[Tensor, "hook prompt position d_model"]:
    """Activations of `hook_names` at `positions` (negative offsets from each prompt's end) for every prompt."""
    if any(p >= 0 for p in positions):
        raise ValueError(f"positions must be negative offsets from the end of the prompt, got {list(positions)}")
    index = torch.tensor(list(positions))
    out: dict[str, list[Tensor]] = {name: [] for name in hook_names}

    def save(act: Tensor, name: str) -> None:
        out[name].append(act[:, index + act.shape[1]].float().cpu())

    for part in batches(len(ids), batch_size, desc):
        tokens, mask = left_pad(ids[part], pad_id, model_device(nt))
        with nt.hooks([(name, save) for name in hook_names]):
            nt(tokens, attention_mask=mask)
    return torch.stack([torch.cat(out[name]) for name in hook_names])


@torch.no_grad()
def tail_logits(
    nt: NativeTransformer,
    ids: Sequence[Sequence[int]],
    n_last: int = 1,
    pad_id: int = 0,
    batch_size: int = 32,
    desc: str | None = None,
) -> Float[Tensor, "prompt n_last d_vocab"]:
    """Logits at the last `n_last` positions of every prompt (with whatever hooks the caller has attached)."""
    rows = []
    for part in batches(len(ids), batch_size, desc):
        tokens, mask = left_pad(ids[part], pad_id, model_device(nt))
        rows.append(nt(tokens, attention_mask=mask)[:, -n_last:].float().cpu())
    return torch.cat(rows)


@torch.no_grad()
def generate(
    nt: NativeTransformer,
    ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad_id: int = 0,
    eos_token_id: int | None = None,
    batch_size: int = 32,
    desc: str | None = None,
) -> list[list[int]]:
    """Greedy continuations (new token ids only, cut at EOS) of every prompt, hooks included."""
    new: list[list[int]] = []
    for part in batches(len(ids), batch_size, desc):
        tokens, mask = left_pad(ids[part], pad_id, model_device(nt))
        for row in nt.generate(tokens, max_new_tokens, attention_mask=mask, eos_token_id=eos_token_id).tolist():
            new.append(row[: row.index(eos_token_id)] if eos_token_id in row else row)
    return new


def encode(tokenizer: object, text: str, bos: bool = True) -> list[int]:
    """Token ids of `text`. With `bos`, starting with BOS whenever the tokenizer has one (whether or not it adds it
    itself), as TransformerLens prepends it by default and the zoo's models are trained with it; without, no special
    tokens at all (a chat tokenizer's BOS can be a turn marker such as `<|im_start|>`)."""
    if not bos:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    ids = list(tokenizer(text)["input_ids"])  # type: ignore[operator]
    bos_id = getattr(tokenizer, "bos_token_id", None)
    return ids if bos_id is None or ids[:1] == [bos_id] else [bos_id, *ids]
