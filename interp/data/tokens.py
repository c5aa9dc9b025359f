"""Where text becomes tokens: the one encoder, the BOS policy, and padding with attention masks.

BOS policy (one default everywhere, `BOS_DEFAULT = True`): a prompt starts with the tokenizer's BOS token, as
TransformerLens prepends it by default and the zoo's models are trained with it. `bos=False` (the commands'
`--no-bos`) encodes the text alone, with no special tokens at all (a chat tokenizer's BOS can be a turn marker such
as `<|im_start|>`). BOS is never doubled: text whose own tokens already start with it (a chat template that writes
it) keeps the one it has. Asking for BOS from a tokenizer that has none is an `InterpError` whose fix is `--no-bos`.
Every results directory records the choice (`tokenization={"bos": ..., "padding": ...}`).

Padding goes through the tokenizer's own batch padding (`tokenizer.pad`), on the left (position -1 is every row's
last token: batched forwards, generation) or the right (positions count from 0 in every row). The pad id is the
tokenizer's pad token, else its EOS token, else 0 (`pad_id_of`); padded positions are masked (mask 0) anyway.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal, Sequence

from interp.errors import InterpError

if TYPE_CHECKING:  # torch is imported where tensors are made, so the CLI can read BOS_DEFAULT without it
    import torch
    from jaxtyping import Int
    from torch import Tensor

BOS_DEFAULT = True
BOS_HELP = ("Start every prompt with the tokenizer's BOS token (never doubled; --no-bos for none, e.g. when a chat "
            "tokenizer's BOS is a turn marker such as <|im_start|>).")
Side = Literal["left", "right"]


def check_bos(tokenizer: Any, bos: bool) -> None:
    """Refuse BOS asked of a tokenizer that has no BOS token."""
    if bos and getattr(tokenizer, "bos_token_id", None) is None:
        raise InterpError(f"a BOS token was asked for, but the tokenizer ({type(tokenizer).__name__}) has none",
                          fix="pass --no-bos (bos=False)")


def encode(tokenizer: Any, text: str, bos: bool = BOS_DEFAULT) -> list[int]:
    """Token ids of `text`: the text's own tokens (no special tokens added), after the tokenizer's BOS token when
    `bos` unless they already start with it."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return with_bos(tokenizer, ids) if bos else ids


def with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """`ids` starting with the tokenizer's BOS token (added unless already first; refused if it has none)."""
    check_bos(tokenizer, True)
    return ids if ids[:1] == [tokenizer.bos_token_id] else [tokenizer.bos_token_id, *ids]


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padded positions are masked anyway)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def pad(tokenizer: Any, ids: Sequence[Sequence[int]], side: Side = "left", device: torch.device | str = "cpu"
        ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token id lists -> (tokens, attention_mask) of the longest row's width, padded on `side` with `pad_id_of`'s id
    by the tokenizer's own batch padding (mask 1 on tokens, 0 on padding)."""
    import torch

    rows = [[int(t) for t in seq] for seq in ids]
    if not rows:
        empty = torch.zeros((0, 0), dtype=torch.long, device=device)
        return empty, empty.clone()
    out = _padder(tokenizer).pad({"input_ids": rows}, padding=True, padding_side=side, return_attention_mask=True,
                                 return_tensors="pt")
    width = max((len(seq) for seq in rows), default=0)
    tokens, mask = (out[key].reshape(len(rows), width).long() for key in ("input_ids", "attention_mask"))
    return tokens.to(device), mask.to(device)


def encode_padded(tokenizer: Any, texts: Sequence[str], bos: bool = BOS_DEFAULT, side: Side = "left",
                  device: torch.device | str = "cpu") -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """`encode` every text, then `pad` them into one batch with its mask."""
    return pad(tokenizer, [encode(tokenizer, text, bos) for text in texts], side, device)


def _padder(tokenizer: Any) -> Any:
    """The tokenizer itself when its pad token is the one `pad_id_of` picks; else a copy whose pad token is that id
    (the tokenizer passed in is never changed)."""
    pad_id = pad_id_of(tokenizer)
    if getattr(tokenizer, "pad_token_id", None) == pad_id:
        return tokenizer
    padder = copy.copy(tokenizer)
    for key, value in vars(padder).items():  # own copies of the special-token tables, so the original keeps its own
        if isinstance(value, dict):
            vars(padder)[key] = dict(value)
    padder.pad_token_id = pad_id
    return padder
