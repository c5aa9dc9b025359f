"""interp.base_vs_post truth / refusal / knowledge / entropy and their commands, against independent oracles: Hugging
Face forwards with PyTorch hooks, a KV-cache-free generation loop, hook-based single-cell patching, numpy and
TransformerLens's processed weights. The refusal-steering tests at the end need the full zoo."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from interp.checkpoints import discover
from interp.models.backends.native_backend import NativeModel
from interp.data.tokens import encode
from interp.data.datasets import Statement
from interp.data.sources import source as data_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def last_checkpoints(root: Path) -> tuple[Path, Path]:
    """(base, chat) final checkpoints of a zoo."""
    return discover(root / "base")[-1].path, discover(root / "chat")[-1].path


def load_native(path: Path) -> NativeModel:
    return NativeModel.from_dir(path, torch.device("cpu"), torch.float32, None)


@pytest.fixture(scope="module")
def quick_pair(zoo_quick: Path) -> dict[str, NativeModel]:
    base, chat = last_checkpoints(zoo_quick)
    return {"base": load_native(base), "post": load_native(chat)}


@pytest.fixture(scope="module")
def hf_models(quick_pair: dict[str, NativeModel]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    return {m: AutoModelForCausalLM.from_pretrained(model.path, attn_implementation="eager").eval()
            for m, model in quick_pair.items()}


def small_truth(n_train: int = 48, n_test: int = 24) -> tuple[list[Statement], list[Statement]]:
    rng = random.Random(0)
    statements = data_source().truth_statements
    return rng.sample(statements("train"), n_train), rng.sample(statements("test"), n_test)


def hf_pd(hf: Any, tokenizer: Any, queries: list[str], edit: Any = None) -> float:
    """Mean P(TRUE) - P(FALSE) over queries, one unpadded Hugging Face forward each; `edit(layer, hidden)` may
    change each decoder layer's output in place."""
    from interp.base_vs_post.truth import label_ids

    t, f = label_ids(tokenizer)
    handles = []
    if edit is not None:
        for layer, module in enumerate(hf.model.layers):
            def hook(_mod: Any, _inp: Any, out: Any, layer: int = layer) -> Any:
                edit(layer, out[0] if isinstance(out, tuple) else out)
                return out
            handles.append(module.register_forward_hook(hook))
    try:
        values = []
        for q in queries:
            with torch.no_grad():
                probs = hf(torch.tensor([encode(tokenizer, q)])).logits[0, -1].softmax(-1)
            values.append(float(probs[t] - probs[f]))
    finally:
        for h in handles:
            h.remove()
    return float(np.mean(values))


def test_truth_steering_and_nie_match_hugging_face(quick_pair: dict[str, NativeModel], hf_models: dict[str, Any]
                                                   ) -> None:
    from interp.base_vs_post.truth import ROLES, few_shot_lines, suffix_length, truth_directions, truth_query

    train, test = small_truth()
    res = truth_directions(quick_pair, train, test, probe_layer=1, intervene_layers=[0, 1], coeff=3.0, n_steer=8)
    assert res.cosine.shape == (2,) and res.mm_accuracy.shape == (2, 2, 2) and res.lr_accuracy.shape == (2, 2)
    # oracle: rebuild the steering set and prompts, run Hugging Face with its own layer-output hooks
    steer = random.Random(0).sample(test, 8)
    shots = few_shot_lines(train, 4, 0)
    by_label = [[s for s in steer if s.label], [s for s in steer if not s.label]]
    queries = [[truth_query(s.text, shots, i) for i, s in enumerate(group)] for group in by_label]
    for j, m in enumerate(ROLES):
        tok, hf = quick_pair[m].tokenizer, hf_models[m]
        n = suffix_length(tok, queries[0])
        for k in range(2):
            clean = hf_pd(hf, tok, queries[k])
            assert res.pd_clean[j, k].item() == pytest.approx(clean, abs=1e-5)
            for i, o in enumerate(ROLES):
                v = res.theta[o][1] * (-3.0 if k == 0 else 3.0)

                def edit(layer: int, hidden: torch.Tensor) -> None:
                    if layer in (0, 1):
                        hidden[:, -(n + 2):-n] += v

                steered = hf_pd(hf, tok, queries[k], edit)
                assert res.pd_steered[i, j, k].item() == pytest.approx(steered, abs=1e-5)
                target = -1.0 if k == 0 else 1.0
                assert res.nie[i, j, k].item() == pytest.approx((steered - clean) / (target - clean), rel=1e-3,
                                                                abs=1e-6)


