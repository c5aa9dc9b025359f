"""Families interp has no native implementation of, opened on the two hook backends: GPT-J (parallel attention and
MLP, partial rotary, LayerNorm) and Mixtral (a mixture of experts, grouped key/value heads, RMSNorm).

Oracles: Hugging Face's eager forward (logits), the other hook backend (activations), the native patching engine and
`transformer_lens.patching` on the bridge (the hooked patching path), `torch.autograd` (the generic gradient layout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import transformer_lens.patching as tlp
from transformers import AutoModelForCausalLM, GPTJConfig, MixtralConfig

import interp
from clitools import assert_user_error, run
from interp.errors import InterpError
from interp.results import read_results
from interp.testing import train_tiny_tokenizer
from patching import metrics
from patching.engine import activation_patch
from patching.hooked import HookedPatcher, hooked_activation_patch, sites_of

HOOK_BACKENDS = ("transformer_lens", "nnsight")
FAMILIES = ("gptj", "mixtral")
ATOL = 1e-4
PROMPTS = ["the cat sees the ball .", "a dog likes the moon", "my friend calls"]
CORE = ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k",
        "blocks.0.attn.hook_v", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out",
        "blocks.1.hook_resid_post", "ln_final.hook_normalized")
TASK = [{"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"},
        {"clean": "my friend likes the moon", "corrupted": "my friend likes a moon", "answer": ".", "wrong": " the"}]


def _config(family: str, vocab: int, special: dict[str, int]) -> Any:
    """2 layers, d_model 64, 4 heads; GPT-J with partial rotary, Mixtral with 4 experts (2 a token) and GQA."""
    if family == "gptj":
        return GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=128, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, vocab_size=vocab, **special)
    return MixtralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         intermediate_size=96, max_position_embeddings=128, num_local_experts=4,
                         num_experts_per_tok=2, sliding_window=None, vocab_size=vocab, **special)


def build(family: str, out: Path, seed: int, tokenizer: Any = None) -> Path:
    """A tiny random checkpoint (matrices N(0, 0.15), biases N(0, 0.1), norm scales 1 + N(0, 0.1)), eager attention
    pinned in config.json, with `tokenizer` (default: the tiny one)."""
    tokenizer = tokenizer or train_tiny_tokenizer()
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer), special), attn_implementation="eager")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=g)
            norm = "norm" in name or ".ln" in name
            param.copy_(noise * 0.15 if param.ndim >= 2 else noise * 0.1 + (1.0 if norm and "weight" in name else 0))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "attn_implementation": "eager"}, indent=2))
    return out


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """family -> (base, post): two seeds of one tiny architecture."""
    root = tmp_path_factory.mktemp("any_model")
    return {f: (build(f, root / f / "base", 0), build(f, root / f / "post", 1)) for f in FAMILIES}


_LOADED: dict[tuple[str, str], Any] = {}


@pytest.fixture()
def loaded(ckpts: dict[str, tuple[Path, Path]]) -> Callable[[str, str], Any]:
    def get(family: str, backend: str) -> Any:
        if (family, backend) not in _LOADED:
            _LOADED[family, backend] = interp.load(ckpts[family][0], backend=backend, device="cpu")
        return _LOADED[family, backend]

    return get


def tokens() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 380, (2, 7), generator=g)


@pytest.mark.parametrize("backend", HOOK_BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_hugging_face(family: str, backend: str, ckpts, loaded) -> None:
    hf = AutoModelForCausalLM.from_pretrained(ckpts[family][0], attn_implementation="eager")
    with torch.no_grad():
        expected = hf(tokens()).logits
    torch.testing.assert_close(loaded(family, backend)(tokens()), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_both_hook_backends_give_equal_activations(family: str, loaded) -> None:
    tl, nn = loaded(family, "transformer_lens"), loaded(family, "nnsight")
    common = [n for n in tl.hook_names() if n in set(nn.hook_names())]
    assert set(CORE) <= set(common)
    _, a = tl.run_with_cache(tokens(), names=common)
    _, b = nn.run_with_cache(tokens(), names=common)
    visible = torch.ones(7, 7).tril().bool()
    for name in common:
        x, y = (a[name][..., visible], b[name][..., visible]) if name.endswith("hook_attn_scores") else \
            (a[name], b[name])
        torch.testing.assert_close(x, y, atol=ATOL, rtol=0, msg=name)


def test_hook_names_keep_only_transformer_lens_meanings(loaded) -> None:
    """GPT-J: parallel block, no resid_mid; its bridge reads the pattern after Hugging Face used it, so the bridge
    offers no pattern hooks (nnsight reaches them inside the attention function). Mixtral: no dense MLP, so no
    mlp.hook_pre/post; rotary tables are not hook_pos_embed."""
    gptj_tl, gptj_nn = loaded("gptj", "transformer_lens").hook_names(), loaded("gptj", "nnsight").hook_names()
    assert "blocks.0.hook_resid_mid" not in gptj_tl + gptj_nn
    assert "blocks.0.attn.hook_pattern" not in gptj_tl and "blocks.0.attn.hook_pattern" in gptj_nn
    assert "blocks.0.mlp.hook_pre" in gptj_tl and "blocks.0.mlp.hook_pre" in gptj_nn
    mixtral = loaded("mixtral", "transformer_lens").hook_names() + loaded("mixtral", "nnsight").hook_names()
    assert not {"blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "hook_pos_embed"} & set(mixtral)
    assert "blocks.0.hook_resid_mid" in loaded("mixtral", "transformer_lens").hook_names()


@pytest.mark.parametrize("backend", HOOK_BACKENDS)
def test_unknown_hook_suggests_the_closest(backend: str, loaded) -> None:
    model = loaded("gptj", backend)
    with pytest.raises(InterpError, match="blocks.0.hook_resid_pre"):
        with model.hooks([("blocks.0.hook_resid_prex", lambda act, name: None)]):
            model(tokens())
    with pytest.raises(InterpError, match="no hook named"):
        model.run_with_cache(tokens(), names=["blocks.0.hook_resid_mid"])


def test_native_backend_refuses_and_auto_picks_transformer_lens(ckpts) -> None:
    with pytest.raises(InterpError, match="has no native implementation"):
        interp.load(ckpts["gptj"][0], backend="native", device="cpu")
    assert interp.load(ckpts["mixtral"][0], backend="auto", device="cpu").backend == "transformer_lens"


def test_generic_hook_names_equal_the_native_tables(tiny_dir) -> None:
    """On a native family the generic derivations name the same hooks (bridge) or a subset (nnsight: no resid_mid)
    and the generic nnsight sites give the bridge's activations."""
    from interp.models.backends.generic_sites import bridge_hook_names, generic_site_table
    from interp.models.backends.nnsight import NNsightModel

    for arch in ("gpt2", "gpt_neox", "llama"):
        tl = interp.load(tiny_dir(arch), backend="transformer_lens", device="cpu")
        assert bridge_hook_names(tl.bridge, tl.summary.n_layers) == tl.hook_names(), arch
    nn = interp.load(tiny_dir("llama"), backend="nnsight", device="cpu")
    assert isinstance(nn, NNsightModel)
    nn._sites = generic_site_table(nn.lm._module, nn.summary.n_layers,
                                   lambda path, op: hasattr(nn._module(path).source, op))
    names = list(nn._sites)
    assert set(names) <= set(tl.hook_names()) and len(names) == len(tl.hook_names()) - 2  # 2 layers' resid_mid
    toks = torch.tensor([[5, 17, 33, 90, 12, 7]])
    _, a = nn.run_with_cache(toks, names=names)
    _, b = tl.run_with_cache(toks, names=names)
    for name in names:
        if not name.endswith("hook_attn_scores"):
            torch.testing.assert_close(a[name], b[name], atol=ATOL, rtol=0, msg=name)


