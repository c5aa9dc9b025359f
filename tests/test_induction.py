"""Induction-head scores, formation detection and clamped training (interp/dynamics: induction, formation, clamping).

Oracles: a hand-built two-layer attention-only induction circuit (weights set by hand), TransformerLens's
`head_detector`, Hugging Face's own attention weights and loss, full-vocabulary eigenvalues, and the zoo's manifest
(measured straight from the Hugging Face models by independent code).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from interp.dynamics.clamping import (Clamp, ClampSet, TrainConfig, copy_logits, perfect_induction,
                                      perfect_previous_token)
from interp.dynamics.export import native_to_gpt2
from interp.dynamics.formation import detect_formation
from interp.dynamics.induction import (checkpoint_scores, copying_scores, detect_head, detect_heads, icl_score,
                                       loss_by_position, make_probe, target_pattern)
from interp.dynamics.icl_tasks import BurstyTask, RepeatTask
from interp.errors import InterpError
from interp.models.native import NativeConfig, NativeTransformer
from interp.results import read_results

V, N = 16, 41  # hand-built circuit: vocabulary, context


def hand_built_induction() -> NativeTransformer:
    """Layer 0 head 0 attends to the previous position (learned positions) and writes that token into a 'previous
    token' subspace; layer 1 head 0 matches the current token against it (K-composition) and copies the attended
    token into an output subspace the unembedding reads. Heads 1 are all-zero (uniform attention)."""
    tok, pos, prev, out = 0, V, V + N, 2 * V + N
    d, dh = 3 * V + N, N
    cfg = NativeConfig(architecture="hand-built", n_layers=2, d_model=d, n_heads=2, n_kv_heads=2, d_head=dh,
                       d_mlp=1, d_vocab=V, n_ctx=N, norm="rmsnorm", norm_eps=1e-6, act="relu", gated_mlp=False,
                       parallel_attn_mlp=False, positional="learned", rotary_dim=0, embed_scale=1.0,
                       attn_scales=(math.sqrt(dh),) * 2)
    nt = NativeTransformer(cfg)
    with torch.no_grad():
        for p in nt.parameters():
            p.zero_()
        for norm in (*(b.ln1 for b in nt.blocks), *(b.ln2 for b in nt.blocks), nt.ln_final):
            norm.w.fill_(1.0)
        v = torch.arange(V)
        nt.W_E[v, tok + v] = 1.0
        nt.W_pos[torch.arange(N), pos + torch.arange(N)] = 1.0
        a0, a1 = nt.blocks[0].attn, nt.blocks[1].attn
        a0.W_Q[0, pos + torch.arange(N), torch.arange(N)] = 3.0  # query: my position
        a0.W_K[0, pos + torch.arange(N - 1), torch.arange(1, N)] = 3.0  # key: the position after mine
        a0.W_V[0, tok + v, v] = 1.0
        a0.W_O[0, v, prev + v] = 1.0
        a1.W_Q[0, tok + v, v] = 4.0  # query: my token
        a1.W_K[0, prev + v, v] = 4.0  # key: the token before this position
        a1.W_V[0, tok + v, v] = 1.0
        a1.W_O[0, v, out + v] = 1.0
        nt.W_U[out + v, v] = 10.0
    return nt.eval()


def uniform_chance(tokens: torch.Tensor, kind: str) -> float:
    """The score a uniform causal head gets: mean over target rows of (#targets / #keys), by explicit loops."""
    fractions = []
    for seq in tokens.tolist():
        for i in range(len(seq)):
            if kind == "induction":
                hits = sum(1 for j in range(1, i + 1) if seq[j - 1] == seq[i] and j - 1 < i)
            else:
                hits = int(i >= 1)
            if hits:
                fractions.append(hits / (i + 1))
    return sum(fractions) / len(fractions)


def test_hand_built_circuit_scores_near_one() -> None:
    nt = hand_built_induction()
    probe = make_probe(V, N, bos_id=0, seq_len=20, batch=8, prefix_len=10, prefix_repeats=4)
    s = checkpoint_scores(nt, probe)
    assert s["induction"][1, 0] > 0.95 and s["prefix_matching"][1, 0] > 0.95
    assert s["previous_token"][0, 0] > 0.95
    assert s["induction"][0, 0] < 0.2 and s["previous_token"][1, 0] < 0.2  # each head does only its job
    for layer in (0, 1):  # the all-zero heads attend uniformly: exactly chance
        assert s["induction"][layer, 1] == pytest.approx(uniform_chance(probe.repeats, "induction"), abs=1e-5)
    assert s["copying"][1, 0] == pytest.approx(1.0, abs=1e-6) and s["copying"][0, 0] == pytest.approx(0.0)
    assert s["icl_score"] < -1.0  # the copy predicts the second half: loss late << loss early


def test_random_model_near_chance(tiny_dir: Callable[[str], Path]) -> None:
    nt = NativeTransformer.from_pretrained(tiny_dir("llama"))
    probe = make_probe(nt.cfg.d_vocab, 101, bos_id=0, exclude_ids=[1, 2], seq_len=50, batch=10)
    s = checkpoint_scores(nt, probe)
    assert torch.allclose(s["induction"], torch.tensor(uniform_chance(probe.repeats, "induction")), atol=0.03)
    assert torch.allclose(s["previous_token"], torch.tensor(uniform_chance(probe.repeats, "prev")), atol=0.03)
    assert abs(float(s["icl_score"])) < 0.1


def test_scores_match_hugging_face_attention_and_loss(tiny_dir: Callable[[str], Path]) -> None:
    """The stripe scores and losses equal ones computed from HF's own attention weights and loss."""
    from interp.models.convert import load_hf_causal_lm

    hf = load_hf_causal_lm(tiny_dir("gpt2"))
    nt = NativeTransformer.from_hf(hf)
    T = 20
    probe = make_probe(nt.cfg.d_vocab, 2 * T + 1, bos_id=0, exclude_ids=[1, 2], seq_len=T, batch=4)
    s = checkpoint_scores(nt, probe)
    out = hf(input_ids=probe.repeats, labels=probe.repeats, output_attentions=True)
    q = torch.arange(T + 1, 2 * T + 1)
    stripe = torch.stack([att[:, :, q, q - T + 1].mean(dim=(0, 2)) for att in out.attentions])
    assert torch.allclose(s["induction"], stripe, atol=1e-5)
    prev_all = torch.stack([torch.diagonal(att, offset=-1, dim1=2, dim2=3).mean(dim=(0, 2)) for att in out.attentions])
    assert torch.allclose(s["previous_token"], prev_all, atol=1e-5)
    assert float(s["loss"]) == pytest.approx(out.loss.item(), abs=1e-5)


def test_detect_head_matches_transformer_lens() -> None:
    from transformer_lens import head_detector as hd

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (1, 12), generator=gen)  # small vocabulary: many duplicates
    pattern = torch.softmax(torch.randn(12, 12, generator=gen).masked_fill(~torch.ones(12, 12).bool().tril(),
                                                                          float("-inf")), -1)
    makers = {"previous_token": hd.get_previous_token_head_detection_pattern,
              "duplicate_token": hd.get_duplicate_token_head_detection_pattern,
              "induction": hd.get_induction_head_detection_pattern}
    for kind, maker in makers.items():
        theirs = maker(tokens.cpu())
        assert torch.equal(target_pattern(tokens, kind)[0].float(), theirs.float()), kind
        for bos in (False, True):
            for cur in (False, True):
                for measure in ("mul", "abs"):
                    expected = hd.compute_head_attention_similarity_score(
                        pattern.clone(), theirs, exclude_bos=bos, exclude_current_token=cur, error_measure=measure)
                    ours = detect_head(pattern, target_pattern(tokens, kind)[0], exclude_bos=bos,
                                       exclude_current_token=cur, error_measure=measure)
                    assert ours == pytest.approx(expected, abs=1e-6), (kind, bos, cur, measure)


