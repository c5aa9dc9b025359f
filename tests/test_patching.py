"""The patching engine against `transformer_lens.patching` run on a TransformerBridge of the same checkpoint."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import transformer_lens.patching as tlp
from transformer_lens.model_bridge import TransformerBridge

from interp.models.native import NativeTransformer
from patching import Patcher, activation_patch, metrics
from patching.variants import build_variants, readout

TOL = 1e-4

# our site -> (TransformerLens sweep, whether TL's axes are [layer, pos, head] and need moving to [layer, head, pos])
TL_SWEEPS = {
    "resid_pre": (tlp.get_act_patch_resid_pre, False),
    "resid_post": (partial(tlp.generic_activation_patch, patch_setter=tlp.layer_pos_patch_setter,
                           activation_name="resid_post", index_axis_names=("layer", "pos")), False),
    "attn_out": (tlp.get_act_patch_attn_out, False),
    "mlp_out": (tlp.get_act_patch_mlp_out, False),
    "z": (tlp.get_act_patch_attn_head_out_all_pos, False),
    "z_by_pos": (tlp.get_act_patch_attn_head_out_by_pos, True),
    "q": (tlp.get_act_patch_attn_head_q_all_pos, False),
    "k": (tlp.get_act_patch_attn_head_k_all_pos, False),
    "v": (tlp.get_act_patch_attn_head_v_all_pos, False),
    "q_by_pos": (tlp.get_act_patch_attn_head_q_by_pos, True),
    "k_by_pos": (tlp.get_act_patch_attn_head_k_by_pos, True),
    "v_by_pos": (tlp.get_act_patch_attn_head_v_by_pos, True),
    "pattern": (tlp.get_act_patch_attn_head_pattern_all_pos, False),
    "pattern_by_pos": (tlp.get_act_patch_attn_head_pattern_by_pos, False),
}


def bridge(path: Path) -> TransformerBridge:
    return TransformerBridge.boot_transformers(str(path), device="cpu")


def prompts(seed: int = 0, batch: int = 2, n_pos: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean prompts, and corrupted ones differing at position 1 (both prompts) and 2 (second prompt only)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, 300, (batch, n_pos), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(3, 300, (batch,), generator=g)
    corrupted[-1, 2] = (clean[-1, 2] + 1) % 300 + 3
    return clean, corrupted


@pytest.fixture(scope="module")
def gpt2_two_heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with 2 heads: TransformerLens runs one slow bridge forward per cell, so keep grids small."""
    from interp.testing import tiny_checkpoint

    return tiny_checkpoint("gpt2", tmp_path_factory.mktemp("gpt2") / "two_heads", n_head=2)


def logit_diff(batch: int = 2) -> metrics.LogitDiff:
    return metrics.LogitDiff(torch.tensor([10, 20, 11, 21][:batch]), torch.tensor([30, 40, 31, 41][:batch]))


def tl_sweep(site: str, model: TransformerBridge, base_tokens: torch.Tensor, donor_cache: dict,
             metric: Callable) -> torch.Tensor:
    """TransformerLens's answer for one of our sites, in our axis order."""
    fn, move_head = TL_SWEEPS[site]
    out = fn(model, base_tokens, donor_cache, metric)
    return out.permute(0, 2, 1) if move_head else out


def tl_resid_mid(model: TransformerBridge, base_tokens: torch.Tensor, donor_cache: dict, metric: Callable,
                 n_layers: int) -> torch.Tensor:
    """resid_mid through TL's generic patcher: the bridge's `hook_resid_mid` alias only feeds ln2 (the HF residual add
    bypasses it), so patch attn_out with donor_mid - base_resid_pre instead, which sets resid_mid exactly."""
    _, base_cache = model.run_with_cache(base_tokens)
    shifted = {f"blocks.{l}.hook_attn_out": donor_cache[f"blocks.{l}.hook_resid_mid"]
               - base_cache[f"blocks.{l}.hook_resid_pre"] for l in range(n_layers)}
    return tlp.generic_activation_patch(model, base_tokens, shifted, metric, patch_setter=tlp.layer_pos_patch_setter,
                                        activation_name="attn_out", index_axis_names=("layer", "pos"))


GQA_SITES = ("q_by_pos", "k", "v", "k_by_pos", "v_by_pos", "pattern", "z")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_site_matches_transformer_lens(arch: str, tiny_dir: Callable[[str], Path], gpt2_two_heads: Path) -> None:
    """GPT-2 (learned positions, biases): every site; Llama (rotary, grouped key/value heads): the head sites."""
    path = gpt2_two_heads if arch == "gpt2" else tiny_dir(arch)
    tl, nt = bridge(path), NativeTransformer.from_pretrained(path)
    clean, corrupted = prompts()
    metric = logit_diff()
    _, clean_cache = tl.run_with_cache(clean)
    sites = [*TL_SWEEPS, "resid_mid"] if arch == "gpt2" else list(GQA_SITES)
    patcher = Patcher(nt, clean, corrupted, metric, sites)
    for site in sites:
        ours = patcher.sweep(site)
        expected = (tl_resid_mid(tl, corrupted, clean_cache, metric, nt.cfg.n_layers) if site == "resid_mid"
                    else tl_sweep(site, tl, corrupted, clean_cache, metric))
        assert ours.raw.shape == expected.shape, site
        torch.testing.assert_close(ours.raw, expected.float(), atol=TOL, rtol=0, msg=site)
        assert ours.n_run > 0, site