def _prompts(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, 300, (2, 5), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(3, 300, (2,), generator=g)
    corrupted[-1, 3] = (clean[-1, 3] + 1) % 300 + 3
    return clean, corrupted


def test_hooked_patching_equals_the_native_engine(tiny_dir) -> None:
    """Llama on the bridge through hooks vs the native engine: every site, 1e-5; a small memory budget splits each
    layer's variants into forwards of three."""
    path = tiny_dir("llama")
    tl, nat = (interp.load(path, backend=b, device="cpu") for b in ("transformer_lens", "native"))
    clean, corrupted = _prompts()
    metric = metrics.LogitDiff(torch.tensor([10, 20]), torch.tensor([30, 40]))
    sites = sites_of(tl)
    assert {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "pattern_by_pos"} <= set(sites)
    hooked = HookedPatcher(tl, clean, corrupted, metric, sites, max_memory=150_000)
    for noising in (False, True):
        for site in sites if not noising else ("resid_pre", "z"):
            expected = activation_patch(nat, clean, corrupted, site=site, metric=metric, noising=noising)
            got = hooked.sweep(site) if not noising else \
                hooked_activation_patch(tl, clean, corrupted, site=site, metric=metric, noising=True)
            torch.testing.assert_close(got.raw, expected.raw, atol=1e-5, rtol=0, msg=site)
            torch.testing.assert_close(got.normalised, expected.normalised, atol=1e-5, rtol=0, msg=site)
            assert (got.n_run, got.n_skipped) == (expected.n_run, expected.n_skipped), site


@pytest.mark.parametrize("family", FAMILIES)
def test_hooked_patching_equals_transformer_lens_patching(family: str, loaded) -> None:
    model = loaded(family, "transformer_lens")
    clean, corrupted = _prompts(1)
    metric = metrics.LogitDiff(torch.tensor([10, 20]), torch.tensor([30, 40]))
    _, clean_cache = model.bridge.run_with_cache(clean)
    for site, tl_sweep in (("resid_pre", tlp.get_act_patch_resid_pre),
                           ("z", tlp.get_act_patch_attn_head_out_all_pos)):
        ours = hooked_activation_patch(model, clean, corrupted, site=site, metric=metric)
        expected = tl_sweep(model.bridge, corrupted, clean_cache, metric)
        torch.testing.assert_close(ours.raw, expected.float(), atol=ATOL, rtol=0, msg=site)


def test_a_site_the_backend_lacks_is_refused(loaded) -> None:
    clean, corrupted = _prompts()
    with pytest.raises(InterpError, match="no hook for patching site 'pattern'"):
        hooked_activation_patch(loaded("gptj", "transformer_lens"), clean, corrupted, site="pattern",
                                metric=metrics.LogitDiff(torch.tensor([1, 2]), torch.tensor([3, 4])))


def _notice(err: str, text: str) -> None:
    lines = [line for line in err.splitlines() if text in line]
    assert len(lines) == 1, err


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_analyses_run_end_to_end(family: str, ckpts, tmp_path: Path, capsys) -> None:
    from interp.testing import _corpus

    base, post = ckpts[family]
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    code, _, err = run(["cache", base, "-p", tmp_path / "prompts.txt", "--hook", "blocks.1.hook_resid_post",
                        "-o", tmp_path / "cache"], capsys)
    assert code == 0, err
    _notice(err, "has no native implementation in interp; using backend 'transformer_lens'")
    from interp.cache import load_activations

    acts = load_activations(tmp_path / "cache" / base.name, "blocks.1.hook_resid_post")
    assert acts.shape[0] == len(PROMPTS) and bool(torch.isfinite(acts).all())

    lines = _corpus()[:24]
    for name, rows in (("train.csv", lines[:16]), ("eval.csv", lines[16:])):
        (tmp_path / name).write_text("statement,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(rows)))
    code, _, err = run(["directions", "truth", base, post, "--out", tmp_path / "truth", "--data",
                        tmp_path / "train.csv", "--eval", tmp_path / "eval.csv", "--n-steer", "4"], capsys)
    assert code == 0, err
    _notice(err, "using backend 'transformer_lens'")
    truth = read_results(tmp_path / "truth")
    assert all(bool(torch.isfinite(t).all()) for t in truth.tensors.values())

    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(line) + "\n" for line in TASK))
    code, _, err = run(["patch", base, "--task", task, "--out", tmp_path / "patch", "--sites", "resid_pre,z",
                        "--device", "cpu"], capsys)
    assert code == 0, err
    _notice(err, "the fast engine needs a native family; using the exact hooked path (slower)")
    patched = read_results(tmp_path / "patch").tensors
    assert all(bool(torch.isfinite(t).all()) for t in patched.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_cli_runs_on_the_generic_layout(family: str, ckpts, tmp_path: Path, capsys) -> None:
    from interp.dynamics.gradients.data import write_pairs

    data = write_pairs([("the cat sees", "the ball ."), ("a dog likes the", "moon ."), ("my friend", "calls")],
                       tmp_path / "grad.jsonl")
    code, _, err = run(["gradients", ckpts[family][0], "--data", data, "--out", tmp_path / "grad"]
                       + (["--mlp"] if family == "gptj" else []), capsys)
    assert code == 0, err
    result = read_results(tmp_path / "grad")
    assert result.summary["projections"] == ["q", "k", "v", "o"] + (["up", "down"] if family == "gptj" else [])
    assert all(bool(torch.isfinite(t).all()) for t in result.tensors.values())


def test_patch_cli_matches_the_hooked_patcher(ckpts, tmp_path: Path, capsys) -> None:
    """The sweep's numbers are the hooked patcher's (one prompt batch, logit difference)."""
    from patching.tasks import load_task

    base = ckpts["mixtral"][0]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(line) + "\n" for line in TASK))
    assert run(["patch", base, "--task", task, "--out", tmp_path / "p", "--sites", "resid_mid"], capsys)[0] == 0
    model = interp.load(base, backend="transformer_lens", device="cpu")
    t = load_task(task, model.tokenizer, True, n_ctx=128, d_vocab=model.summary.d_vocab)
    expected = hooked_activation_patch(model, t.clean, t.corrupted, site="resid_mid",
                                       metric=metrics.LogitDiff(t.answer_ids, t.wrong_ids))
    got = read_results(tmp_path / "p").tensors["resid_mid.raw"]
    torch.testing.assert_close(got.reshape(expected.raw.shape), expected.raw, atol=1e-5, rtol=0)