def test_detect_heads_on_prompts_finds_the_hand_built_heads() -> None:
    nt = hand_built_induction()
    prompts = [torch.tensor([0, 3, 5, 7, 9, 3, 5, 7, 9]), torch.tensor([0, 4, 6, 8, 4, 6, 8])]
    ind = detect_heads(nt, prompts, "induction")
    prev = detect_heads(nt, prompts, "previous_token")
    assert ind.argmax() == 2 and prev.argmax() == 0  # [layer 1, head 0] and [layer 0, head 0]
    assert prev[0, 0] > 0.8


@torch.no_grad()
def test_copying_score_matches_full_vocabulary_eigenvalues(tiny_dir: Callable[[str], Path]) -> None:
    """Oracle: eigenvalues of the [vocab, vocab] OV circuit built from the Hugging Face Llama modules (GQA)."""
    from interp.models.convert import load_hf_causal_lm

    hf = load_hf_causal_lm(tiny_dir("llama"))
    nt = NativeTransformer.from_hf(hf)
    ours = copying_scores(nt)
    c = hf.config
    dh = c.head_dim
    W_E, W_U = hf.model.embed_tokens.weight.double(), hf.lm_head.weight.double().T * hf.model.norm.weight.double()[:,
                                                                                                                   None]
    for layer, block in enumerate(hf.model.layers):
        for head in range(c.num_attention_heads):
            kv = head // (c.num_attention_heads // c.num_key_value_heads)
            W_V = block.self_attn.v_proj.weight.double()[kv * dh:(kv + 1) * dh].T * block.input_layernorm.weight.double(
            )[:, None]
            W_O = block.self_attn.o_proj.weight.double()[:, head * dh:(head + 1) * dh].T
            eig = torch.linalg.eigvals(W_E @ W_V @ W_O @ W_U)
            assert float(ours[layer, head]) == pytest.approx(float(eig.sum().real / eig.abs().sum()), abs=1e-4)