def test_noising_probability_and_kl_on_parallel_architecture(tiny_dir: Callable[[str], Path]) -> None:
    """GPT-NeoX (parallel attention and MLP, partial rotary), noising, answer probability and KL from the clean run."""
    path = tiny_dir("gpt_neox")
    tl, nt = bridge(path), NativeTransformer.from_pretrained(path)
    clean, corrupted = prompts(seed=1)
    _, corrupted_cache = tl.run_with_cache(corrupted)
    clean_logits = tl(clean).detach()
    kl = metrics.KLDivergence(reference=clean_logits[:, -1])
    prob = metrics.AnswerProb(torch.tensor([10, 20]))
    for metric, sites in ((prob, ("attn_out", "mlp_out", "v_by_pos")), (kl, ("resid_pre", "z"))):
        for site in sites:
            ours = activation_patch(nt, clean, corrupted, site=site, metric=metrics.KLDivergence()
                                    if metric is kl else metric, noising=True)
            expected = tl_sweep(site, tl, clean, corrupted_cache, metric)
            torch.testing.assert_close(ours.raw, expected.float(), atol=TOL, rtol=0, msg=f"{site} {metric.name}")
        assert ours.clean_metric == pytest.approx(float(metric(clean_logits)), abs=TOL)


def test_cross_model_matches_transformer_lens(tiny_dir: Callable[[str], Path], tmp_path: Path) -> None:
    """Activations of one checkpoint patched into another (CMAP): TL patches bridge A with bridge B's cache."""
    from interp.testing import tiny_checkpoint

    path_a, path_b = tiny_dir("llama"), tiny_checkpoint("llama", tmp_path / "other", seed=1)
    tl_a, tl_b = bridge(path_a), bridge(path_b)
    nt_a, nt_b = NativeTransformer.from_pretrained(path_a), NativeTransformer.from_pretrained(path_b)
    clean, corrupted = prompts(seed=2)
    metric = logit_diff()
    b_logits, b_cache = tl_b.run_with_cache(clean)
    b_logits = b_logits.detach()
    for site in ("resid_pre", "mlp_out", "z_by_pos", "k"):
        ours = activation_patch(nt_a, clean, corrupted, site=site, metric=metric, source=nt_b)
        torch.testing.assert_close(ours.raw, tl_sweep(site, tl_a, corrupted, b_cache, metric).float(), atol=TOL,
                                   rtol=0, msg=site)
    assert ours.clean_metric == pytest.approx(float(metric(b_logits)), abs=TOL)
    assert ours.corrupted_metric == pytest.approx(float(metric(tl_a(corrupted).detach())), abs=TOL)
    expected = (ours.raw - ours.corrupted_metric) / (ours.clean_metric - ours.corrupted_metric)
    torch.testing.assert_close(ours.normalised, expected)


def test_identical_activations_are_skipped_exactly(tiny_dir: Callable[[str], Path]) -> None:
    """Positions before the first differing token are not run and report the corrupted metric bit for bit."""
    nt = NativeTransformer.from_pretrained(tiny_dir("gpt2"))
    clean, corrupted = prompts(n_pos=7)
    res = activation_patch(nt, clean, corrupted, site="resid_pre", metric=logit_diff())
    n_layers = nt.cfg.n_layers
    # position 0 (before the first difference) in every layer, and layer 0's embeddings at the 4 unchanged positions
    assert res.n_skipped == 1 * n_layers + 4
    assert (res.raw[:, :1] == res.corrupted_metric).all()
    assert (res.raw[:, 1] != res.corrupted_metric).all()


def test_memory_budget_chunks_give_the_same_numbers(tiny_dir: Callable[[str], Path]) -> None:
    nt = NativeTransformer.from_pretrained(tiny_dir("llama"))
    clean, corrupted = prompts(n_pos=9)
    for site in ("resid_pre", "z_by_pos", "pattern"):
        whole = activation_patch(nt, clean, corrupted, site=site, metric=logit_diff())
        tiny = activation_patch(nt, clean, corrupted, site=site, metric=logit_diff(), max_memory=1)
        torch.testing.assert_close(tiny.raw, whole.raw, atol=1e-5, rtol=0)