def test_generic_gradient_layout_and_per_sample_gradients(ckpts) -> None:
    """GPT-J: q/k/v/out_proj and fc_in/fc_out found by name; each sample's gradient equals autograd's."""
    from interp.dynamics.gradients.generic import generic_layout
    from interp.dynamics.gradients.per_sample import IGNORE, response_loss

    hf = AutoModelForCausalLM.from_pretrained(ckpts["gptj"][0], attn_implementation="eager")
    lay = generic_layout(hf)
    assert [m.module for m in lay.matrices(True)] == ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj",
                                                       "mlp.fc_in", "mlp.fc_out"]
    assert lay.projections(True) == ("q", "k", "v", "o", "up", "down")
    mixtral = AutoModelForCausalLM.from_pretrained(ckpts["mixtral"][0], attn_implementation="eager")
    assert generic_layout(mixtral).mlp == () and generic_layout(mixtral).projections(False) == ("q", "k", "v", "o")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    labels = ids.clone()
    labels[:, :2] = IGNORE
    loss = response_loss(hf(ids).logits, labels).sum()
    (grad,) = torch.autograd.grad(loss, [lay.layers[1].get_submodule("attn.v_proj").weight])
    from interp.dynamics.gradients.per_sample import per_sample_gradients
    import interp.dynamics.gradients.per_sample as gradients

    original = gradients.layout
    gradients.layout = generic_layout
    try:
        _, stream = per_sample_gradients(hf, ids, labels)
        found = {(layer, name): g for layer, name, g in stream}
    finally:
        gradients.layout = original
    torch.testing.assert_close(found[1, "v"][0], grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("argv, needle", [
    (["tuco", "{base}", "{post}", "--prompts", "{prompts}", "--out", "{out}"], "interp tuco needs a native family"),
    (["induction", "{base}", "--out", "{out}"], "interp induction needs a native family"),
    (["gradients", "{base}", "--data", "{data}", "--out", "{out}", "--mlp"], "--mlp asks for the MLP"),
])
def test_native_only_analyses_refuse_before_loading(argv: list[str], needle: str, ckpts, tmp_path: Path,
                                                    capsys) -> None:
    from interp.dynamics.gradients.data import write_pairs

    base, post = ckpts["mixtral"]
    (tmp_path / "prompts.txt").write_text("the cat sees\n")
    values = {"base": base, "post": post, "prompts": tmp_path / "prompts.txt", "out": tmp_path / "out",
              "run": base.parent, "data": write_pairs([("the cat", "sees")], tmp_path / "d.jsonl")}
    result = run([a.format(**values) for a in argv], capsys)
    assert_user_error(result, needle, "mixtral" if "--mlp" not in argv else "drop --mlp")
    assert "--mlp" in argv or "gpt2, gpt_neox, llama" in result[2].split("natively implemented family: ")[1]
    assert not (tmp_path / "out" / "results.safetensors").exists()


# --- refusal directions and knowledge maps through hooks only -------------------------------------------------------
def test_refusal_hook_path_equals_the_native_path(tiny_dir) -> None:
    """Tiny Llama on the bridge (the hook path: prompts of equal length batched unpadded, each hooked group of requests
    in forwards of its own, generation by full forwards) vs the native backend (left-padded batches, hooks on some
    rows only): candidate directions, Arditi et al.'s three scores, the selection, refusal scores and generations
    under ablation and addition, 1e-4."""
    import interp.base_vs_post.refusal as refusal
    from interp.data.sources import source

    path = tiny_dir("llama")
    models = {b: interp.load(path, backend=b, device="cpu") for b in ("native", "transformer_lens")}
    prompt = refusal.template_prompt(models["native"].tokenizer, "User: {instruction}\nAssistant:")
    harmful, harmless = source().refusal_requests("train")[0][:4], source().refusal_requests("train")[1][:4]
    assert len({len(prompt(x)) for x in harmful + harmless}) > 1  # the native path pads, the hook path groups
    positions = refusal.post_instruction_positions([prompt(x) for x in harmful + harmless])

    def outcome(model: Any, candidates: torch.Tensor) -> Any:
        try:
            sel = refusal.select_direction(model, prompt, candidates, positions, [0, 1], harmful, harmless)
        except InterpError as err:
            return str(err)
        return sel.pos, sel.layer, sel.passed.tolist(), sel.scores

    got = {}
    for backend, model in models.items():
        candidates = refusal.candidate_directions(model, prompt, harmful, harmless, positions, batch_size=3)
        scores = refusal.score_candidates(model, prompt, candidates, [0, 1], harmful, harmless, [5, 40, 77], 3)
        res = refusal.refusal_transfer({"base": model, "post": model}, {"base": prompt, "post": prompt},
                                       (harmful, harmless), (harmful, harmless), layer=1, pos=-1, max_new_tokens=3,
                                       judge=lambda text: len(text) % 2 == 0, batch_size=3)
        got[backend] = candidates, scores, outcome(model, candidates), res
    (c, (s, b), o, r), (hc, (hs, hb), ho, hr) = got["native"], got["transformer_lens"]
    for x, y in ((hc, c), (hs, s), (hb, b), (hr.ablation, r.ablation), (hr.addition, r.addition),
                 (hr.baseline, r.baseline), *((hr.directions[m], r.directions[m]) for m in refusal.ROLES)):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=0)
    assert s[..., 2].max() > 1e-4  # the ablations moved the next-token distribution
    assert hr.samples == r.samples and hr.coeff == pytest.approx(r.coeff, abs=1e-4)
    if isinstance(o, str):
        assert ho == o, (ho, o)
    else:
        assert ho[:3] == o[:3]
        torch.testing.assert_close(ho[3], o[3], atol=1e-4, rtol=0)