def test_default_steering_layers_follow_du_and_never_only_the_last_layer() -> None:
    from interp.base_vs_post.truth import default_intervene_layers

    assert default_intervene_layers(12, 32) == [8, 9, 10, 11, 12]  # Du et al.: layers 8..12 of 32
    assert default_intervene_layers(3, 4) == [2, 3]  # L/8 = 0: a steer at the last layer alone cannot act
    assert default_intervene_layers(0, 4) == [0]


def test_truth_directions_match_hidden_states(quick_pair: dict[str, NativeModel], hf_models: dict[str, Any]) -> None:
    from interp.base_vs_post.truth import statement_acts

    train, _ = small_truth(24, 2)
    acts = statement_acts(quick_pair["post"], train, batch_size=7)
    hidden = []
    for s in train:
        with torch.no_grad():
            out = hf_models["post"](torch.tensor([encode(quick_pair["post"].tokenizer, s.text)]),
                                    output_hidden_states=True)
        hidden.append(out.hidden_states[1][0, -1])  # block 0's output (the last entry would be after the final norm)
    hidden = torch.stack(hidden)
    assert torch.allclose(acts[0], hidden - hidden.mean(0), atol=1e-4)


def test_refusal_direction_matches_hidden_states(quick_pair: dict[str, NativeModel], hf_models: dict[str, Any]) -> None:
    from interp.base_vs_post.refusal import refusal_directions, template_prompt
    from interp.zoo.data import CHAT_TEMPLATE

    harmful, harmless = (x[:6] for x in data_source().refusal_requests("train"))
    model = quick_pair["base"]
    prompt = template_prompt(model.tokenizer, CHAT_TEMPLATE)
    r = refusal_directions(model, prompt, harmful, harmless, pos=-2, batch_size=4)
    means = []
    for group in (harmful, harmless):
        rows = []
        for x in group:
            with torch.no_grad():
                hs = hf_models["base"](torch.tensor([prompt(x)]), output_hidden_states=True).hidden_states
            rows.append(torch.stack([hs[layer][0, -2] for layer in range(len(hs) - 1)]))  # resid_pre of each layer
        means.append(torch.stack(rows).mean(0))
    assert torch.allclose(r, means[0] - means[1], atol=1e-4)


def test_refusal_score_under_hooks_matches_cache_free_loop(quick_pair: dict[str, NativeModel]) -> None:
    from interp.base_vs_post.refusal import refusal_score, template_prompt
    from probes.steering import ablate_hooks, add_hooks

    model = quick_pair["post"]
    nt, tok = model.native(), model.tokenizer
    prompt = template_prompt(tok, "User: {instruction}\nAssistant:")
    instructions = data_source().refusal_requests("test")[0][:3]
    r = torch.randn(nt.cfg.d_model, generator=torch.Generator().manual_seed(0))
    for hooks in (ablate_hooks(r, nt.cfg.n_layers), add_hooks(r, [1], 4.0, ("resid_pre", "resid_mid", "resid_post"))):
        judge = lambda text: "the" in text.split()[:3]  # noqa: E731
        score, texts = refusal_score(model, prompt, instructions, hooks, max_new_tokens=6, judge=judge, batch_size=3)
        expected = []
        for x in instructions:  # the reference's loop: full forward per step, no cache, no padding
            ids = prompt(x)
            new: list[int] = []
            with torch.no_grad(), nt.hooks(hooks):
                for _ in range(6):
                    nxt = int(nt(torch.tensor([ids + new]))[0, -1].argmax())
                    if nxt == tok.eos_token_id:
                        break
                    new.append(nxt)
            expected.append(tok.decode(new, skip_special_tokens=True))
        assert texts == expected
        assert score == sum(map(judge, expected)) / len(expected)