def test_reference_kernels_against_naive_loops(tiny_dir: Callable[[str], Path]) -> None:
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    mask = torch.rand(4, 5, generator=g) > 0.5
    out = build_variants(base, source, mask)
    for v in range(4):
        for s in range(5):
            assert torch.equal(out[v, :, s], source[:, s] if mask[v, s] else base[:, s])
    nt = NativeTransformer.from_pretrained(tiny_dir("llama"))
    x, cols = torch.randn(6, nt.cfg.d_model, generator=g), torch.tensor([5, 17, 2])
    ln = nt.ln_final
    got = readout(x, ln.w, ln.b, ln.eps, ln.kind, nt.W_U[:, cols], nt.b_U[cols])
    torch.testing.assert_close(got, nt.unembed(x)[:, cols].detach())


def test_path_patching_matches_transformer_lens_direct_path(gpt2_two_heads: Path) -> None:
    from patching.path import path_patch

    path = gpt2_two_heads
    tl, nt = bridge(path), NativeTransformer.from_pretrained(path)
    clean, corrupted = prompts(seed=3)
    metric = logit_diff()
    _, clean_cache = tl.run_with_cache(clean)
    _, corrupted_cache = tl.run_with_cache(corrupted)
    senders = [(0, 0), (0, 1)]
    for component in ("q", "v"):
        ours = path_patch(nt, clean, corrupted, metric, component=component, senders=senders)
        for s_layer, s_head in senders:
            expected = tlp.get_act_patch_direct_path(tl, corrupted, clean_cache, corrupted_cache, metric, s_layer,
                                                     s_head, component=component, verbose=False)
            torch.testing.assert_close(ours[s_layer, s_head, s_layer + 1:], expected[s_layer + 1:].float(),
                                       atol=TOL, rtol=0)
        assert ours[1].isnan().all()


def test_attribution_patching_is_the_first_order_estimate(tiny_dir: Callable[[str], Path]) -> None:
    """Against exact patching of a scaled-down patch: (patched(eps) - corrupted) / eps -> the attribution."""
    from patching.attribution import attribution_patch, compare

    nt = NativeTransformer.from_pretrained(tiny_dir("llama"))
    clean, corrupted = prompts(seed=4)
    metric = logit_diff()
    estimate = attribution_patch(nt, clean, corrupted, metric, sites=["resid_pre", "z"])
    patcher = Patcher(nt, clean, corrupted, metric, ["resid_pre", "z"])
    eps = 1e-3
    for name in ("resid_pre", "z"):
        exact = patcher.sweep(name)
        numpy_r = np.corrcoef(estimate[name].raw.flatten().numpy(), exact.raw.flatten().numpy())[0, 1]
        assert compare(estimate[name].raw, exact.raw) == pytest.approx(numpy_r, abs=1e-6)
        # a tiny patch, corrupted + eps * (clean - corrupted), is linear: its finite difference is the attribution
        for layer in range(nt.cfg.n_layers):
            hook = f"blocks.{layer}.{patcher.sites[0].hook if name == 'resid_pre' else 'attn.hook_z'}"
            base, donor = patcher.base.acts[hook], patcher.donor.acts[hook]
            site = patcher.sites[0] if name == "resid_pre" else patcher.sites[1]
            n_heads = nt.cfg.n_heads
            nudged = base + eps * (donor - base)
            values, _, _ = patcher.sweep_layer(site, layer, clean.shape[1], n_heads, donor_act=nudged)
            slope = (values - patcher.corrupted_metric) / eps
            torch.testing.assert_close(slope.reshape(estimate[name].raw[layer].shape),
                                       estimate[name].raw[layer] - patcher.corrupted_metric, atol=2e-2, rtol=2e-2)


def test_zoo_checkpoint_matches_transformer_lens(zoo_quick: Path, request: pytest.FixtureRequest) -> None:
    """A trained zoo checkpoint (Llama-style, word-level tokenizer) on the zoo's fact task."""
    from interp.checkpoints import discover
    from patching.tasks import load_task

    path = discover(zoo_quick / "base")[-1].path
    tl, nt = bridge(path), NativeTransformer.from_pretrained(path)
    from transformers import AutoTokenizer

    task_file = request.config.rootpath / "data" / "tasks" / "facts.jsonl"
    task = load_task(task_file, AutoTokenizer.from_pretrained(str(path)))
    clean, corrupted = task.clean[:4], task.corrupted[:4]
    metric = metrics.LogitDiff(task.answer_ids[:4], task.wrong_ids[:4])
    _, clean_cache = tl.run_with_cache(clean)
    patcher = Patcher(nt, clean, corrupted, metric, ["resid_pre", "attn_out", "mlp_out", "z", "z_by_pos"])
    for site in patcher.sites:
        expected = tl_sweep(site.name, tl, corrupted, clean_cache, metric)
        torch.testing.assert_close(patcher.sweep(site).raw, expected.float(), atol=TOL, rtol=0, msg=site.name)