def test_icl_score_and_loss_by_position() -> None:
    logits = torch.randn(3, 6, 7)
    tokens = torch.randint(0, 7, (3, 6))
    losses = loss_by_position(logits, tokens)
    expected = torch.nn.functional.cross_entropy(logits[:, 2], tokens[:, 3])  # token 3 from position 2
    assert float(losses[2]) == pytest.approx(float(expected), abs=1e-6)
    assert icl_score(losses, [1], [5]) == pytest.approx(float(losses[4] - losses[0]))


def test_formation_detector_finds_the_steepest_rise() -> None:
    steps = [0, 10, 20, 40, 80, 160, 320]
    curve = torch.tensor([0.05, 0.06, 0.1, 0.2, 0.7, 0.8, 0.82])
    induction = torch.zeros(7, 2, 2)
    induction[:, 1, 0] = curve
    induction[:, 0, 1] = 0.3  # never an induction head
    induction[:, 1, 1] = torch.tensor([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])  # excluded below
    icl = torch.tensor([0.0, 0.0, -0.1, -0.2, -1.5, -1.6, -1.6])
    report = detect_formation(steps, induction, icl, threshold=0.4, exclude={(1, 1)})
    assert [(h.layer, h.head) for h in report.heads] == [(1, 0)]
    head = report.heads[0]
    assert (head.previous_step, head.step) == (40, 80) and head.rise == pytest.approx(0.5)
    assert report.icl_drop_step == 80 and head.aligned_with_icl
    assert [(h.layer, h.head, h.step) for h in detect_formation(steps, induction, icl).heads] == [(1, 0, 80),
                                                                                               (1, 1, 10)]


