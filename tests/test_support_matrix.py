"""The README's support table (`interp.support`), cell by cell, on a tiny random checkpoint of every native family.

Backends are tested in tests/test_loading.py (logits and every hook on all three) and the patching engine against
`transformer_lens.patching` in tests/test_arch_families.py; here each analysis's building block meets an oracle:
caches and probe activations against Hugging Face's hidden states, gradients against plain autograd, TuCo(m, m) = 0
and the scaled pair at alpha = 1 against the fine-tuned model, induction patterns against the hooks, path patching
refused where the table says no. The non-native row is tests/test_any_model.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

import interp
from interp.dynamics.gradients.per_sample import IGNORE, per_sample_gradients
from interp.dynamics.induction import run_with_patterns
from interp.errors import InterpError
from interp.base_vs_post.tuco import ScaledPair, tuco
from interp.loading import read_config
from interp.models.arch import FAMILIES
from interp.models.convert import load_hf_causal_lm
from interp.models.native import NativeTransformer
from interp.support import analyses, markdown_table
from interp.testing import tiny_checkpoint
from patching import metrics
from patching.path import path_patch
from probes.activations import collect

TOKENS = torch.tensor([[5, 17, 100, 3, 250, 7, 41, 12, 9], [9, 9, 30, 9, 200, 9, 12, 44, 71]])


def _cells(path: Path) -> dict[str, bool]:
    return {c.name: c.ok for c in analyses(read_config(path))}


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_caches_and_probe_activations_equal_hugging_face_hidden_states(family: str, tiny_dir: Callable[[str], Path]
                                                                       ) -> None:
    path = tiny_dir(family)
    assert _cells(path)["cache"] and _cells(path)["directions"]
    model, hf = interp.load(path, backend="native", device="cpu"), load_hf_causal_lm(path)
    hidden = hf(TOKENS, output_hidden_states=True).hidden_states
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.summary.n_layers)]
    _, cache = model.run_with_cache(TOKENS, names=names)
    for layer, name in enumerate(names):
        torch.testing.assert_close(cache[name], hidden[layer], atol=1e-4, rtol=0)
    got = collect(model, TOKENS.tolist(), names[1:], positions=(-1, -3))
    torch.testing.assert_close(got, torch.stack([hidden[l][:, [-1, -3]] for l in range(1, len(names))]),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_per_sample_gradients_equal_autograd(family: str, tiny_dir: Callable[[str], Path]) -> None:
    """Each projection's per-sample gradient (fused ones split into their parts) against one backward pass of that
    sample alone, read from the same Hugging Face parameter."""
    path = tiny_dir(family)
    assert _cells(path)["gradients"]
    hf = load_hf_causal_lm(path)
    labels = TOKENS.clone()
    labels[:, :4] = IGNORE
    _, stream = per_sample_gradients(hf, TOKENS, labels, include_mlp=True)
    got = {(layer, name): grad for layer, name, grad in stream if layer == 0}
    hf.zero_grad()
    logits = hf(TOKENS[:1]).logits[0, :-1]
    target = labels[0, 1:]
    torch.nn.functional.cross_entropy(logits[target != IGNORE], target[target != IGNORE]).backward()
    total = sum(float(g[0].abs().sum()) for g in got.values())
    reference = sum(float(p.grad.abs().sum()) for n, p in hf.named_parameters()
                    if p.grad is not None and p.ndim == 2 and (".0." in n or ".h.0." in n)
                    and "embed" not in n and "wte" not in n and "wpe" not in n)
    assert abs(total - reference) <= 1e-3 * reference


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A second random checkpoint of the family (another seed): the 'fine-tuned' model of a pair."""
    root = tmp_path_factory.mktemp("pairs")
    return lambda family: tiny_checkpoint(family, root / family, seed=1)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_tuco_of_a_model_with_itself_is_zero_and_the_scaled_pair_at_one_is_the_fine_tuned_model(
        family: str, tiny_dir: Callable[[str], Path], fine_tuned: Callable[[str], Path]) -> None:
    path = tiny_dir(family)
    assert _cells(path)["tuco"]
    pt, ft = NativeTransformer.from_pretrained(path), NativeTransformer.from_pretrained(fine_tuned(family))
    assert torch.equal(tuco(pt, pt, TOKENS).tuco, torch.zeros(2))
    torch.testing.assert_close(ScaledPair(pt, ft, 1.0)(TOKENS), ft(TOKENS), atol=1e-5, rtol=0)
    assert bool(((tuco(pt, ft, TOKENS).tuco > 0) & (tuco(pt, ft, TOKENS).tuco < 1)).all())


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_induction_patterns_are_the_models_attention(family: str, tiny_dir: Callable[[str], Path]) -> None:
    path = tiny_dir(family)
    assert _cells(path)["induction"]
    model = interp.load(path, backend="transformer_lens", device="cpu")
    nt = NativeTransformer.from_pretrained(path)
    logits, patterns = run_with_patterns(nt, TOKENS)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(nt.cfg.n_layers)]
    _, cache = model.run_with_cache(TOKENS, names=names)
    torch.testing.assert_close(patterns, torch.stack([cache[n] for n in names]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_path_patching_runs_or_is_refused_as_the_table_says(family: str, tiny_dir: Callable[[str], Path]) -> None:
    path = tiny_dir(family)
    nt = NativeTransformer.from_pretrained(path)
    corrupted = TOKENS.clone()
    corrupted[:, 2] = 33
    metric = metrics.LogitDiff(torch.tensor([10, 20]), torch.tensor([30, 40]))
    if not _cells(path)["path patching"]:
        with pytest.raises(InterpError, match="normalises the attention output"):
            path_patch(nt, TOKENS, corrupted, metric, "q", senders=[(0, 0)])
        return
    out = path_patch(nt, TOKENS, corrupted, metric, "q", senders=[(0, 0)])
    assert bool(torch.isfinite(out[0, 0, 1]).all())


def test_info_prints_the_support_of_a_checkpoint(tiny_dir: Callable[[str], Path], capsys: pytest.CaptureFixture
                                                 ) -> None:
    """`interp info` shows each backend and analysis with how it runs or why not."""
    from clitools import run

    code, out, _ = run(["info", str(tiny_dir("gemma2"))], capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and len(line.split()) > 2}
    assert "Gemma-2 spec" in lines["native"] and "fast engine" in lines["patch"]
    assert " no " in lines["path"] and "normalised before it is added" in lines["path"]
    code, out, _ = run(["info", str(tiny_dir("llama"))], capsys)
    assert code == 0 and "no " not in out.split("support")[1].split("step")[0]


def test_readme_table_is_the_generated_one() -> None:
    """README.md shows exactly `python -m interp.support --markdown` (regenerate it when a family is added)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert markdown_table() in readme