def test_knowledge_maps_on_hooks_equal_the_native_maps(zoo_quick: Path) -> None:
    """The quick zoo's base and chat models (tiny Llamas) on the bridge: the four maps by the exact hooked patcher
    (cross-model ones included) equal the native engine's, 1e-4."""
    from interp.checkpoints import discover
    from interp.base_vs_post.knowledge import knowledge_maps
    from interp.base_vs_post.truth import few_shot_lines
    from interp.data.sources import source

    paths = {"base": discover(zoo_quick / "base")[-1].path, "post": discover(zoo_quick / "chat")[-1].path}
    shots = few_shot_lines(source().truth_statements("train"), 2, 0)
    found = {}
    for backend in ("native", "transformer_lens"):
        models = {m: interp.load(p, backend=backend, device="cpu") for m, p in paths.items()}
        found[backend] = knowledge_maps(models, source().truth_pairs("test"), shots, n_pairs=4)
    native, hooked = found["native"], found["transformer_lens"]
    assert set(hooked.maps) == {"base", "post", "base_to_post", "post_to_base"}
    for name, expected in native.maps.items():
        torch.testing.assert_close(hooked.maps[name], expected, atol=1e-4, rtol=0, msg=name)
    assert hooked.clean == pytest.approx(native.clean, abs=1e-4)
    assert hooked.corrupted == pytest.approx(native.corrupted, abs=1e-4)
    assert native.maps["base_to_post"].abs().max() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_refusal_and_knowledge_run_end_to_end(family: str, ckpts, zoo_quick: Path, tmp_path: Path, capsys) -> None:
    """`directions refusal` (Arditi et al.'s selection on GPT-J; on the random Mixtral no candidate passes its
    filters, so the layer and position are given) and `knowledge` (checkpoints with the zoo's tokenizer, which has
    one token each for TRUE and FALSE): exit 0, finite results, one notice each, no entropy neurons."""
    from interp.checkpoints import discover
    from interp.loading import load_tokenizer

    base, post = ckpts[family]
    given = ["--layer", "1", "--pos", "-1"] if family == "mixtral" else []
    code, _, err = run(["directions", "refusal", base, post, "--out", tmp_path / "refusal", "--n-train", "8",
                        "--n-test", "4", "--max-new-tokens", "2", *given], capsys)
    assert code == 0, err
    _notice(err, "using backend 'transformer_lens'")
    refusal = read_results(tmp_path / "refusal")
    assert all(bool(torch.isfinite(t).all()) for t in refusal.tensors.values())
    assert (refusal.summary["selection"] is None) == bool(given)

    tokenizer = load_tokenizer(discover(zoo_quick / "base")[-1].path)
    base, post = (build(family, tmp_path / name, seed, tokenizer) for seed, name in enumerate(("kb", "kp")))
    code, _, err = run(["knowledge", base, post, "--out", tmp_path / "knowledge", "--n-pairs", "4", "--n-shots", "1"],
                       capsys)
    assert code == 0, err
    _notice(err, "using the exact hooked path (slower); entropy neurons are left out")
    _notice(err, "using backend 'transformer_lens'")
    knowledge = read_results(tmp_path / "knowledge")
    assert {"map_base", "map_post", "map_base_to_post", "map_post_to_base"} == set(knowledge.tensors)
    assert all(bool(torch.isfinite(t).all()) for t in knowledge.tensors.values())
    assert knowledge.summary["entropy_neurons"] is None and "left out" in knowledge.summary["entropy_neurons_skipped"]


