"""The data layer's tokens (`interp.data.tokens`) give exactly the ids and masks of the hand-written encoders and
padding loops they replace (kept below, verbatim, as oracles), on tiny tokenizers: with and without BOS, padded left
and right, with a pad token, with only an EOS token (today's `pad_id_of` fallback), with neither."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
import torch

import interp
from interp.data.tokens import BOS_DEFAULT, encode, encode_padded, pad, pad_id_of
from interp.errors import InterpError
from interp.testing import train_tiny_tokenizer

TEXTS = ["the cat sees the ball.", "a dog.", "the river and the moon and the sun.", "x"]


# --- the hand-written routines the data layer replaces (verbatim but for their names) ------------------------------
def old_probes_encode(tokenizer: Any, text: str, bos: bool = True) -> list[int]:  # probes.activations.encode
    if not bos:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(text)["input_ids"])
    bos_id = getattr(tokenizer, "bos_token_id", None)
    return ids if bos_id is None or ids[:1] == [bos_id] else [bos_id, *ids]


def old_patching_encode(tokenizer: Any, text: str, prepend_bos: bool) -> list[int]:  # patching.tasks._encode
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [tokenizer.bos_token_id, *ids] if prepend_bos and tokenizer.bos_token_id is not None else ids


def old_left_pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:  # probes.activations
    width = max(len(seq) for seq in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        if len(seq):
            tokens[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return tokens, mask


def old_pad_id_of(tokenizer: Any) -> int:  # probes.activations.pad_id_of
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def old_to_tokens(tokenizer: Any, texts: list[str], prepend_bos: bool = False) -> torch.Tensor:  # HookedModel
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if prepend_bos:
        ids = [[tokenizer.bos_token_id, *seq] for seq in ids]
    width = max(len(seq) for seq in ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def old_tuco_left_padded(tokenizer: Any, texts: Sequence[str], prepend_bos: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:  # interp.base_vs_post.tuco.encode_left_padded
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if prepend_bos:
        ids = [[tokenizer.bos_token_id, *seq] for seq in ids]
    width = max(len(seq) for seq in ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        tokens[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return tokens, mask


def old_cache_batch(tokenizer: Any, seqs: list[list[int]]) -> torch.Tensor:  # interp.cache._compute
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=pad_id)


# --- tiny tokenizers -----------------------------------------------------------------------------------------------
def _without(kind: str, *tokens: str) -> Any:
    tok = train_tiny_tokenizer(kind=kind)
    for name in tokens:
        setattr(tok, name, None)
    return tok


TOKENIZERS: dict[str, Callable[[], Any]] = {
    "bpe": lambda: train_tiny_tokenizer(),
    "word": lambda: train_tiny_tokenizer(kind="word"),
    "bpe, no pad (EOS pads)": lambda: _without("bpe", "pad_token"),
    "word, no pad, no EOS (0 pads)": lambda: _without("word", "pad_token", "eos_token"),
}
HAS_PAD = {"bpe", "word"}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def tok(request: pytest.FixtureRequest) -> Any:
    made = TOKENIZERS[request.param]()
    made.test_name = request.param
    return made


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.long and torch.equal(a, b), (a, b)


@pytest.mark.parametrize("bos", [True, False])
def test_encode_matches_the_old_encoders(tok: Any, bos: bool) -> None:
    for text in TEXTS:
        assert encode(tok, text, bos) == old_probes_encode(tok, text, bos) == old_patching_encode(tok, text, bos)


def test_bos_is_on_by_default_and_never_doubled(tok: Any) -> None:
    assert BOS_DEFAULT is True and encode(tok, TEXTS[0]) == encode(tok, TEXTS[0], bos=True)
    written = tok.bos_token + TEXTS[0]  # a chat template that writes BOS itself keeps the one it has
    assert encode(tok, written) == encode(tok, TEXTS[0]) == [tok.bos_token_id, *encode(tok, TEXTS[0], bos=False)]


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_a_tokenizer_without_bos_refuses_bos_and_says_no_bos(kind: str) -> None:
    tok = _without(kind, "bos_token")
    with pytest.raises(InterpError, match="has none") as err:
        encode(tok, TEXTS[0])
    assert "--no-bos" in (err.value.fix or "")
    assert encode(tok, TEXTS[0], bos=False) == old_probes_encode(tok, TEXTS[0], bos=False)
    with pytest.raises(InterpError, match="has none"):
        encode_padded(tok, TEXTS)


@pytest.mark.parametrize("bos", [True, False])
def test_left_padding_matches_left_pad_and_tuco(tok: Any, bos: bool) -> None:
    ids = [encode(tok, t, bos) for t in TEXTS]
    tokens, mask = pad(tok, ids, "left")
    old_tokens, old_mask = old_left_pad(ids, old_pad_id_of(tok))
    _same(tokens, old_tokens), _same(mask, old_mask)
    assert pad_id_of(tok) == old_pad_id_of(tok)
    assert tokens[:, -1].tolist() == [seq[-1] for seq in ids]  # position -1 is every row's last token
    tuco_tokens, tuco_mask = old_tuco_left_padded(tok, TEXTS, bos)
    _same(encode_padded(tok, TEXTS, bos, "left")[1], tuco_mask)
    if tok.test_name in HAS_PAD:  # TuCo padded with the pad token, else 0; now pad, EOS, 0 as everywhere else
        _same(encode_padded(tok, TEXTS, bos, "left")[0], tuco_tokens)
    else:
        assert torch.equal(tokens[mask.bool()], tuco_tokens[tuco_mask.bool()])


@pytest.mark.parametrize("bos", [True, False])
def test_right_padding_matches_to_tokens_and_the_cache(tok: Any, bos: bool) -> None:
    ids = [encode(tok, t, bos) for t in TEXTS]
    tokens, mask = pad(tok, ids, "right")
    assert mask.sum(1).tolist() == [len(s) for s in ids] and mask[:, 0].all()
    assert all(tokens[row, : len(seq)].tolist() == seq for row, seq in enumerate(ids))
    old, cached = old_to_tokens(tok, TEXTS, bos), old_cache_batch(tok, ids)
    if tok.test_name in HAS_PAD:
        _same(tokens, old), _same(tokens, cached)
    else:  # these two padded with 0 when the tokenizer has no pad token; pad_id_of's EOS now (positions after a row)
        assert torch.equal(tokens[mask.bool()], old[mask.bool()]) and torch.equal(cached, old)
        assert (tokens[~mask.bool()] == old_pad_id_of(tok)).all()


def test_padding_keeps_empty_rows_and_leaves_the_tokenizer_alone(tok: Any) -> None:
    before = tok.pad_token_id
    ids = [[5, 6, 7], []]
    tokens, mask = pad(tok, ids, "left")
    old_tokens, old_mask = old_left_pad(ids, old_pad_id_of(tok))
    _same(tokens, old_tokens), _same(mask, old_mask)
    assert tok.pad_token_id == before  # a pad-less tokenizer stays pad-less
    assert pad(tok, [], "right")[0].shape == (0, 0)


def test_to_tokens_is_the_data_layer(tiny_dir: Callable[[str], Path]) -> None:
    model = interp.load(tiny_dir("gpt2"), backend="native", device="cpu")
    tok = model.tokenizer
    _same(model.to_tokens(TEXTS), old_to_tokens(tok, TEXTS, prepend_bos=True))  # BOS on by default now
    _same(model.to_tokens(TEXTS, bos=False), old_to_tokens(tok, TEXTS))
    _same(model.to_tokens(TEXTS[0]), torch.tensor([encode(tok, TEXTS[0])]))


def test_readers_and_writers_moved_into_the_data_layer(tmp_path: Path) -> None:
    from interp.data.jsonl import read_records
    from interp.data.prompts import read_prompts, write_prompts

    prompts = ["one\nline two", "a \u2028 b", "plain"]
    path = write_prompts(tmp_path / "sub" / "p.jsonl", prompts)
    assert read_prompts(path) == prompts and [p.name for p in path.parent.iterdir()] == ["p.jsonl"]  # no temp left
    assert read_records(path, ("prompt",), '{"prompt": "..."}') == [{"prompt": p} for p in prompts]
    assert json.loads(path.read_text().splitlines()[0]) == {"prompt": prompts[0]}