def test_template_prompt_forms() -> None:
    from interp.base_vs_post.refusal import template_prompt
    from interp.testing import train_tiny_tokenizer

    tok = train_tiny_tokenizer()
    bos = [tok.bos_token_id]
    assert template_prompt(tok)("the cat") == bos + tok("User: the cat\nAssistant:")["input_ids"]
    assert template_prompt(tok, "Q: {instruction} A:")("the cat") == bos + tok("Q: the cat A:")["input_ids"]
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}"
                         "{% if add_generation_prompt %}<a>{% endif %}")
    assert template_prompt(tok)("the cat") == bos + tok("<u>the cat</u><a>")["input_ids"]


def test_entropy_weights_match_transformer_lens(tiny_dir: Any) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    from interp.base_vs_post.entropy import last_layer_weights
    from interp.models.native import NativeTransformer

    for arch in ("llama", "gpt2"):  # RMSNorm (fold only) and LayerNorm (fold, centre writing weights)
        bridge = TransformerBridge.boot_transformers(str(tiny_dir(arch)), device="cpu")
        bridge.enable_compatibility_mode()  # TransformerLens's from_pretrained processing
        w_out, w_u = last_layer_weights(NativeTransformer.from_pretrained(tiny_dir(arch)))
        assert torch.allclose(w_u, bridge.W_U.detach(), atol=1e-6), arch
        assert torch.allclose(w_out, bridge.W_out[-1].detach(), atol=1e-6), arch


def test_entropy_stats_candidates_iou(quick_pair: dict[str, NativeModel]) -> None:
    from interp.base_vs_post.entropy import candidates, entropy_neurons, iou, last_layer_weights, neuron_stats

    nt = quick_pair["post"].native()
    norm, var = neuron_stats(nt)
    w_out, w_u = (w.double().numpy() for w in last_layer_weights(nt))
    for i in (0, 5, nt.cfg.d_mlp - 1):
        cos = [w_out[i] @ w_u[:, v] / np.linalg.norm(w_out[i]) / np.linalg.norm(w_u[:, v]) for v in range(w_u.shape[1])]
        assert var[i].item() == pytest.approx(np.var(cos, ddof=1), rel=1e-4)
        assert norm[i].item() == pytest.approx(np.linalg.norm(w_out[i]), rel=1e-5)
    # hand-made case: norms 0..19 -> the top quarter is 15..19 (strictly above the 75th percentile 14.25)
    n = torch.arange(20.0)
    v = torch.tensor([5.0] * 15 + [0.3, 0.1, 0.4, 0.2, 0.5])
    assert candidates(n, v, 0.25, 3).tolist() == [15, 16, 18]
    assert candidates(n, v, 0.25, 10).tolist() == [15, 16, 17, 18, 19]
    assert iou(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4, 5])) == pytest.approx(2 / 5)
    assert entropy_neurons({"a": nt, "b": nt}).iou == 1.0


def test_normalize_and_pearson_match_numpy() -> None:
    from interp.base_vs_post.knowledge import normalize, pearson

    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)) * 3
    values = x.numpy().flatten()
    bins = np.linspace(values.min() - 1e-5, values.max() + 1e-5, 21)
    levels = np.concatenate((np.zeros(10), np.linspace(0.1, 1.0, 10)))
    assert np.allclose(normalize(x).numpy().flatten(), levels[np.digitize(values, bins) - 1])
    y = x + torch.randn(5, 7, generator=torch.Generator().manual_seed(2))
    assert pearson(x, y) == pytest.approx(np.corrcoef(x.flatten(), y.flatten())[0, 1], rel=1e-9)