# --- checkpoints no backend opens: refused before any weights are read ----------------------------------------------
def unopenable(kind: str, out: Path) -> Path:
    """A tiny random checkpoint transformers can save but interp cannot open: BERT as BertLMHeadModel (bidirectional;
    transformers accepts it as a causal LM), Mamba (no attention heads), BioGPT (no TransformerLens adapter), T5 (not
    a causal LM)."""
    import transformers

    sizes = dict(vocab_size=384, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                 max_position_embeddings=128)
    config, model = {"bert": ("BertConfig", "BertLMHeadModel"), "biogpt": ("BioGptConfig", "BioGptForCausalLM"),
                     "mamba": ("MambaConfig", "MambaForCausalLM"),
                     "t5": ("T5Config", "T5ForConditionalGeneration")}[kind]
    settings = {"mamba": dict(vocab_size=384, hidden_size=64, num_hidden_layers=2),
                "t5": dict(vocab_size=384, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_heads=4)}.get(kind, sizes)
    getattr(transformers, model)(getattr(transformers, config)(**settings)).save_pretrained(out)
    train_tiny_tokenizer().save_pretrained(out)
    return out


UNOPENABLE = {"bert": ("model_type 'bert'", "bidirectional"), "mamba": ("model_type 'mamba'", "no num_attention_heads"),
              "biogpt": ("model_type 'biogpt'", "no adapter for BioGptForCausalLM"),
              "t5": ("model_type 't5'", "not a causal language model")}


