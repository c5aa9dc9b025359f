"""Every native family (`interp.models.arch`) against its oracles: Hugging Face's logits in float32 and bfloat16 on
prompts longer than the family's sliding window, `transformer_lens.patching` on the bridge for the patching engine,
and the hook names the model really fires (a misspelt name is refused with a suggestion)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
import torch
import transformer_lens.patching as tlp
from transformer_lens.model_bridge import TransformerBridge

from interp.errors import InterpError
from interp.models.arch import FAMILIES, specs
from interp.models.convert import load_hf_causal_lm
from interp.models.native import NativeTransformer
from patching import Patcher, metrics

LONG = 13  # tokens per prompt: longer than every tiny family's sliding window (4)


def tokens(vocab: int, shape: tuple[int, int] = (2, LONG), seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def native(tiny_dir: Callable[[str], Path]) -> Callable[[str, torch.dtype], tuple[torch.nn.Module, NativeTransformer]]:
    """`native(family, dtype)`: the Hugging Face model (eager attention) and its native conversion."""
    loaded: dict[tuple[str, torch.dtype], tuple[torch.nn.Module, NativeTransformer]] = {}

    def get(family: str, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, NativeTransformer]:
        if (family, dtype) not in loaded:
            hf = load_hf_causal_lm(tiny_dir(family), dtype=dtype)
            loaded[family, dtype] = hf, NativeTransformer.from_hf(hf)
        return loaded[family, dtype]

    return get


def test_every_family_has_a_tiny_config_and_covers_its_model_types() -> None:
    """The registry is the one list: model_types are unique and each family's tiny config builds."""
    types = [t for spec in specs().values() for t in spec.model_types]
    assert len(types) == len(set(types))
    assert set(FAMILIES) == set(specs())
    assert {"olmo", "olmo2", "olmo3", "gemma2", "gemma3_text", "qwen3", "mistral", "phi3"} <= set(types)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_logits_equal_hugging_face_beyond_the_sliding_window(family: str, native) -> None:
    hf, nt = native(family)
    toks = tokens(nt.cfg.d_vocab)
    mask = torch.ones_like(toks)
    mask[1, :3] = 0  # left padding on the second row
    torch.testing.assert_close(nt(toks), hf(toks).logits, atol=1e-4, rtol=0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token
    torch.testing.assert_close(nt(toks, attention_mask=mask)[mask.bool()],
                               hf(toks, attention_mask=mask, position_ids=positions).logits[mask.bool()],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f in ("mistral", "qwen3", "gemma2", "gemma3", "olmo3", "phi3")])
@torch.no_grad()
def test_the_sliding_window_is_in_force(family: str, native) -> None:
    """Without its window the model gives other logits on these prompts, so the logit test above exercises it."""
    _, nt = native(family)
    assert any(w is not None for w in nt.cfg.windows)
    unwindowed = NativeTransformer(replace(nt.cfg, windows=()), rotary=nt.rotary)
    unwindowed.load_state_dict(nt.state_dict())
    toks = tokens(nt.cfg.d_vocab)
    assert (unwindowed(toks) - nt(toks)).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["gemma3", "olmo3"])
@torch.no_grad()
def test_local_and_global_layers_use_their_own_rotary_tables(family: str, native) -> None:
    _, nt = native(family)
    assert set(nt.cfg.rope_types) == {"sliding_attention", "full_attention"}
    positions = torch.arange(LONG)[None]
    tables = nt.rope(nt.W_E[:1][None], positions)
    assert not torch.allclose(tables["sliding_attention"][0], tables["full_attention"][0])


# bfloat16 keeps 8 significant bits (relative step 2**-8); a bias added after the matmul rather than inside it, or a
# norm's mean taken in another order, moves a logit by a few steps of its largest operands. Gemma-family norms
# multiply (1 + w) in float32 exactly as Hugging Face does (the old native fold of 1 + w into a bfloat16 weight
# rounded it), and those families match bit for bit.
BF16_STEPS = 32


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_bfloat16_logits_within_the_stated_tolerance(family: str, native) -> None:
    hf, nt = native(family, torch.bfloat16)
    toks = tokens(nt.cfg.d_vocab)
    ref, got = hf(toks).logits.float(), nt(toks).float()
    scale = ref.abs().max()
    assert got.dtype == torch.float32 and nt.W_E.dtype == torch.bfloat16
    assert (got - ref).abs().max() <= BF16_STEPS * 2**-8 * scale
    if family.startswith("gemma"):
        assert torch.equal(got, ref)


# --- hook names -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_hook_names_are_what_the_model_fires(family: str, native) -> None:
    """The name table is recorded from a forward, and a hook on each name is called exactly once per forward."""
    _, nt = native(family)
    names = nt.hook_names()
    seen: list[str] = []
    with nt.hooks([(n, lambda act, name: seen.append(name)) for n in names]), torch.no_grad():
        nt(tokens(nt.cfg.d_vocab, (1, 5)))
    assert seen == names
    expect_mid = not nt.cfg.parallel_attn_mlp
    assert ("blocks.0.hook_resid_mid" in names) == expect_mid
    assert ("blocks.0.ln1_post.hook_normalized" in names) == nt.cfg.post_norms
    assert ("blocks.0.ln1.hook_normalized" in names) == nt.cfg.pre_norms


def test_a_misspelt_hook_is_refused_with_the_closest_name(native) -> None:
    _, nt = native("llama")
    with pytest.raises(InterpError) as err:
        with nt.hooks([("blocks.0.hook_resid_prex", lambda act, name: None)]):
            pass
    assert "blocks.0.hook_resid_prex" in str(err.value) and "'blocks.0.hook_resid_pre'" in err.value.fix
    assert nt.list_hooks() == {}


def test_list_hooks_shows_what_is_attached(native) -> None:
    _, nt = native("llama")
    with nt.hooks([("blocks.1.hook_resid_post", lambda a, n: None), ("blocks.1.hook_resid_post", lambda a, n: None),
                   ("hook_embed", lambda a, n: None)]):
        assert nt.list_hooks() == {"blocks.1.hook_resid_post": 2, "hook_embed": 1}
    assert nt.list_hooks() == {}


# --- the patching engine against transformer_lens.patching -------------------------------------------------------
TL_SITES = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "z": tlp.get_act_patch_attn_head_out_all_pos,
    "v": tlp.get_act_patch_attn_head_v_all_pos,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_engine_matches_transformer_lens(family: str, tiny_dir: Callable[[str], Path]) -> None:
    """The engine (the model's own blocks resumed at the patched hook, prefix keys/values reused) equals
    `transformer_lens.patching` on the bridge, on prompts longer than the sliding window."""
    path = tiny_dir(family)
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    nt = NativeTransformer.from_pretrained(path)
    clean = tokens(nt.cfg.d_vocab, (2, 7), seed=1)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 7) % 300 + 3
    metric = metrics.LogitDiff(torch.tensor([10, 20]), torch.tensor([30, 40]))
    _, clean_cache = bridge.run_with_cache(clean)
    patcher = Patcher(nt, clean, corrupted, metric, list(TL_SITES))
    for site, sweep in TL_SITES.items():
        expected = sweep(bridge, corrupted, clean_cache, metric)
        torch.testing.assert_close(patcher.sweep(site).raw, expected.float(), atol=1e-4, rtol=0, msg=site)