def test_knowledge_maps_match_single_cell_hook_patching(quick_pair: dict[str, NativeModel]) -> None:
    from interp.base_vs_post.knowledge import knowledge_maps, paired_prompts
    from interp.base_vs_post.truth import few_shot_lines, label_ids

    pairs = data_source().truth_pairs("test")[:6]
    shots = few_shot_lines(data_source().truth_statements("train"), 4, 0)
    res = knowledge_maps(quick_pair, pairs, shots, n_pairs=6)
    true_ids, false_ids = paired_prompts(pairs, shots, quick_pair["base"].tokenizer, 0, 6)
    n_layers, n_cols = res.maps["base"].shape
    assert res.tokens[-4:] == ["This", "statement", "is", ":"] and n_cols == len(encode(quick_pair["base"].tokenizer,
                                                                                         pairs[0][0].text)) - 1 + 4
    t, f = label_ids(quick_pair["base"].tokenizer)
    width = true_ids.shape[1]
    for (source, target), layer, col in ((("base", "base"), 0, res.subject_positions[0]), (("post", "post"), 1, 3),
                                         (("base", "post"), 0, res.subject_positions[0]), (("post", "base"), 1, -1)):
        pos = width - n_cols + col if col >= 0 else width - 1
        name = f"blocks.{layer}.hook_resid_post"
        src, tgt = quick_pair[source].native(), quick_pair[target].native()
        saved: dict[str, torch.Tensor] = {}
        with torch.no_grad(), src.hooks([(name, lambda a, n: saved.__setitem__(n, a.clone()))]):
            src(true_ids)

        def patch(act: torch.Tensor, n: str) -> torch.Tensor:
            act = act.clone()
            act[:, pos] = saved[n][:, pos]
            return act

        with torch.no_grad(), tgt.hooks([(name, patch)]):
            logits = tgt(false_ids)[:, -1]
        expected = float((logits[:, t] - logits[:, f]).mean())
        key = source if source == target else f"{source}_to_{target}"
        assert res.maps[key][layer, col].item() == pytest.approx(expected, abs=1e-4), (key, layer, col)
    assert res.correlations["pearson_base_post"] == pytest.approx(
        np.corrcoef(res.maps["base"].flatten(), res.maps["post"].flatten())[0, 1], rel=1e-6)


def cli(*args: str) -> None:
    """Run `interp ARGS` in-process and require exit status 0."""
    from interp.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    assert done.value.code == 0


def test_commands_write_results(zoo_quick: Path, tmp_path: Path) -> None:
    from interp.results import read_results

    base, chat = (str(p) for p in last_checkpoints(zoo_quick))
    cli("directions", "truth", base, chat, "--out", str(tmp_path / "truth"), "--n-steer", "8", "--batch-size", "128",
        "--data", str(SHARED / "truth" / "neg_sp_en_trans.csv"))
    res = read_results(tmp_path / "truth")
    cos = (res.tensors["theta_base"] * res.tensors["theta_post"]).sum(-1) / (
        res.tensors["theta_base"].norm(dim=-1) * res.tensors["theta_post"].norm(dim=-1))
    assert res.summary["cosine_per_layer"] == pytest.approx(cos.tolist(), abs=1e-4)
    assert res.summary["counts"]["train"] == 283 and res.summary["counts"]["test"] == 71
    assert (tmp_path / "truth" / "report.html").stat().st_size > 1000

    cli("directions", "refusal", base, chat, "--out", str(tmp_path / "refusal"), "--n-train", "8", "--n-test", "4",
        "--max-new-tokens", "4", "--data", str(SHARED / "refusal"), "--layer", "1", "--pos", "-1")
    res = read_results(tmp_path / "refusal")
    assert res.summary["counts"] == {"train_harmful": 8, "train_harmless": 8, "test_harmful": 4, "test_harmless": 4}
    assert res.summary["ablation_harmful"]["base_dir_in_post"] == res.tensors["ablation"][0, 1].item()

    cli("knowledge", base, chat, "--out", str(tmp_path / "knowledge"), "--n-pairs", "4")
    res = read_results(tmp_path / "knowledge")
    assert res.summary["n_pairs"] == 4 and res.tensors["map_base"].shape == res.tensors["map_post_to_base"].shape
    assert res.summary["entropy_neurons"]["candidates"]["base"] == res.tensors["entropy_candidates_base"].tolist()

    from interp.demo import du_headline as headline

    lines = headline(*(read_results(tmp_path / name).summary for name in ("truth", "refusal", "knowledge")))
    iou = res.summary["entropy_neurons"]["iou"]
    assert lines[-1].endswith(f"{iou:.2f}") and len(lines) == 8