def test_clamps_and_tasks() -> None:
    gen = torch.Generator().manual_seed(0)
    batch = RepeatTask().sample(4, gen)
    for seq, tgt in zip(batch.tokens.tolist(), batch.targets.tolist()):
        period = next(p for p in range(1, len(seq)) if seq[1 + p] == seq[1])
        assert len(set(seq[1:1 + period])) == period  # distinct tokens within a period
        assert all(seq[t] == seq[t - period] for t in range(1 + period, len(seq)))
        assert tgt == [t >= 1 + period for t in range(len(seq))]
    bursty = BurstyTask(n_classes=8, n_labels=4, n_pairs=4)
    b = bursty.sample(16, gen)
    for seq in b.tokens.tolist():
        pairs = {(seq[i], seq[i + 1]) for i in range(1, len(seq) - 2, 2)}
        assert (seq[-2], seq[-1]) in pairs  # the query's label is the label of a matching context item
    prev = perfect_previous_token(batch.tokens)
    assert torch.equal(prev.argmax(-1)[0], torch.tensor([0, *range(batch.tokens.shape[1] - 1)]))
    ind = perfect_induction(batch.tokens)
    assert torch.allclose(ind.sum(-1), torch.ones(ind.shape[:2]))
    pattern = torch.softmax(torch.randn(1, 5, 5).masked_fill(~torch.ones(5, 5).bool().tril(), float("-inf")), -1)
    tokens = torch.tensor([[0, 2, 3, 2, 1]])
    probs = torch.softmax(copy_logits(pattern, tokens, 4), -1)
    assert float(probs[0, 4, 2]) == pytest.approx(float(pattern[0, 4, 1] + pattern[0, 4, 3]), abs=1e-6)
    with pytest.raises(InterpError):
        Clamp.parse("prev:zero")
    with pytest.raises(InterpError):
        ClampSet((Clamp("prev", 2, 0),)).check(2, 4)


def test_clamped_forward_fixes_the_pattern_and_gradients_flow() -> None:
    nt = hand_built_induction().train()
    tokens = torch.tensor([[0, 3, 5, 7, 3, 5, 7]])
    clamps = ClampSet((Clamp("prev", 0, 1), Clamp("copy", 1, 1)))
    logits, patterns = clamps.forward(nt, tokens)
    assert torch.allclose(patterns[0, 0, 1], perfect_previous_token(tokens)[0])
    assert torch.allclose(logits, copy_logits(patterns[1][:, 1], tokens, V))
    logits.sum().backward()
    assert nt.blocks[1].attn.W_Q.grad is not None and nt.W_U.grad is None  # the copy clamp bypasses the unembed


def test_export_round_trips_to_hugging_face() -> None:
    from interp.dynamics.clamping import attention_only_gpt2

    hf, nt = attention_only_gpt2(9, 12, TrainConfig(d_model=16, n_heads=2))
    with torch.no_grad():
        for p in nt.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    tokens = torch.randint(0, 9, (2, 12))
    native_to_gpt2(nt, hf)
    assert torch.allclose(hf(input_ids=tokens).logits, nt(tokens), atol=1e-5)
    assert torch.allclose(NativeTransformer.from_hf(hf)(tokens), nt(tokens), atol=1e-5)


def cli(*args: str) -> int:
    """Run the `interp` command line; return its exit status."""
    from interp.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_clamped_run_forms_earlier_than_unclamped(tmp_path: Path) -> None:
    """End to end through the CLI: train both runs with one seed, score them, compare formation steps."""
    formation = {}
    for name, clamp in (("plain", []), ("prev", ["--clamp", "prev:0.0"])):
        assert 0 == cli("induction", "train", "--out", str(tmp_path / name), "--steps", "200", "--lr", "1e-3",
              "--save-every", "10", "--seed", "0", *clamp)
        assert 0 == cli("induction", str(tmp_path / name), "--out", str(tmp_path / f"{name}_res"), "--seq-len", "16")
        res = read_results(tmp_path / f"{name}_res")
        n_ckpt = 21
        for key in ("induction", "previous_token", "duplicate_token", "prefix_matching", "copying"):
            assert res.tensors[key].shape == (n_ckpt, 2, 4), key
        assert res.tensors["icl_score"].shape == (n_ckpt,)
        heads = res.summary["induction_heads"]
        assert heads["heads"], f"{name}: no induction head formed"
        top = heads["heads"][0]
        assert 0 < top["step"] < 200 and top["aligned_with_icl"]
        formation[name] = top["step"]
        assert (tmp_path / f"{name}_res" / "report.html").stat().st_size > 10_000
    prev_res = read_results(tmp_path / "prev_res")
    assert prev_res.summary["clamps"] == ["prev:0.0"] and [0, 0] in prev_res.summary["clamped_heads_excluded"]
    assert torch.allclose(prev_res.tensors["previous_token"][:, 0, 0], torch.tensor(1.0))  # the clamp was applied
    print(f"formation steps: unclamped {formation['plain']}, prev-token clamped {formation['prev']}")
    assert formation["prev"] < formation["plain"]
    progress = json.loads((tmp_path / "prev" / "run.json").read_text())
    assert progress["clamps"] == ["prev:0.0"]


