"""NativeTransformer against its oracle, the Hugging Face model with eager attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from interp.models.convert import load_hf_causal_lm
from interp.models.native import NativeTransformer


@pytest.fixture(scope="module")
def pair(tiny_checkpoints: Path) -> tuple[torch.nn.Module, NativeTransformer]:
    hf = load_hf_causal_lm(tiny_checkpoints)
    return hf, NativeTransformer.from_hf(hf)


def tokens(vocab: int, shape: tuple[int, int] = (3, 19), seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_logits_equal_hugging_face(pair: tuple[torch.nn.Module, NativeTransformer]) -> None:
    hf, nt = pair
    toks = tokens(nt.cfg.d_vocab)
    assert torch.allclose(nt(toks), hf(toks).logits, atol=1e-4, rtol=0)


@torch.no_grad()
def test_prefix_reuse_equals_full_forward(pair: tuple[torch.nn.Module, NativeTransformer]) -> None:
    """Running positions >= p against cached keys/values of positions < p gives the full-forward logits."""
    _, nt = pair
    toks = tokens(nt.cfg.d_vocab)
    full = nt(toks)
    pos = nt.positions(toks)
    _, kvs = nt.run_blocks(nt.embed(toks[:, :7], pos[:, :7]), pos[:, :7])
    rest, _ = nt.run_blocks(nt.embed(toks[:, 7:], pos[:, 7:]), pos[:, 7:], past_kvs=kvs)
    assert torch.allclose(nt.unembed(rest), full[:, 7:], atol=1e-5, rtol=0)


@torch.no_grad()
def test_left_padding_matches_unpadded_rows(pair: tuple[torch.nn.Module, NativeTransformer]) -> None:
    _, nt = pair
    toks = tokens(nt.cfg.d_vocab, (2, 12))
    mask = torch.ones_like(toks)
    mask[0, :5] = 0
    padded = nt(toks, attention_mask=mask)
    alone = nt(toks[:1, 5:])
    assert torch.isfinite(padded).all()
    assert torch.allclose(padded[0, 5:], alone[0], atol=1e-5, rtol=0)
    assert torch.allclose(padded[1], nt(toks[1:])[0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_greedy_generation_matches_hugging_face(pair: tuple[torch.nn.Module, NativeTransformer]) -> None:
    hf, nt = pair
    toks = tokens(nt.cfg.d_vocab, (2, 6))
    ours = nt.generate(toks, max_new_tokens=5)
    ref = hf.generate(toks, max_new_tokens=5, do_sample=False, min_new_tokens=5, pad_token_id=0)[:, 6:]
    assert torch.equal(ours, ref)


@torch.no_grad()
def test_hooks_fire_by_name_and_can_edit(pair: tuple[torch.nn.Module, NativeTransformer]) -> None:
    _, nt = pair
    toks = tokens(nt.cfg.d_vocab, (1, 8))
    seen: dict[str, tuple[int, ...]] = {}
    names = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.1.attn.hook_pattern",
             "blocks.0.attn.hook_k", "blocks.1.hook_mlp_out", "ln_final.hook_normalized"]
    with nt.hooks([(n, lambda act, name: seen.__setitem__(name, tuple(act.shape))) for n in names]):
        clean = nt(toks)
    c = nt.cfg
    assert seen["blocks.1.attn.hook_z"] == (1, 8, c.n_heads, c.d_head)
    assert seen["blocks.0.attn.hook_k"] == (1, 8, c.n_kv_heads, c.d_head)
    assert seen["blocks.1.attn.hook_pattern"] == (1, c.n_heads, 8, 8)
    assert seen["ln_final.hook_normalized"] == (1, 8, c.d_model)
    with nt.hooks([("blocks.1.hook_mlp_out", lambda act, name: torch.zeros_like(act))]):
        ablated = nt(toks)
    assert not torch.allclose(clean, ablated)
    assert torch.allclose(nt(toks), clean)  # hooks are gone after the block
