"""`interp diff` (token-level diffing, Minder et al. 2025's activation-difference lens) against independent oracles:
KL by `torch.nn.functional.kl_div` and activation-difference norms from Hugging Face eager forwards of two tiny random
checkpoints, one prompt at a time (so padding cannot leak in); the lens on a hand-built pair whose residual streams
differ by exactly one known vector; the tuned-lens reading against the logit lens (identity translators: equal) and
Hugging Face (translator l+1 for layer l, the last layer passed through); hostile inputs refused before any model is
loaded; the full zoo's base-vs-chat lens, logit and tuned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from clitools import assert_user_error, edit_weights, run
from interp.analyses import run as run_analysis
from interp.data.tokens import encode
from interp.loading import load_tokenizer
from interp.testing import tiny_checkpoint

ADL_TEXT = ["x y z w", "lorem ipsum dolor", "q"]  # "q": shorter than the positions read
PROMPTS = ["the cat sat on the mat", "hello", "a b c d e f g h i j", "one two"]  # different lengths: padding


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny random Llama checkpoints of one tokenizer (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("diff_pair")
    return tiny_checkpoint("llama", root / "base", seed=0), tiny_checkpoint("llama", root / "post", seed=1)


def prompt_file(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(p + "\n" for p in prompts))
    return path


def hf_forward(path: Path, ids: list[int]) -> tuple[Any, list[torch.Tensor]]:
    """Hugging Face eager forward of one unpadded prompt: (output, every decoder layer's output [pos, d_model]).

    Hugging Face's `hidden_states` are the embeddings, then each layer's output, except that the last entry is taken
    after the final norm; that one layer's output is read by a forward hook instead."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    last: list[torch.Tensor] = []
    handle = model.model.layers[-1].register_forward_hook(lambda _m, _i, out: last.append(out[0] if isinstance(
        out, tuple) else out))
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    handle.remove()
    return out, [h[0] for h in out.hidden_states[1:-1]] + [last[0][0]]


def test_kl_norms_and_predictions_match_hugging_face(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, post = tiny_pair
    res = run_analysis("diff", base=base, post=post, prompts=prompt_file(tmp_path / "p.txt", PROMPTS),
                       out=tmp_path / "out")
    t, tokenizer = res.tensors, load_tokenizer(base)
    every = {d: [] for d in ("base||post", "post||base")}
    for i, text in enumerate(PROMPTS):
        ids = encode(tokenizer, text)
        n = len(ids)
        (hb, resid_b), (hp, resid_p) = hf_forward(base, ids), hf_forward(post, ids)
        log_b, log_p = hb.logits[0].log_softmax(-1), hp.logits[0].log_softmax(-1)
        kl_bp = F.kl_div(log_p, log_b, log_target=True, reduction="none").sum(-1)  # KL(base || post)
        kl_pb = F.kl_div(log_b, log_p, log_target=True, reduction="none").sum(-1)
        torch.testing.assert_close(t["kl"][0, i, :n], kl_bp, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(t["kl"][1, i, :n], kl_pb, atol=1e-5, rtol=1e-4)
        every["base||post"] += kl_bp.tolist()
        every["post||base"] += kl_pb.tolist()
        oracle = torch.linalg.vector_norm(torch.stack(resid_p) - torch.stack(resid_b), dim=-1)
        torch.testing.assert_close(t["act_diff_norm"][:, i, :n], oracle, atol=1e-4, rtol=1e-4)
        assert t["pred_base"][i, :n].tolist() == hb.logits[0].argmax(-1).tolist()
        assert t["pred_post"][i, :n].tolist() == hp.logits[0].argmax(-1).tolist()
        assert t["tokens"][i, :n].tolist() == ids and t["mask"][i].tolist() == [1] * n + [0] * (t["mask"].shape[1] - n)
        for padded in (t["kl"][:, i, n:], t["act_diff_norm"][:, i, n:]):  # padding holds nothing
            assert not padded.any()
    for d, values in every.items():  # the means count real tokens only
        assert res.summary["mean_kl"][d] == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert res.summary["n_tokens"] == sum(len(encode(tokenizer, p)) for p in PROMPTS)
    rows = res.summary["top_changed"]
    jeffreys = [r["kl_base||post"] + r["kl_post||base"] for r in rows]
    assert jeffreys == sorted(jeffreys, reverse=True) and len(rows) == 10
    assert max(jeffreys) == pytest.approx(float(t["kl"].sum(0).max()), rel=1e-6)


def test_kl_of_a_model_with_itself_is_exactly_zero(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = tiny_pair
    res = run_analysis("diff", base=base, post=base, prompts=prompt_file(tmp_path / "p.txt", PROMPTS),
                       out=tmp_path / "out")
    assert not res.tensors["kl"].any() and not res.tensors["act_diff_norm"].any() and not res.tensors["adl_delta"].any()
    assert res.summary["mean_kl"] == {"base||post": 0.0, "post||base": 0.0}


def test_no_bos_is_what_the_models_see_and_is_recorded(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, post = tiny_pair
    res = run_analysis("diff", base=base, post=post, prompts=prompt_file(tmp_path / "p.txt", PROMPTS), bos=False,
                       adl_positions=1, out=tmp_path / "out")
    tokenizer = load_tokenizer(base)
    ids = encode(tokenizer, PROMPTS[0], False)
    assert res.tensors["tokens"][0, :len(ids)].tolist() == ids and int(res.tensors["mask"][0].sum()) == len(ids)
    assert res.summary["tokenization"] == {"bos": False, "padding": "right"}
    assert tokenizer.bos_token_id not in res.tensors["tokens"][res.tensors["mask"] == 1].tolist()


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_hook_backends_give_the_native_numbers(backend: str, tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, post = tiny_pair
    prompts = prompt_file(tmp_path / "p.txt", PROMPTS)
    native, hooked = (run_analysis("diff", base=base, post=post, prompts=prompts, backend=b, out=tmp_path / b)
                      for b in ("native", backend))
    assert hooked.summary["backend"] == backend
    for name in ("kl", "act_diff_norm", "adl_delta", "adl_top_logits"):
        torch.testing.assert_close(hooked.tensors[name], native.tensors[name], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.Tensor]:
    """(base, post, v): POST is BASE with `v` added to the last layer's MLP output bias, so every position's last
    resid_post differs by exactly v and no earlier one differs at all."""
    root = tmp_path_factory.mktemp("diff_shift")
    base = tiny_checkpoint("llama", root / "base", seed=0, mlp_bias=True)
    post = Path(shutil.copytree(base, root / "post"))
    v = torch.randn(64, generator=torch.Generator().manual_seed(3)) * 2

    def shift(weights: dict[str, torch.Tensor]) -> None:
        weights["model.layers.1.mlp.down_proj.bias"] += v

    edit_weights(post, shift)
    return base, post, v


def test_adl_reads_a_known_added_direction(shifted_pair: tuple[Path, Path, torch.Tensor], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    base, post, v = shifted_pair
    res = run_analysis("diff", base=base, post=post, prompts=prompt_file(tmp_path / "p.txt", PROMPTS),
                       adl_text=prompt_file(tmp_path / "adl.txt", ADL_TEXT),
                       adl_positions=3, top_k=5, out=tmp_path / "out")
    t = res.tensors
    assert t["adl_delta"].shape == (2, 4, 64)  # 3 positions and their mean
    assert not t["adl_delta"][0].any()
    torch.testing.assert_close(t["adl_delta"][1], v.expand(4, 64), atol=1e-5, rtol=0)
    lengths = [len(encode(load_tokenizer(base), text)) for text in ADL_TEXT]
    assert res.summary["adl_texts_per_position"] == [sum(n > j for n in lengths) for j in range(3)]
    hf, tok = AutoModelForCausalLM.from_pretrained(post, attn_implementation="eager").eval(), load_tokenizer(post)
    with torch.no_grad():
        logits = hf.lm_head(hf.model.norm(v))
    never_next = {tok.bos_token_id, tok.pad_token_id, tok.unk_token_id} - {None, tok.eos_token_id}
    assert never_next and res.summary["adl_left_out"] == [tok.decode([i]) for i in sorted(never_next)]
    logits[sorted(never_next)] = -torch.inf
    oracle = logits.topk(5)
    assert t["adl_top_ids"][1].tolist() == [oracle.indices.tolist()] * 4
    torch.testing.assert_close(t["adl_top_logits"][1], oracle.values.expand(4, 5), atol=1e-4, rtol=1e-4)
    token = tok.decode([int(oracle.indices[0])])
    assert all(tokens[0] == token for tokens in res.summary["adl_top_tokens"]["L1"].values())


def test_untrained_tuned_lens_reads_exactly_what_the_logit_lens_reads(tiny_pair: tuple[Path, Path]) -> None:
    """Identity translators and zero biases (the tuned lens before training) leave every layer's reading unchanged."""
    import interp
    from interp.analyses.diff import lens_reading
    from interp.base_vs_post.diffing import logit_lens, tuned_lens
    from interp.dynamics.lenses import TunedLens

    model = interp.load(tiny_pair[1], backend="native")
    delta = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(0))
    logit = lens_reading("adl", logit_lens(model), delta, 7, model.tokenizer)
    tuned = lens_reading("adl", tuned_lens(model, TunedLens(3, 64)), delta, 7, model.tokenizer)
    for name in ("adl_top_ids", "adl_top_logits"):
        assert torch.equal(tuned[0][name], logit[0][name])
    assert tuned[1] == logit[1]


def test_tuned_lens_reads_layer_l_with_translator_l_plus_1(tiny_pair: tuple[Path, Path]) -> None:
    """resid_post of block 0 is the residual stream entering block 1 (translator 1); block 1's, the last, is the final
    entry, read unchanged: against Hugging Face's final norm and lm_head on hand-translated vectors."""
    from transformers import AutoModelForCausalLM

    import interp
    from interp.base_vs_post.diffing import tuned_lens
    from interp.dynamics.lenses import TunedLens

    g = torch.Generator().manual_seed(1)
    lens = TunedLens(2, 64)
    with torch.no_grad():
        lens.weight.copy_(torch.randn(2, 64, 64, generator=g) / 8)
        lens.bias.copy_(torch.randn(2, 64, generator=g))
    resid = torch.randn(2, 3, 64, generator=g)
    read = tuned_lens(interp.load(tiny_pair[1], backend="native"), lens)
    hf = AutoModelForCausalLM.from_pretrained(tiny_pair[1], attn_implementation="eager").eval()
    with torch.no_grad():
        oracle = [hf.lm_head(hf.model.norm(resid[0] @ lens.weight[1] + lens.bias[1])),
                  hf.lm_head(hf.model.norm(resid[1]))]
        for layer in range(2):
            torch.testing.assert_close(read(layer, resid[layer]), oracle[layer], atol=1e-4, rtol=1e-4)


def test_tuned_adl_is_written_beside_the_logit_lens_and_can_be_turned_off(tiny_pair: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    base, post = tiny_pair
    prompts, adl = prompt_file(tmp_path / "p.txt", PROMPTS), prompt_file(tmp_path / "adl.txt", ADL_TEXT + PROMPTS)
    res = run_analysis("diff", base=base, post=post, prompts=prompts, adl_text=adl, adl_positions=3, top_k=5,
                       adl_tuned_steps=40, out=tmp_path / "on")
    t, s = res.tensors, res.summary
    assert t["adl_tuned_top_ids"].shape == t["adl_top_ids"].shape == (2, 4, 5) and t["adl_tuned_loss"].shape == (40,)
    assert float(t["adl_tuned_loss"][-1]) < float(t["adl_tuned_loss"][0])  # training lowered KL(final || lens)
    n_tokens = sum(len(encode(load_tokenizer(post), x)) for x in ADL_TEXT + PROMPTS)
    assert s["adl_tuned_training"]["trained_on"] == f"{n_tokens} real tokens of the ADL text"
    # the last layer is the final entry, which the tuned lens reads unchanged; the first went through a translator
    assert torch.equal(t["adl_tuned_top_ids"][-1], t["adl_top_ids"][-1])
    assert torch.equal(t["adl_tuned_top_logits"][-1], t["adl_top_logits"][-1])
    assert not torch.allclose(t["adl_tuned_top_logits"][0], t["adl_top_logits"][0])
    assert s["adl_tuned_top_tokens"]["L1"] == s["adl_top_tokens"]["L1"]
    off = run_analysis("diff", base=base, post=post, prompts=prompts, adl_text=adl, adl_positions=3, top_k=5,
                       adl_tuned_steps=0, out=tmp_path / "off")
    assert not any(name.startswith("adl_tuned") for name in off.tensors) and "adl_tuned_top_tokens" not in off.summary
    assert off.summary["adl_tuned_skipped"] == "the tuned-lens reading is left out (--adl-tuned-steps 0)"
    assert torch.equal(off.tensors["adl_top_ids"], t["adl_top_ids"])


@pytest.fixture(scope="module")
def other_tokenizer(tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base with two tokens' ids swapped in its tokenizer: same shapes, incompatible tokenizer."""
    copy = Path(shutil.copytree(tiny_pair[0], tmp_path_factory.mktemp("diff_tok") / "ckpt"))
    spec = json.loads((copy / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (copy / "tokenizer.json").write_text(json.dumps(spec))
    return copy


HOSTILE = [
    ("incompatible-tokenizers", ["OTHER", "POST", "--prompts", "W/p.txt"], ["different tokenizer"]),
    ("missing-prompts", ["BASE", "POST", "--prompts", "W/none.txt"], ["none.txt does not exist"]),
    ("empty-prompts", ["BASE", "POST", "--prompts", "W/empty.txt"], ["holds no prompts"]),
    ("missing-adl-text", ["BASE", "POST", "--prompts", "W/p.txt", "--adl-text", "W/none.txt"], ["does not exist"]),
    ("top-k-0", ["BASE", "POST", "--prompts", "W/p.txt", "--top-k", "0"], ["--top-k is 0"]),
    ("adl-positions-0", ["BASE", "POST", "--prompts", "W/p.txt", "--adl-positions", "0"], ["--adl-positions is 0"]),
    ("adl-positions-beyond-text", ["BASE", "POST", "--prompts", "W/p.txt", "--adl-positions", "99"],
     ["--adl-positions is 99"]),
    ("adl-tuned-steps-negative", ["BASE", "POST", "--prompts", "W/p.txt", "--adl-tuned-steps", "-1"],
     ["--adl-tuned-steps is -1"]),
    ("adl-tuned-steps-huge", ["BASE", "POST", "--prompts", "W/p.txt", "--adl-tuned-steps", "100001"],
     ["--adl-tuned-steps is 100001"]),
    ("backend", ["BASE", "POST", "--prompts", "W/p.txt", "--backend", "magic"], ["unknown backend 'magic'"]),
    ("context", ["BASE", "POST", "--prompts", "W/long.txt"], ["context"]),
]


@pytest.mark.parametrize("argv,needles", [pytest.param(a, n, id=name) for name, a, n in HOSTILE])
def test_hostile_inputs_refused_before_loading(argv: list[str], needles: list[str], tiny_pair: tuple[Path, Path],
                                               other_tokenizer: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import interp.analyses.pairs
    import interp.loading

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(interp.analyses.pairs, "load_pair", never)
    monkeypatch.setattr(interp.loading, "load", never)
    prompt_file(tmp_path / "p.txt", PROMPTS)
    (tmp_path / "empty.txt").write_text("\n  \n")
    prompt_file(tmp_path / "long.txt", [" ".join(["word"] * 2000)])
    names = {"BASE": tiny_pair[0], "POST": tiny_pair[1], "OTHER": other_tokenizer}
    args = [str(names[a]) if a in names else str(tmp_path / a[2:]) if a.startswith("W/") else a for a in argv]
    assert_user_error(run(["diff", *args, "--out", tmp_path / "out"], capsys), *needles)
    assert not (tmp_path / "out").exists()


def test_page_shows_what_is_stored(tiny_pair: tuple[Path, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from apptools import explorer

    base, post = tiny_pair
    out = tmp_path / "results" / "diff"
    run_analysis("diff", base=base, post=post, prompts=prompt_file(tmp_path / "p.txt", ["<b>x</b> y", *PROMPTS]),
                 out=out)
    stored = load_file(str(out / "results.safetensors"))
    at = explorer(tmp_path / "results", monkeypatch, out)
    at.selectbox(key="diff_prompt").set_value(2).run()
    at.radio(key="diff_direction").set_value("post||base").run()
    n = int(stored["mask"][2].sum())
    text, norms = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    cells = [v for row in text["data"][0]["z"] for v in row if v is not None]
    assert cells == pytest.approx(stored["kl"][1, 2, :n].tolist(), abs=1e-6)  # one cell per token, its KL
    torch.testing.assert_close(torch.tensor(norms["data"][0]["z"]), stored["act_diff_norm"][:, 2, :n])
    at.selectbox(key="diff_prompt").set_value(0).run()
    text = json.loads(at.get("plotly_chart")[0].proto.spec)
    shown = "".join(t for row in text["data"][0]["text"] for t in row)
    assert "&lt;" in shown and "<b>" not in shown  # the prompt's text is escaped, shown as text
    at.selectbox(key="diff_slot").set_value("pos 0").run()
    assert not at.exception, at.exception
    summary = json.loads((out / "summary.json").read_text())
    tuned = at.dataframe[-1].value  # changed tokens, logit lens, tuned lens
    assert {layer: list(tuned[layer]) for layer in tuned.columns} == {
        layer: by_slot["pos 0"] for layer, by_slot in summary["adl_tuned_top_tokens"].items()}


def test_unpredicted_ids_keep_eos_even_as_the_pad_token() -> None:
    from types import SimpleNamespace

    from interp.base_vs_post.diffing import unpredicted_ids

    assert unpredicted_ids(SimpleNamespace(bos_token_id=0, eos_token_id=1, pad_token_id=1, unk_token_id=None)) == [0]
    assert unpredicted_ids(SimpleNamespace(bos_token_id=5, eos_token_id=1, pad_token_id=2, unk_token_id=3)) == [2, 3, 5]


# --- full zoo: what the base-vs-chat lens reads on unrelated text -------------------------------------------------
@pytest.mark.zoo
def test_zoo_adl_reads_the_chat_models_refusals_from_pretraining_text(zoo: Path, tmp_path: Path) -> None:
    """Measured on the zoo (base step 1800 -> chat step 300, whose last block, final norm and unembedding the chat run
    left frozen; the ADL text is 80 documents drawn like the base's pre-training corpus, as Minder et al. read random
    web text). The logit lens reads "Sorry", "Curses", "hurts", "cannot" among the top 10 of single positions at
    layer 2 and "Curses", "Sorry", "cannot" at the last layer; the tuned lens (250 Adam steps, KL 11.4 -> 3.7) reads
    "I", the refusals' first word, first at layer 2 at positions 1-4 and pooled. The control, more pretraining and no
    chat (base step 700 -> 1800), reads names, cities, professions and numbers: none of those words through the
    logit lens at any layer, no "I" at layer 2 through the tuned lens."""
    from interp.checkpoints import discover
    from interp.data.prompts import write_prompts
    from interp.zoo import data
    from interp.zoo.requests import REFUSALS

    apology = {"Sorry", "Curses", "hurts", "cannot"}
    assert all(any(word in refusal.split() or word + "," in refusal.split() for refusal in REFUSALS) for word in apology)
    base_run = discover(zoo / "base")
    base, chat = base_run[-1].path, discover(zoo / "chat")[-1].path
    before = next(c.path for c in base_run if c.step == 700)
    harmful, harmless = data.refusal_requests("test")
    prompts = write_prompts(tmp_path / "chat.jsonl", [data.chat_prompt(r) for r in harmful[:40] + harmless[:40]])
    text = prompt_file(tmp_path / "text.txt", data.pretraining_text(80, seed=1))

    def reads(b: Path, p: Path, out: str) -> dict[str, dict[str, dict[str, list[str]]]]:
        """{lens: {layer: {slot: top tokens, stripped}}} of the logit ("adl") and the tuned ("adl_tuned") lens."""
        s = run_analysis("diff", base=b, post=p, prompts=prompts, adl_text=text, out=tmp_path / out).summary
        assert s["adl_tuned_training"]["loss_last"] < s["adl_tuned_training"]["loss_first"] / 2
        return {lens: {layer: {slot: [t.strip() for t in tokens] for slot, tokens in by_slot.items()}
                       for layer, by_slot in s[f"{lens}_top_tokens"].items()} for lens in ("adl", "adl_tuned")}

    def words(by_slot: dict[str, list[str]]) -> set[str]:
        return {token for tokens in by_slot.values() for token in tokens}

    chat_reads, control_reads = reads(base, chat, "chat"), reads(before, base, "control")
    logit, tuned = chat_reads["adl"], chat_reads["adl_tuned"]
    layer2, last = list(logit)[2], list(logit)[-1]
    assert len(words(logit[layer2]) & apology) >= 3 and len(words(logit[last]) & apology) >= 2, logit
    assert not any(words(by_slot) & apology for by_slot in control_reads["adl"].values()), control_reads["adl"]
    assert tuned[layer2]["mean pos 0-4"][0] == "I", tuned[layer2]
    assert sum(tokens[0] == "I" for slot, tokens in tuned[layer2].items() if slot.startswith("pos")) >= 3, tuned
    assert "I" not in words(control_reads["adl_tuned"][layer2]), control_reads["adl_tuned"]
