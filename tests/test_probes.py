"""probes/: directions and probes on synthetic clusters (analytic oracles, scipy), steering and ablation hooks on a
tiny model (Hugging Face hidden states as the oracle), and the dataset loaders on ../shared/datasets/."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.data.datasets import load_instructions, load_refusal_dir, load_truth_csv
from interp.data.tokens import encode, pad
from interp.errors import InterpError
from probes.activations import collect
from probes.directions import (cosine, diff_in_means, fit_logistic, logistic_probe, mass_mean_probe,
                               train_test_split, unit)
from probes.steering import ablate_hooks, add_hooks, project_out

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def clusters(n: int, d: int, layers: int, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[layer, n, d] Gaussian clusters at offset +-sep/2 along a planted unit direction per layer, plus labels."""
    g = torch.Generator().manual_seed(seed)
    planted = unit(torch.randn(layers, d, generator=g))
    labels = torch.arange(n) % 2 == 0
    sign = labels.float() * 2 - 1
    offset = torch.randn(layers, 1, d, generator=g) * 3  # a common mean the probes must not care about
    acts = torch.randn(layers, n, d, generator=g) + offset + 0.5 * sep * sign[None, :, None] * planted[:, None]
    return acts, labels, planted


def test_diff_in_means_recovers_planted_direction() -> None:
    acts, labels, planted = clusters(4000, 64, 3, sep=4.0, seed=0)
    theta = diff_in_means(acts, labels)
    cos = cosine(theta, planted)
    assert cos.shape == (3,)
    assert (cos > 0.99).all(), cos
    numpy_cos = [float(np.dot(t, p) / np.linalg.norm(t) / np.linalg.norm(p))
                 for t, p in zip(theta.numpy(), planted.numpy())]
    assert cos.tolist() == pytest.approx(numpy_cos, abs=1e-6)
    with pytest.raises(ValueError):
        diff_in_means(acts, torch.ones(4000, dtype=torch.bool))


def test_probe_accuracy_matches_bayes_rule() -> None:
    """Held-out accuracy of both probes ~ that of the Bayes rule (true direction, true midpoint) on the same samples,
    which itself ~ Phi(sep/2) for two unit-variance Gaussians."""
    acts, labels, planted = clusters(6000, 16, 2, sep=2.0, seed=1)
    train, test = train_test_split(6000, 0.5, seed=0)
    midpoint = acts.mean(1, keepdim=True)  # classes are balanced
    bayes = ((torch.einsum("lnd,ld->ln", (acts - midpoint)[:, test], planted) > 0) == labels[test]).float().mean(-1)
    assert bayes.tolist() == pytest.approx([0.5 * (1 + math.erf(1 / math.sqrt(2)))] * 2, abs=0.03)  # Phi(1)
    mm, _ = mass_mean_probe(acts[:, train], labels[train])
    lr = logistic_probe(acts[:, train], labels[train])
    for probe in (mm, lr):
        acc = probe.accuracy(acts[:, test], labels[test])
        assert acc.shape == (2,)
        assert acc.tolist() == pytest.approx(bayes.tolist(), abs=0.01)


def test_fit_logistic_matches_scipy() -> None:
    scipy_optimize = pytest.importorskip("scipy.optimize")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 5, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0]) + 0.3 * torch.randn(300, generator=g)) > 0.2
    l2 = 0.1
    w, b = fit_logistic(x, y, l2=l2)
    X, Y = x.double().numpy(), y.double().numpy()

    def objective(params: np.ndarray) -> float:
        z = X @ params[:-1] + params[-1]
        return float(np.mean(np.logaddexp(0, z) - Y * z) + 0.5 * l2 * params[:-1] @ params[:-1])

    ref = scipy_optimize.minimize(objective, np.zeros(6), method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14}).x
    assert w.tolist() == pytest.approx(ref[:-1].tolist(), abs=1e-3)
    assert float(b) == pytest.approx(ref[-1], abs=1e-3)