# --- full zoo: the chat model's refusal direction is causal -------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_chat(zoo: Path) -> tuple[NativeModel, Any, torch.Tensor, int]:
    """The zoo chat model, its prompt, and its refusal directions at the position and layer that Arditi et al.'s
    selection (`choose_direction`) picks on the training requests."""
    from interp.base_vs_post.refusal import choose_direction, template_prompt
    from interp.zoo.data import CHAT_TEMPLATE, is_refusal

    chat = load_native(last_checkpoints(zoo)[1])
    prompt = template_prompt(chat.tokenizer, CHAT_TEMPLATE)
    r, layer, _, _ = choose_direction(chat, prompt, data_source().refusal_requests("train"), judge=is_refusal)
    return chat, prompt, r, layer


@pytest.mark.zoo
def test_zoo_ablating_refusal_direction_removes_refusal(zoo_chat: tuple[NativeModel, Any, torch.Tensor, int]) -> None:
    from interp.base_vs_post.refusal import refusal_score
    from interp.zoo.data import is_refusal
    from probes.directions import unit
    from probes.steering import ablate_hooks

    chat, prompt, r, layer = zoo_chat
    harmful = data_source().refusal_requests("test")[0][:48]
    before, _ = refusal_score(chat, prompt, harmful, judge=is_refusal)
    after, texts = refusal_score(chat, prompt, harmful, ablate_hooks(unit(r[layer]), chat.native().cfg.n_layers),
                                 judge=is_refusal)
    assert before >= 0.9 and after <= 0.1, (layer, before, after, texts[:3])


@pytest.mark.zoo
def test_zoo_adding_refusal_direction_raises_refusal(zoo_chat: tuple[NativeModel, Any, torch.Tensor, int]) -> None:
    from interp.base_vs_post.refusal import refusal_score
    from interp.zoo.data import is_refusal
    from probes.directions import unit
    from probes.steering import add_hooks

    chat, prompt, r, layer = zoo_chat
    harmless = data_source().refusal_requests("test")[1][:48]
    before, _ = refusal_score(chat, prompt, harmless, judge=is_refusal)
    hooks = add_hooks(unit(r[layer]), [layer], float(r[layer].norm()) / 3, ("resid_pre", "resid_mid", "resid_post"))
    after, texts = refusal_score(chat, prompt, harmless, hooks, judge=is_refusal)
    assert before <= 0.1 and after >= 0.6, (layer, before, after, texts[:3])


# --- issue 17: whole-answer scoring, BOS, warnings, help -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny random Llamas sharing a tokenizer that splits " TRUE" and " FALSE" into several tokens (context 512)."""
    from interp.testing import tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny512")
    return tuple(tiny_checkpoint("llama", root / f"seed{s}", seed=s, max_position_embeddings=512) for s in (0, 1))


def tiny_statements(n: int, seed: int) -> list[Statement]:
    """Statements made of the tiny tokenizer's own words, labelled alternately."""
    from interp.testing import _corpus

    lines = random.Random(seed).sample(_corpus()[:-4], n)
    return [Statement(line, i % 2 == 0, "tiny") for i, line in enumerate(lines)]


