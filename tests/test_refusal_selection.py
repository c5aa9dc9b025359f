"""Arditi et al. (2024)'s refusal-direction selection in interp.base_vs_post.refusal: its three scores against a Hugging
Face forward with PyTorch hooks in the paper's own form (ablation at each block's input and at the attention and MLP
outputs) and a log-softmax written out by hand; the excluded last fifth of the layers; the filters, the tie rule and
the fallback on crafted scores; the `baseline_refuses_none` flag; and a working result on the quick zoo."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import interp.base_vs_post.refusal as refusal
from interp.checkpoints import discover
from interp.data.judges import REFERENCE, Judge
from interp.errors import InterpError
from interp.loading import load
from interp.models.hooked import HookedModel
from interp.testing import tiny_checkpoint
from interp.data.sources import source

TEMPLATE = "User: {instruction}\nAssistant:"


@pytest.fixture(scope="module")
def tiny(tiny_dir: Callable[[str], Path]) -> HookedModel:
    return load(tiny_dir("llama"), backend="native")


@pytest.fixture(scope="module")
def quick_models(zoo_quick: Path) -> dict[str, HookedModel]:
    return {"base": load(discover(zoo_quick / "base")[-1].path, backend="native"),
            "post": load(discover(zoo_quick / "chat")[-1].path, backend="native")}


# --- the scores against an independent forward --------------------------------------------------------------------
def hand_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log p = x - (max + log sum exp(x - max)), in float64, written out."""
    x = logits.double()
    top = x.max()
    return x - (top + torch.log(torch.exp(x - top).sum()))