def test_rerun_reuses_scores_by_weights_content(tiny_dir: Callable[[str], Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun into the same --out reuses each checkpoint's scores only while its weights are the same: replace one
    checkpoint's weights (same path, same settings) and exactly that one is scored again, as a fresh run scores it."""
    from interp.analyses import run as run_analysis
    from interp.dynamics import induction
    from interp.testing import tiny_checkpoint

    run = tmp_path / "run"
    for step in (100, 200):
        tiny_checkpoint("gpt2", run / f"step_{step:06d}", seed=step)
    real, scored = induction.checkpoint_scores, []
    monkeypatch.setattr(induction, "checkpoint_scores", lambda nt, *a, **k: scored.append(1) or real(nt, *a, **k))
    run_analysis("induction", run=run, out=tmp_path / "out", seq_len=6, batch=2)
    assert len(scored) == 2
    tiny_checkpoint("gpt2", run / "step_000200", seed=7)
    scored.clear()
    rerun = run_analysis("induction", run=run, out=tmp_path / "out", seq_len=6, batch=2)
    assert len(scored) == 1
    fresh = run_analysis("induction", run=run, out=tmp_path / "fresh", seq_len=6, batch=2)
    for name, value in fresh.tensors.items():
        torch.testing.assert_close(rerun.tensors[name], value, msg=name)


def _zoo_base_scores(root: Path, out: Path, batch: int = 10) -> tuple[Any, list[dict[str, Any]]]:
    """`interp induction` on the zoo's base run, and the manifest's entries for that run."""
    from interp.analyses import run as run_analysis

    res = run_analysis("induction", run=root / "base", out=out, batch=batch)
    return res, json.loads((root / "manifest.json").read_text())["runs"]["base"]


def _zoo_agrees(res: Any, entries: list[dict[str, Any]], atol: float) -> None:
    """Steps as in the manifest; final per-head induction scores close to the zoo's own (HF attention, other tokens)."""
    assert res.summary["steps"] == [e["step"] for e in entries]
    zoo_scores = torch.tensor(entries[-1]["metrics"]["induction_scores"])
    assert torch.allclose(res.tensors["induction"][-1], zoo_scores, atol=atol)


def test_zoo_quick_runs(zoo_quick: Path, tmp_path: Path) -> None:
    res, entries = _zoo_base_scores(zoo_quick, tmp_path / "quick", batch=4)
    _zoo_agrees(res, entries, atol=0.02)


@pytest.fixture(scope="module")
def zoo_base_scores(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    return _zoo_base_scores(zoo, tmp_path_factory.mktemp("induction") / "full")


@pytest.mark.zoo
def test_zoo_base_run_scores_agree(zoo_base_scores: tuple[Any, list[dict[str, Any]]]) -> None:
    _zoo_agrees(*zoo_base_scores, atol=0.1)


@pytest.mark.zoo
def test_zoo_base_run_formation(zoo_base_scores: tuple[Any, list[dict[str, Any]]]) -> None:
    """The formation step lies strictly inside the run and at the drop of the loss on repeated tokens, which the
    zoo measured from the Hugging Face models (independent code)."""
    res, entries = zoo_base_scores
    steps = [e["step"] for e in entries]
    heads = res.summary["induction_heads"]["heads"]
    assert heads, "no induction head in the zoo's base run"
    top = heads[0]
    print(f"zoo base: L{top['layer']}H{top['head']} forms at step {top['step']} (from {top['previous_step']})")
    assert steps[0] < top["step"] < steps[-1]
    repeated = torch.tensor([e["metrics"]["repeated_half_loss"] for e in entries])
    drop = int(repeated.diff().argmin()) + 1
    assert abs(steps.index(top["step"]) - drop) <= 1, (top["step"], steps[drop])
    assert top["aligned_with_icl"]