@pytest.fixture()
def no_weights_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Hugging Face model load (even the meta-device check of the weights) fails the test."""
    from transformers import AutoModelForCausalLM

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight", "auto"])
@pytest.mark.parametrize("kind", list(UNOPENABLE))
def test_load_refuses_what_no_backend_opens(kind: str, backend: str, tmp_path: Path, no_weights_read) -> None:
    path = unopenable(kind, tmp_path / kind)
    with pytest.raises(InterpError, match="Llama \\(llama\\)") as err:
        interp.load(path, backend=backend, device="cpu")
    assert all(needle in str(err.value) for needle in UNOPENABLE[kind]), str(err.value)


@pytest.mark.parametrize("argv", [
    ["info", "{base}"],
    ["cache", "{base}", "-p", "{prompts}", "--hook", "blocks.0.hook_resid_pre", "-o", "{out}"],
    ["patch", "{base}", "--task", "{task}", "--out", "{out}"],
    ["directions", "truth", "{base}", "{post}", "--out", "{out}"],
    ["directions", "refusal", "{base}", "{post}", "--out", "{out}"],
    ["knowledge", "{base}", "{post}", "--out", "{out}"],
    ["gradients", "{base}", "--data", "{data}", "--out", "{out}"],
    ["tuco", "{base}", "{post}", "--prompts", "{prompts}", "--out", "{out}"],
    ["induction", "{base}", "--out", "{out}"],
], ids=lambda argv: " ".join(argv[:2]).replace(" {base}", ""))
def test_every_command_refuses_bert_before_loading(argv: list[str], tmp_path: Path, capsys, no_weights_read) -> None:
    """A BERT saved as BertLMHeadModel: one line naming the model type, why, and the native families; exit 2;
    nothing outside --out written and no model loaded, not even to check its weights."""
    from clitools import assert_unchanged, tree_state
    from interp.dynamics.gradients.data import write_pairs

    base, post = unopenable("bert", tmp_path / "in" / "base"), unopenable("bert", tmp_path / "in" / "post")
    (tmp_path / "in" / "prompts.txt").write_text("the cat sees\n")
    (tmp_path / "in" / "task.jsonl").write_text("".join(json.dumps(line) + "\n" for line in TASK))
    values = {"base": base, "post": post, "prompts": tmp_path / "in" / "prompts.txt", "out": tmp_path / "out",
              "task": tmp_path / "in" / "task.jsonl", "data": write_pairs([("the cat", "sees")], tmp_path / "in" / "d")}
    before = tree_state(tmp_path)
    assert_user_error(run([a.format(**values) for a in argv], capsys), *UNOPENABLE["bert"], "GPT-2 (gpt2)")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert_unchanged(tmp_path, before, tmp_path / "out")