def hf_next_logits(hf: Any, ids: list[int], ablate: torch.Tensor | None = None,
                   add: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """One unpadded Hugging Face forward; `ablate` projects r/|r| out of every decoder layer's input and of its
    attention and MLP outputs (Arditi et al.'s hooks), `add = (layer, r)` adds r to that layer's input."""
    def pre(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
        def hook(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
        return hook

    handles = []
    if ablate is not None:
        r = ablate.double() / math.sqrt(float((ablate.double() ** 2).sum()))

        def project(x: torch.Tensor) -> torch.Tensor:
            return (x.double() - (x.double() @ r)[..., None] * r).to(x.dtype)

        for layer in hf.model.layers:
            handles.append(layer.register_forward_pre_hook(pre(project), with_kwargs=True))
            handles.append(layer.self_attn.register_forward_hook(
                lambda _m, _i, out: (project(out[0]), *out[1:])))
            handles.append(layer.mlp.register_forward_hook(lambda _m, _i, out: project(out)))
    if add is not None:
        at, vector = add
        handles.append(hf.model.layers[at].register_forward_pre_hook(pre(lambda x: x + vector), with_kwargs=True))
    try:
        with torch.no_grad():
            return hf(torch.tensor([ids])).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()


def test_scores_match_hugging_face_and_a_hand_log_softmax(tiny: HookedModel) -> None:
    """bypass, induce and kl of each candidate equal unpadded Hugging Face forwards with the paper's hooks, scored
    with a hand-written log-softmax; batch_size 4 makes chunks straddle the ablated and the added rows."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny.path, attn_implementation="eager").eval()
    prompt = refusal.template_prompt(tiny.tokenizer, TEMPLATE)
    harmful, harmless = source().refusal_requests("train")[0][:3], source().refusal_requests("train")[1][5:8]
    assert len({len(prompt(x)) for x in harmful + harmless}) > 1  # padding is exercised
    d = tiny.native().cfg.d_model
    candidates = 3 * torch.randn(2, 2, d, generator=torch.Generator().manual_seed(7))  # not seed 0: the embeddings
    token_ids = [5, 40, 77]
    scores, baseline = refusal.score_candidates(tiny, prompt, candidates, [0, 1], harmful, harmless, token_ids, 4)

    def odds(logits: torch.Tensor) -> float:
        p = float(torch.exp(hand_log_softmax(logits)[token_ids]).sum())
        return math.log(p) - math.log(1 - p)

    def kl(reference: torch.Tensor, logits: torch.Tensor) -> float:
        p, q = hand_log_softmax(reference), hand_log_softmax(logits)
        return float((torch.exp(p) * (p - q)).sum())

    plain = {x: hf_next_logits(hf, prompt(x)) for x in harmful + harmless}
    assert float(baseline[0]) == pytest.approx(sum(odds(plain[x]) for x in harmful) / 3, abs=1e-4)
    assert float(baseline[1]) == pytest.approx(sum(odds(plain[x]) for x in harmless) / 3, abs=1e-4)
    for i in range(2):
        for j, layer in enumerate([0, 1]):
            r = candidates[i, j]
            bypass = sum(odds(hf_next_logits(hf, prompt(x), ablate=r)) for x in harmful) / 3
            induce = sum(odds(hf_next_logits(hf, prompt(x), add=(layer, r))) for x in harmless) / 3
            kls = sum(kl(plain[x], hf_next_logits(hf, prompt(x), ablate=r)) for x in harmless) / 3
            assert scores[i, j].tolist() == pytest.approx([bypass, induce, kls], rel=1e-3, abs=1e-4), (i, j)
    assert scores[..., 2].min() > 1e-4  # the ablations did move the next-token distribution


def test_log_odds_stay_exact_where_the_papers_epsilon_saturates() -> None:
    """P(refusal) = 1 - 1e-12: the difference of log-sum-exps gives log(P / (1 - P)) = 27.6, where Arditi et al.'s
    log(p + 1e-8) - log(1 - p + 1e-8) would read 18.4."""
    logits = torch.tensor([[0.0, -math.log(1e12)]])
    assert float(refusal.refusal_log_odds(logits, [0])[0]) == pytest.approx(math.log(1e12), rel=1e-6)


# --- candidates ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_layers", "kept"), [(30, 24), (32, 26), (10, 8), (6, 5), (5, 4), (2, 2), (1, 1)])
def test_candidate_layers_exclude_the_last_fifth(n_layers: int, kept: int) -> None:
    assert refusal.candidate_layers(n_layers) == list(range(kept))


def test_candidate_layers_are_those_below_four_fifths() -> None:
    """Exact rational comparison l < 0.8 L for every depth (no float rounding at multiples of 5)."""
    for n in range(1, 200):
        assert refusal.candidate_layers(n) == [l for l in range(n) if l < Fraction(4, 5) * n]


def test_post_instruction_positions_are_the_shared_final_tokens() -> None:
    assert refusal.post_instruction_positions([[0, 1, 2, 3, 9, 8], [0, 4, 3, 9, 8], [0, 7, 7, 9, 8]]) == [-2, -1]
    assert refusal.post_instruction_positions([[0, 1, 2], [0, 2, 1]]) == [-1]  # nothing shared: the last token
    assert refusal.post_instruction_positions([[1, 2], [5, 1, 2]]) == [-2, -1]  # bounded by the shortest prompt


def test_transfer_selects_over_layers_below_four_fifths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 5-layer model the selection sees layers 0-3 and every post-instruction position; a given layer is the
    only candidate and is never excluded."""
    model = load(tiny_checkpoint("llama", tmp_path / "five", num_hidden_layers=5), backend="native")
    prompt = refusal.template_prompt(model.tokenizer, TEMPLATE)
    harmful, harmless = (x[:4] for x in source().refusal_requests("train"))
    seen: list[tuple[list[int], list[int], tuple[int, ...]]] = []

    class Stop(Exception):
        pass

    def record(_model: Any, _prompt: Any, candidates: torch.Tensor, positions: list[int], layers: list[int],
               *_args: Any) -> None:
        seen.append((list(positions), list(layers), tuple(candidates.shape[:2])))
        raise Stop

    monkeypatch.setattr(refusal, "select_direction", record)
    for layer in (None, 4):
        with pytest.raises(Stop):
            refusal.refusal_transfer({"base": model, "post": model}, {"base": prompt, "post": prompt},
                                     (harmful, harmless), (harmful, harmless), layer=layer)
    positions = refusal.post_instruction_positions([prompt(x) for x in harmful + harmless])
    assert len(positions) > 1
    assert seen == [(positions, [0, 1, 2, 3], (len(positions), 4)), (positions, [4], (len(positions), 1))]


# --- filters, tie rule, fallback (crafted scores) -----------------------------------------------------------------
def select_with(tiny: HookedModel, monkeypatch: pytest.MonkeyPatch, scores: list[list[list[float]]],
                baseline: tuple[float, float] = (1.0, -2.0), zero: tuple[tuple[int, int], ...] = ()
                ) -> refusal.Selection:
    """`select_direction` over positions [-2, -1] x layers [0, 1, 2] with `score_candidates` returning `scores`."""
    table = torch.tensor(scores, dtype=torch.float64)
    candidates = torch.ones(2, 3, tiny.native().cfg.d_model)
    for i, j in zero:
        candidates[i, j] = 0
    monkeypatch.setattr(refusal, "score_candidates",
                        lambda *_args: (table, torch.tensor(baseline, dtype=torch.float64)))
    return refusal.select_direction(tiny, lambda x: [0], candidates, [-2, -1], [0, 1, 2], ["a"], ["b"])


OK = [0.5, 1.0, 0.01]  # bypass, induce, kl: passes every filter


def test_lowest_bypass_wins_and_ties_go_to_the_earlier_position_then_the_lower_layer(
        tiny: HookedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    low = [-1.0, 1.0, 0.01]
    sel = select_with(tiny, monkeypatch, [[OK, OK, OK], [OK, low, OK]])
    assert (sel.pos, sel.layer) == (-1, 1)
    sel = select_with(tiny, monkeypatch, [[OK, OK, low], [low, OK, OK]])  # tie across positions: earlier position
    assert (sel.pos, sel.layer) == (-2, 2)
    sel = select_with(tiny, monkeypatch, [[OK, low, low], [OK, OK, OK]])  # tie within a position: lower layer
    assert (sel.pos, sel.layer) == (-2, 1)
    sel = select_with(tiny, monkeypatch, [[OK, OK, OK], [OK, OK, OK]])  # all tied (a model refusing nothing alike)
    assert (sel.pos, sel.layer) == (-2, 0) and not sel.fallback and int(sel.passed.sum()) == 6


def test_kl_filter_keeps_at_most_one_tenth(tiny: HookedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best bypass with KL 0.11 is discarded; KL exactly 0.1 is kept (Arditi et al.'s code discards kl > 0.1)."""
    sel = select_with(tiny, monkeypatch, [[[-5.0, 1.0, 0.11], [-4.0, 1.0, 0.1], OK], [OK, OK, OK]])
    assert (sel.pos, sel.layer) == (-2, 1)
    assert sel.summary()["chosen"] == {"pos": -2, "layer": 1, "bypass": -4.0, "induce": 1.0, "kl": 0.1}
    assert not bool(sel.passed[0, 0])


def test_induce_filter_and_zero_directions(tiny: HookedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate that does not induce refusal (induce < 0) or is a zero vector is never chosen."""
    sel = select_with(tiny, monkeypatch, [[[-5.0, -0.1, 0.0], [-4.0, 2.0, 0.0], OK], [OK, OK, OK]], zero=((0, 1),))
    assert (sel.pos, sel.layer) == (-2, 2)
    assert sel.passed.tolist() == [[False, False, True], [True, True, True]]


def test_fallback_when_no_candidate_reaches_even_odds(tiny: HookedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """No induce score >= 0: the filter becomes 'at least the harmless baseline' (-2), flagged in the summary."""
    sel = select_with(tiny, monkeypatch, [[[-5.0, -2.5, 0.0], [-4.0, -1.5, 0.0], [-3.0, -1.0, 0.5]],
                                          [[0.0, -1.0, 0.0], [0.0, -1.0, 0.0], [0.0, -1.0, 0.0]]])
    assert (sel.pos, sel.layer) == (-2, 1) and sel.fallback
    summary = sel.summary()
    assert summary["fallback"] is True and summary["filters"]["induce_min"] == -2.0


def test_no_candidate_passing_is_a_one_line_error(tiny: HookedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [-5.0, -3.0, 0.5]  # below the harmless baseline and over the KL bound
    with pytest.raises(InterpError, match="no candidate refusal direction .* passes Arditi et al.'s filters") as err:
        select_with(tiny, monkeypatch, [[bad] * 3, [bad] * 3])
    assert "--layer and --pos" in (err.value.fix or "")


def test_non_finite_score_is_an_error_naming_the_candidate(tiny: HookedModel,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InterpError, match="kl score of the refusal direction at layer 2, position -1"):
        select_with(tiny, monkeypatch, [[OK, OK, OK], [OK, OK, [0.0, 1.0, math.nan]]])


# --- refusal tokens -----------------------------------------------------------------------------------------------
def test_refusal_tokens_are_the_first_tokens_of_the_prefixes_the_judge_accepts(
        quick_models: dict[str, HookedModel]) -> None:
    """The zoo's word-level tokenizer: the zoo judge opens with "I" or "Sorry"; the reference prefixes that are not
    "I ..." start with words the zoo never saw (the unknown token), which are skipped."""
    from interp.zoo.data import is_refusal as zoo_judge

    tok = quick_models["post"].tokenizer
    assert tok.convert_ids_to_tokens(refusal.refusal_token_ids(tok, zoo_judge)) == ["I", "Sorry"]
    assert tok.convert_ids_to_tokens(refusal.refusal_token_ids(tok, REFERENCE)) == ["I"]
    with pytest.raises(InterpError, match="accepts none of the known refusal prefixes"):
        refusal.refusal_token_ids(tok, Judge("none", ()))


# --- results ------------------------------------------------------------------------------------------------------
def test_given_layer_and_position_skip_selection_and_flag_a_model_refusing_nothing(tiny: HookedModel) -> None:
    """A random model refuses none of the requests: baseline_refuses_none is True for both, no selection runs."""
    prompt = refusal.template_prompt(tiny.tokenizer, TEMPLATE)
    harmful, harmless = (x[:3] for x in source().refusal_requests("train"))
    res = refusal.refusal_transfer({"base": tiny, "post": tiny}, {"base": prompt, "post": prompt},
                                   (harmful, harmless), (harmful, harmless), layer=1, pos=-1, max_new_tokens=2,
                                   judge=Judge("none", ()))
    summary = res.summary()
    assert summary["baseline_refuses_none"] == {"base": True, "post": True}
    assert summary["selection"] is None and "selection_scores" not in res.tensors()
    assert (summary["layer"], summary["pos"]) == (1, -1)


def test_quick_zoo_selection_gives_a_working_result(quick_models: dict[str, HookedModel], tmp_path: Path) -> None:
    """On the quick zoo (2 layers) the generation-based selection picked layer 1: layer 0's resid_pre at template
    tokens is the token embedding, the same for every request, so its directions are zero. Arditi et al.'s selection
    must pick layer 1 too, with scores that pass its filters, written and read back consistently. The chat model
    refuses the harmful requests, the base model none of them."""
    from interp.analyses.refusal import refusal_axes
    from interp.results import read_results, write_results
    from interp.zoo.data import CHAT_TEMPLATE, is_refusal as zoo_judge

    prompts = {m: refusal.template_prompt(model.tokenizer, CHAT_TEMPLATE) for m, model in quick_models.items()}
    train, test = source().refusal_requests("train"), source().refusal_requests("test")
    res = refusal.refusal_transfer(quick_models, prompts, (train[0][:64], train[1][:64]),
                                   (test[0][:8], test[1][:8]), max_new_tokens=4, judge=zoo_judge)
    sel = res.selection
    assert sel is not None and sel.layers == [0, 1]
    assert sel.positions == refusal.post_instruction_positions([prompts["post"](x) for x in train[0][:64]])
    assert (res.layer, res.pos) == (sel.layer, sel.pos) == (1, sel.pos)
    assert res.directions["post"][0].abs().max() == 0 and res.directions["post"][1].norm() > 0
    chosen = sel.summary()["chosen"]
    assert chosen["kl"] <= refusal.KL_MAX and chosen["induce"] >= sel.induce_min
    assert sel.induce_min in (refusal.INDUCE_MIN, float(sel.baseline[1]))

    out = write_results(tmp_path / "refusal", res.tensors(), res.summary(), [], title="refusal", analysis="refusal",
                        axes=refusal_axes(res), tokenization={"bos": "as the template writes it", "padding": "left"},
                        inputs=[])
    back = read_results(out)
    table = back.tensors["selection_scores"]
    summary = back.summary
    assert list(table.shape) == [len(sel.positions), len(sel.layers), len(summary["selection"]["scores"])]
    i, j = sel.positions.index(sel.pos), sel.layers.index(sel.layer)
    assert table[i, j].tolist() == pytest.approx([chosen[k] for k in refusal.SCORES], rel=1e-6)
    assert summary["baseline_refuses_none"] == {m: back.tensors["baseline"][j, 0].item() == 0
                                                for j, m in enumerate(refusal.ROLES)}
    assert summary["baseline_refuses_none"] == {"base": True, "post": False}