def hf_answer_logprob(hf: Any, ids: list[int], answer: list[int], add: dict[int, torch.Tensor]) -> float:
    """log P(answer | ids), teacher-forced in one Hugging Face forward; `add[position]` is added to every decoder
    layer's output at that absolute position."""
    def hook(_mod: Any, _inp: Any, out: Any) -> None:
        hidden = out[0] if isinstance(out, tuple) else out
        for position, v in add.items():
            hidden[:, position] += v

    handles = [layer.register_forward_hook(hook) for layer in hf.model.layers] if add else []
    try:
        with torch.no_grad():
            logp = hf(torch.tensor([ids + answer[:-1]])).logits[0, len(ids) - 1:].log_softmax(-1)
    finally:
        for h in handles:
            h.remove()
    return sum(float(logp[i, t]) for i, t in enumerate(answer))


def test_multi_token_answers_are_scored_on_their_whole_sequence(tiny_pair: tuple[Path, Path]) -> None:
    """log P(answer) = the sum of its tokens' log-probabilities, teacher-forced, with steering positions that follow
    the prompt; the oracle: Hugging Face forwards over prompt + answer with layer-output hooks at absolute positions."""
    from transformers import AutoModelForCausalLM

    from interp.base_vs_post.truth import answer_ids, answer_logprobs, few_shot_lines, truth_query
    from probes.steering import add_hooks

    model = load_native(tiny_pair[0])
    hf = AutoModelForCausalLM.from_pretrained(tiny_pair[0], attn_implementation="eager").eval()
    tok = model.tokenizer
    answers = answer_ids(tok)
    assert [len(a) for a in answers] == [4, 5]  # " TRUE" and " FALSE" are several tokens here
    shots = few_shot_lines(tiny_statements(8, 0), 4, 0)
    queries = [truth_query(s.text, shots, i) for i, s in enumerate(tiny_statements(3, 1))]
    v = torch.randn(model.native().cfg.d_model, generator=torch.Generator().manual_seed(0)) * 4
    offsets = (-6, -5)
    results = []
    for steer in (False, True):
        hooks_at = (lambda k: add_hooks(v, [0, 1], 1.0, ("resid_post",), [p - k for p in offsets])) if steer else None
        got = answer_logprobs(model, queries, hooks_at, batch_size=2)
        for row, q in enumerate(queries):
            ids = encode(tok, q)
            assert [encode(tok, q + w) for w in (" TRUE", " FALSE")] == [ids + a for a in answers]  # as in context
            add = {len(ids) + p: v for p in offsets} if steer else {}
            for k, answer in enumerate(answers):
                expected = hf_answer_logprob(hf, ids, answer, add)
                assert got[row, k].item() == pytest.approx(expected, abs=1e-4), (steer, row, k)
        results.append(got)
    assert (results[1] - results[0]).abs().min() > 1e-3  # the steering acted on every score
    assert results[0].exp().sum(-1).max() < 1e-3  # a random model hardly answers: the whole answer is unlikely


def test_label_ids_refuse_multi_token_answers(tiny_pair: tuple[Path, Path]) -> None:
    from interp.errors import InterpError
    from interp.base_vs_post.truth import label_ids

    with pytest.raises(InterpError, match="'TRUE' is 4 tokens"):
        label_ids(load_native(tiny_pair[0]).tokenizer)