def test_train_test_split_partitions() -> None:
    train, test = train_test_split(50, 0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert sorted(train.tolist() + test.tolist()) == list(range(50))


def test_project_out_formula() -> None:
    g = torch.Generator().manual_seed(4)
    x, r = torch.randn(7, 3, 10, generator=g), torch.randn(10, generator=g) * 5
    rn = r.numpy() / np.linalg.norm(r.numpy())
    expected = x.numpy() - (x.numpy() @ rn)[..., None] * rn
    assert np.allclose(project_out(x, r).numpy(), expected, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_llama(tiny_dir):  # noqa: ANN001, ANN201
    from interp.models.backends.native_backend import NativeModel

    return NativeModel.from_dir(tiny_dir("llama"), torch.device("cpu"), torch.float32, None)


def resid_hooks(n_layers: int) -> list[str]:
    return [f"blocks.{l}.hook_{s}" for l in range(n_layers) for s in ("resid_pre", "resid_mid", "resid_post")]


def test_ablation_zeroes_projection_at_every_layer(tiny_llama) -> None:  # noqa: ANN001
    nt = tiny_llama.native()
    tokens = tiny_llama.to_tokens(["the cat sees the ball.", "a dog likes the moon."])
    r = torch.randn(nt.cfg.d_model, generator=torch.Generator().manual_seed(5))
    seen: dict[str, torch.Tensor] = {}
    capture = [(name, lambda act, name: seen.__setitem__(name, act.clone())) for name in resid_hooks(nt.cfg.n_layers)]
    with torch.no_grad(), nt.hooks(ablate_hooks(r, nt.cfg.n_layers) + capture):  # ablation runs before capture
        ablated = nt(tokens)
    assert len(seen) == 3 * nt.cfg.n_layers
    for name, act in seen.items():
        assert (act @ unit(r)).abs().max() < 1e-5 * act.norm(dim=-1).max(), name
    with torch.no_grad(), nt.hooks(capture):
        clean = nt(tokens)
    assert max((seen[n] @ unit(r)).abs().max() for n in seen) > 1e-2  # the direction was there before
    assert (ablated - clean).abs().max() > 1e-4


def test_addition_at_positions_only(tiny_llama) -> None:  # noqa: ANN001
    nt = tiny_llama.native()
    tokens = tiny_llama.to_tokens(["the cat sees the ball and the moon."])
    v = torch.randn(nt.cfg.d_model, generator=torch.Generator().manual_seed(6))
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    runs = []
    for hooks in ([], add_hooks(v, [0], 2.0, ("resid_post",), positions=(-3, -2))):
        seen: dict[str, torch.Tensor] = {}
        with torch.no_grad(), nt.hooks(hooks + [(n, lambda a, n: seen.__setitem__(n, a.clone())) for n in names]):
            nt(tokens)
        runs.append(seen)
    delta0 = runs[1][names[0]] - runs[0][names[0]]
    p = tokens.shape[1]
    expected = torch.zeros_like(delta0)
    expected[0, [p - 3, p - 2]] = 2.0 * v
    assert torch.allclose(delta0, expected, atol=1e-5)
    delta1 = runs[1][names[1]] - runs[0][names[1]]  # causal: earlier positions untouched downstream
    assert delta1[0, : p - 3].abs().max() < 1e-5 and delta1[0, p - 3:].abs().max() > 1e-3


def test_collect_left_padded_matches_hugging_face(tiny_llama, tiny_dir) -> None:  # noqa: ANN001
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_dir("llama"), attn_implementation="eager").eval()
    texts = ["the cat sees the ball.", "a dog likes some bread and the moon.", "the river."]
    ids = [encode(tiny_llama.tokenizer, t) for t in texts]
    assert all(seq[0] == tiny_llama.tokenizer.bos_token_id for seq in ids)
    nt = tiny_llama.native()
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"]
    acts = collect(nt, ids, names, positions=(-2, -1), tokenizer=tiny_llama.tokenizer, batch_size=2)
    assert acts.shape == (3, 3, 2, nt.cfg.d_model)
    for row, seq in enumerate(ids):
        with torch.no_grad():
            hidden = hf(torch.tensor([seq]), output_hidden_states=True).hidden_states
        for k, layer in enumerate((0, 1, 1)):  # resid_pre of l = hidden_states[l]; resid_post of 0 = hidden_states[1]
            assert torch.allclose(acts[k, row], hidden[layer][0, -2:], atol=1e-4), (names[k], row)
    tokens, mask = pad(tiny_llama.tokenizer, ids)
    assert mask.sum(1).tolist() == [len(s) for s in ids] and (tokens[:, -1] == torch.tensor([s[-1] for s in ids])).all()


def test_truth_csv_loader() -> None:
    path = SHARED / "truth" / "cities.csv"
    statements = load_truth_csv(path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert len(statements) == len(rows) == 1496
    assert [s.label for s in statements] == [row[1] == "1" for row in rows]
    assert statements[0].text == rows[0][0] and statements[0].source == "cities"


def test_truth_csv_loader_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,truth\nx,1\n")
    with pytest.raises(InterpError, match="statement,label"):
        load_truth_csv(bad)
    with pytest.raises(InterpError, match="does not exist"):
        load_truth_csv(tmp_path / "missing.csv")


def test_refusal_loaders() -> None:
    harmful, harmless = load_refusal_dir(SHARED / "refusal", "val")
    assert len(harmful) == len(json.loads((SHARED / "refusal" / "harmful_val.json").read_text())) == 39
    assert len(harmless) == 6264
    assert load_instructions(SHARED / "refusal" / "advbench.json")[0] == json.loads(
        (SHARED / "refusal" / "advbench.json").read_text())[0]["instruction"]


def test_encode_bos_choice(tiny_llama) -> None:  # noqa: ANN001
    tok = tiny_llama.tokenizer
    text = "the cat sees the ball."
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert encode(tok, text) == [tok.bos_token_id, *plain] and encode(tok, text, bos=False) == plain


def test_check_context_refuses_empty_and_too_long_prompts() -> None:
    from interp.options import check_context

    check_context([[1, 2], [3]], ["ab", "c"], n_ctx=3, extra=1)
    with pytest.raises(InterpError, match=r"prompts: prompt 1 \('ab'\) is 2 tokens \(\+ 2 answer or generated tokens\), "
                                          r"longer than the model's context of 3"):
        check_context([[1, 2], [3]], ["ab", "c"], n_ctx=3, extra=2)
    with pytest.raises(InterpError, match="encodes to no tokens"):
        check_context([[1], []], ["a", ""], n_ctx=3)


@pytest.mark.parametrize("content,needle", [
    (b"statement,label\ncaf\xe9,1\n", "is not UTF-8"),
    (b"statement,label\n", "holds no statements"),
    (b"statement,label\nthe sky is blue.,1\nthe sky is green.,2\n", "line 3: label '2' is not 0 or 1"),
    (b"statement,label\nthe sky is blue.,1\n,0\n", "line 3: the statement is empty"),
    (b"statement,label\nthe sky is blue.\n", "line 2: label '' is not 0 or 1"),
])
def test_truth_csv_loader_names_file_and_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(InterpError, match=f"{path}.*{needle}".replace("(", r"\(").replace(")", r"\)")):
        load_truth_csv(path)


def test_refusal_dir_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "harmful_train.json").write_text('[{"instruction": "x"}]')
    with pytest.raises(InterpError, match="has no harmless_train.json or harmful_val.json or harmless_val.json"):
        load_refusal_dir(tmp_path, "train")