def test_truth_cli_bos_flag_changes_the_tokens_seen_and_is_recorded(tiny_pair: tuple[Path, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import probes.activations
    from clitools import run
    from interp.results import read_results

    for name, statements in (("train.csv", tiny_statements(16, 2)), ("eval.csv", tiny_statements(8, 3))):
        (tmp_path / name).write_text("statement,label\n" + "".join(f"{s.text},{int(s.label)}\n" for s in statements))
    seen: list[int] = []
    original = probes.activations.pad

    def spy(tokenizer: Any, ids: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(seq[0] for seq in ids)
        return original(tokenizer, ids, *args, **kwargs)

    monkeypatch.setattr(probes.activations, "pad", spy)
    base, post = tiny_pair
    bos_id = load_native(base).tokenizer.bos_token_id
    for flag in ("--bos", "--no-bos"):
        seen.clear()
        argv = ["directions", "truth", base, post, "--out", tmp_path / flag, "--data", tmp_path / "train.csv",
                "--eval", tmp_path / "eval.csv", "--n-steer", "4", flag]
        code, out, err = run(argv, capsys)
        assert code == 0, err
        assert seen and (all(t == bos_id for t in seen) if flag == "--bos" else bos_id not in seen)
        summary = read_results(tmp_path / flag).summary
        assert summary["bos"] == (flag == "--bos") and summary["bos_token"] == ("<|bos|>" if flag == "--bos" else None)
        warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 2 and "base model" in warnings[0] and "TRUE and FALSE together only" in warnings[0]
    code, _, err = run(argv, capsys)  # the same settings again: accepted, replaced
    assert code == 0, err
    code, _, err = run(argv[:-1] + ["--bos"], capsys)  # other settings into the same --out: refused
    assert code == 2 and "other settings" in err


def test_refusal_cli_warns_of_a_baseline_without_refusals(zoo_quick: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """One `warning:` line per model flagged in the summary's "baseline_refuses_none", none for the others."""
    from clitools import run
    from interp.base_vs_post.refusal import RefusalResult

    summary = RefusalResult.summary
    monkeypatch.setattr(RefusalResult, "summary",
                        lambda self: summary(self) | {"baseline_refuses_none": {"base": True, "post": False}})
    base, chat = last_checkpoints(zoo_quick)
    code, _, err = run(["directions", "refusal", base, chat, "--out", tmp_path / "r", "--n-train", "4", "--n-test",
                        "3", "--max-new-tokens", "2", "--layer", "1", "--pos", "-1"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"the base model ({base})" in warnings[0] and "none of the 3 harmful" in warnings[0]


@pytest.mark.parametrize("argv,shown", [(["directions", "truth"], ["[layer, d_model]", "[owner, model, label]",
                                                                   "--no-bos", "<|im_start|>"]),
                                        (["directions", "refusal"], ["[layer, d_model]", "harmful_train.json",
                                                                     "harmless_val.json", '{"instruction": "..."']),
                                        (["knowledge"], ["[layer, position]", "--no-bos"])])
def test_help_shows_shapes_and_layouts(argv: list[str], shown: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from clitools import run

    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    for text in shown:
        assert text in flat, text


def test_knowledge_cli_no_bos_changes_the_tokens_patched(zoo_quick: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import patching
    from clitools import run
    from interp.results import read_results

    first: list[int] = []
    original = patching.activation_patch

    def spy(model: Any, clean: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        first.extend(clean[:, 0].tolist())
        return original(model, clean, *args, **kwargs)

    monkeypatch.setattr(patching, "activation_patch", spy)
    base, chat = last_checkpoints(zoo_quick)
    bos_id = load_native(base).tokenizer.bos_token_id
    for flag in ("--bos", "--no-bos"):
        first.clear()
        code, _, err = run(["knowledge", base, chat, "--out", tmp_path / flag, "--n-pairs", "2", flag], capsys)
        assert code == 0, err
        assert first and (set(first) == {bos_id} if flag == "--bos" else bos_id not in first)
        assert read_results(tmp_path / flag).summary["bos"] == (flag == "--bos")


def test_refusal_selection_fallback_is_a_warning(zoo_quick: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The quick zoo's chat model has no direction that brings refusal to even odds when added: the command says so
    on stderr, and summary.json records it."""
    from clitools import run
    from interp.results import read_results

    base, chat = (str(p) for p in last_checkpoints(zoo_quick))
    code, _, err = run(["directions", "refusal", base, chat, "--out", tmp_path / "r", "--n-train", "16", "--n-test",
                        "4", "--max-new-tokens", "4"], capsys)
    assert code == 0, err
    fallback = read_results(tmp_path / "r").summary["selection"]["fallback"]
    assert fallback == ("warning: no candidate refusal direction" in err)
    assert fallback  # what makes this test meaningful on the quick zoo
