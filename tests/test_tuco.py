"""TuCo (Nuti et al. 2025): the exact PTC/FTC decomposition, the score, FTC scaling, generation and `interp tuco`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp.errors import InterpError
from interp.data.prompts import read_prompts, write_prompts
from interp.base_vs_post.tuco import (ScaledPair, alpha_sweep, auc, check_prompts, encode_left_padded, layer_alphas,
                                    tuco, tuco_texts)
from interp.models.native import NativeTransformer

PROMPTS = ["the cat sees the moon.", "a dog", "my friend likes a red house. the teacher calls",
           "the river finds some bread", "one bird paints the door. a child remembers the old man."]


def _hf(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager", dtype=torch.float32).eval()


def _fine_tune(base: Path, out: Path, blocks_only: bool, seed: int = 1) -> Path:
    """A stand-in fine-tune: the base checkpoint with its block weights (and optionally everything) perturbed."""
    model = _hf(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not blocks_only or ".layers." in name or ".h." in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pair_dirs(tiny_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Llama base, a general fine-tune (embedding changed too) and a blocks-only fine-tune."""
    base = tiny_dir("llama")
    root = tmp_path_factory.mktemp("tuco")
    return {"base": base, "ft": _fine_tune(base, root / "ft", blocks_only=False),
            "ft_blocks": _fine_tune(base, root / "ft_blocks", blocks_only=True)}


@pytest.fixture(scope="module")
def models(pair_dirs: dict[str, Path]) -> dict[str, NativeTransformer]:
    return {name: NativeTransformer.from_pretrained(path) for name, path in pair_dirs.items()}


@pytest.fixture(scope="module")
def tokenizer(pair_dirs: dict[str, Path]):
    return AutoTokenizer.from_pretrained(str(pair_dirs["base"]))


def _tokens(tokenizer, prompts=PROMPTS[:3]) -> tuple[torch.Tensor, torch.Tensor]:
    return encode_left_padded(tokenizer, prompts)


def test_tuco_of_a_model_with_itself_is_zero(pair_dirs, models, tokenizer) -> None:
    same = NativeTransformer.from_pretrained(pair_dirs["ft"])
    res = tuco(models["ft"], same, *_tokens(tokenizer))
    assert torch.equal(res.tuco, torch.zeros(3)) and torch.equal(res.output_co, torch.zeros(3))
    assert bool((res.ptc > 0).all()) and torch.equal(res.ftc, torch.zeros_like(res.ftc))


def test_alpha_one_reproduces_finetuned_logits(pair_dirs, models, tokenizer) -> None:
    tokens, mask = _tokens(tokenizer)
    expected = _hf(pair_dirs["ft"])(tokens, attention_mask=mask).logits  # Hugging Face, the independent oracle
    got = ScaledPair(models["base"], models["ft"], 1.0)(tokens, mask)
    real = mask.bool()
    assert (got - expected)[real].abs().max() < 1e-5
    # and the fine-tuned stream differs from the base one, so the check has teeth
    assert (_hf(pair_dirs["base"])(tokens, attention_mask=mask).logits - expected)[real].abs().max() > 1e-2


def test_alpha_zero_reproduces_pretrained_logits_when_only_blocks_differ(pair_dirs, models, tokenizer) -> None:
    tokens, mask = _tokens(tokenizer)
    expected = _hf(pair_dirs["base"])(tokens, attention_mask=mask).logits
    got = ScaledPair(models["base"], models["ft_blocks"], 0.0)(tokens, mask)
    assert (got - expected)[mask.bool()].abs().max() < 1e-5


def test_per_layer_alpha_equals_a_model_mixing_the_two_stacks(pair_dirs, models, tokenizer) -> None:
    """alpha = (1, 0): block 0 of the fine-tune, then block 1 of the base; oracle = a Hugging Face hybrid."""
    hybrid = _hf(pair_dirs["base"])
    ft_state = _hf(pair_dirs["ft_blocks"]).state_dict()
    hybrid.load_state_dict({k: ft_state[k] if k.startswith("model.layers.0.") else v
                            for k, v in hybrid.state_dict().items()})
    tokens, mask = _tokens(tokenizer)
    got = ScaledPair(models["base"], models["ft_blocks"], [1.0, 0.0])(tokens, mask)
    assert (got - hybrid(tokens, attention_mask=mask).logits)[mask.bool()].abs().max() < 1e-5


def test_alpha_extrapolates_linearly_in_the_first_block(models, tokenizer) -> None:
    """With one layer's FTC scaled, x_1 = x_0 + PTC_0 + alpha FTC_0 exactly: check at alpha = 1.25 via hooks."""
    tokens, mask = _tokens(tokenizer)
    pt, ft = models["base"], models["ft"]
    positions = ft.positions(tokens, attention_mask=mask)
    x0 = ft.embed(tokens, positions)
    rope = ft.rope(x0, positions)
    out_pt = pt.blocks[0](x0, positions, rope, None, mask)[0]
    out_ft = ft.blocks[0](x0, positions, rope, None, mask)[0]
    seen = {}
    with ft.hooks([("blocks.1.hook_resid_pre", lambda x, name: seen.setdefault("x1", x))]):
        ScaledPair(pt, ft, [1.25, 1.0])(tokens, mask)
    expected = x0 + (out_pt - x0) + 1.25 * (out_ft - out_pt)
    assert (seen["x1"] - expected).abs().max() < 1e-5


def test_greedy_generation_under_alpha(pair_dirs, models, tokenizer) -> None:
    pt, ft = models["base"], models["ft"]
    tokens, mask = _tokens(tokenizer, PROMPTS[:1])
    # alpha = 1 is the fine-tuned model: Hugging Face greedy decoding is the oracle
    hf_new = _hf(pair_dirs["ft"]).generate(tokens, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                           eos_token_id=None, pad_token_id=tokenizer.pad_token_id)[:, tokens.shape[1]:]
    assert torch.equal(ScaledPair(pt, ft, 1.0).generate(tokens, 6), hf_new)
    # alpha = 0.5 with the per-model key/value caches == argmax over full re-computation, one token at a time
    scaled = ScaledPair(pt, ft, 0.5)
    seq = tokens
    for _ in range(6):
        seq = torch.cat((seq, scaled(seq)[:, -1:].argmax(-1)), dim=1)
    assert torch.equal(scaled.generate(tokens, 6), seq[:, tokens.shape[1]:])
    # a left-padded batch generates what each prompt generates alone
    batch, bmask = _tokens(tokenizer, PROMPTS[:3])
    together = scaled.generate(batch, 5, attention_mask=bmask)
    for row, prompt in enumerate(PROMPTS[:3]):
        alone = scaled.generate(*_tokens(tokenizer, [prompt])[:1], 5)
        assert torch.equal(together[row:row + 1], alone)


def test_tuco_is_the_l1_norm_of_summed_last_token_components(models, tokenizer) -> None:
    """Hand-built blocks: block l of each model adds a fixed vector; TuCo computed by hand from those vectors."""
    pt, ft = models["base"], models["ft"]
    tokens, mask = _tokens(tokenizer, PROMPTS[:1])
    n, d = tokens.shape[1], pt.cfg.d_model
    # per layer: (PTC at the last token, f_FT at the last token); other positions get large junk
    ptc_last = [{0: 3.0}, {0: -1.0}]
    ftc_last = [{0: 1.0, 1: -2.0}, {0: -1.0, 1: 2.0, 2: 4.0}]

    def adds(layer: int, which: str) -> torch.Tensor:
        delta = torch.full((1, n, d), 50.0 * (layer + 1))
        delta[0, -1] = 0.0
        for i, v in ptc_last[layer].items():
            delta[0, -1, i] += v
        if which == "ft":
            for i, v in ftc_last[layer].items():
                delta[0, -1, i] += v
            delta[0, :-1] += 7.0
        return delta

    def hooks(which: str):
        seen = {}
        out = []
        for layer in range(2):
            out.append((f"blocks.{layer}.hook_resid_pre", lambda x, name: seen.__setitem__(name, x)))
            out.append((f"blocks.{layer}.hook_resid_post", lambda x, name, layer=layer:
                        seen[f"blocks.{layer}.hook_resid_pre"] + adds(layer, which)))
        return out

    with pt.hooks(hooks("pt")), ft.hooks(hooks("ft")):
        res = tuco(pt, ft, tokens, mask)
    # by hand: sum PTC = (2, 0, 0) -> L1 2; sum FTC = (0, 0, 4) -> L1 4; TuCo = 4 / (2 + 4)
    assert res.tuco.item() == pytest.approx(2 / 3, abs=1e-6)
    assert res.ptc[0].tolist() == pytest.approx([3.0, 2.0]) and res.ftc[0].tolist() == pytest.approx([3.0, 4.0])
    assert res.tuco_by_layer[0].tolist() == pytest.approx([0.5, 4 / 6])


def test_tuco_matches_a_hook_oracle_on_real_models(models, tokenizer) -> None:
    """Oracle: the fine-tuned forward's residual stream (hooks), and the base model's block l fed x_l by a hook."""
    pt, ft = models["base"], models["ft"]
    tokens, mask = _tokens(tokenizer)
    stream = {}
    with ft.hooks([(f"blocks.{l}.hook_resid_{w}", lambda x, name: stream.__setitem__(name, x))
                   for l in range(2) for w in ("pre", "post")]):
        ft(tokens, mask)
    ptc_sum, ftc_sum = 0.0, 0.0
    for layer in range(2):
        x_l = stream[f"blocks.{layer}.hook_resid_pre"]
        got = {}
        with pt.hooks([(f"blocks.{layer}.hook_resid_pre", lambda x, name: x_l),
                       (f"blocks.{layer}.hook_resid_post", lambda x, name: got.setdefault("post", x))]):
            pt(tokens, mask)
        ptc = got["post"] - x_l
        ptc_sum = ptc_sum + ptc[:, -1]
        ftc_sum = ftc_sum + (stream[f"blocks.{layer}.hook_resid_post"] - x_l - ptc)[:, -1]
    p, f = ptc_sum.abs().sum(-1), ftc_sum.abs().sum(-1)
    res = tuco(pt, ft, tokens, mask)
    assert torch.allclose(res.tuco, f / (p + f), atol=1e-5)
    assert 0.0 < float(res.tuco.min()) and float(res.tuco.max()) < 1.0
    # OutputCo: final states of each model's own forward
    x_pt = {}
    with pt.hooks([("blocks.1.hook_resid_post", lambda x, name: x_pt.setdefault("x", x))]):
        pt(tokens, mask)
    diff = (stream["blocks.1.hook_resid_post"] - x_pt["x"])[:, -1].abs().sum(-1)
    assert torch.allclose(res.output_co, diff / (x_pt["x"][:, -1].abs().sum(-1) + diff), atol=1e-5)


def test_batched_tuco_equals_one_prompt_at_a_time(models, tokenizer) -> None:
    pt, ft = models["base"], models["ft"]
    batched = tuco_texts(pt, ft, tokenizer, PROMPTS, batch_size=3, progress=False)
    for i, prompt in enumerate(PROMPTS):
        alone = tuco(pt, ft, *encode_left_padded(tokenizer, [prompt]))
        assert torch.allclose(batched.tuco[i], alone.tuco[0], atol=1e-5)
        assert torch.allclose(batched.ptc[i], alone.ptc[0], atol=1e-4)
        assert torch.allclose(batched.ftc[i], alone.ftc[0], atol=1e-4)
        assert torch.allclose(batched.output_co[i], alone.output_co[0], atol=1e-5)


def test_auc_is_the_pairwise_win_rate() -> None:
    a, b = torch.tensor([0.9, 0.5, 0.5, 0.2]), torch.tensor([0.5, 0.1, 0.3])
    wins = sum(float(x > y) + 0.5 * float(x == y) for x in a for y in b)
    assert auc(a, b) == pytest.approx(wins / 12) and auc(a, b) != pytest.approx(0.5)


def test_bad_inputs_raise_interp_errors(tiny_dir, models, tokenizer) -> None:
    with pytest.raises(InterpError, match="not one architecture"):
        tuco(models["base"], NativeTransformer.from_pretrained(tiny_dir("gpt2")), *_tokens(tokenizer))
    with pytest.raises(InterpError, match="3 values but the models have 2 layers"):
        layer_alphas([1.0, 0.5, 0.0], 2)
    tokens, mask = _tokens(tokenizer)
    with pytest.raises(InterpError, match="left-pad"):
        tuco(models["base"], models["ft"], tokens.flip(1), mask.flip(1))


def test_prompt_files(tmp_path: Path) -> None:
    prompts = ["User: hi\nAssistant:", "plain"]
    assert read_prompts(write_prompts(tmp_path / "p.jsonl", prompts)) == prompts
    (tmp_path / "p.txt").write_text("one prompt\n\nanother one\n")
    assert read_prompts(tmp_path / "p.txt") == ["one prompt", "another one"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": "no"}\n')
    with pytest.raises(InterpError, match=r"bad.jsonl:2"):
        read_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(InterpError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")


def test_cli_writes_tuco_results(pair_dirs, models, tokenizer, tmp_path: Path) -> None:
    from interp.cli import main
    from interp.results import read_results

    a, b = PROMPTS[:3], PROMPTS[3:]
    out = tmp_path / "out"
    files = [str(write_prompts(tmp_path / f"{name}.jsonl", texts)) for name, texts in (("a", a), ("b", b))]
    with pytest.raises(SystemExit) as done:
        main(["tuco", str(pair_dirs["base"]), str(pair_dirs["ft"]), "--prompts", files[0], "--prompts-b", files[1],
              "--alpha", "0", "--alpha", "1,0.5", "--alpha", "1", "--behaviour-prefix", "the",
              "--max-new-tokens", "3", "--batch-size", "2", "--no-bos", "--out", str(out)])
    assert done.value.code == 0
    res = read_results(out)
    assert res.summary["tokenization"]["bos"] is False and res.summary["bos_token"] is None
    expected_a = tuco(models["base"], models["ft"], *encode_left_padded(tokenizer, a))
    assert torch.allclose(res.tensors["tuco"], expected_a.tuco, atol=1e-5)
    assert res.tensors["tuco_b"].shape == (2,)
    assert res.tensors["ptc"].shape == (3, 2) and res.tensors["ftc_b"].shape == (2, 2)
    assert res.tensors["alphas"].tolist() == [[0.0, 0.0], [1.0, 0.5], [1.0, 1.0]]
    wins = sum(float(x > y) + 0.5 * float(x == y) for x in res.tensors["tuco"] for y in res.tensors["tuco_b"])
    assert res.summary["auc_tuco_a_vs_b"] == pytest.approx(wins / 6)
    # behaviour at alpha = 1: the fine-tuned model's own greedy continuations (NativeTransformer.generate)
    ft_new = [tokenizer.decode(models["ft"].generate(*encode_left_padded(tokenizer, [p])[:1], 3)[0].tolist(),
                               skip_special_tokens=True) for p in a]
    assert res.tensors["behaviour"][2].item() == pytest.approx(sum(t.strip().startswith("the") for t in ft_new) / 3)
    assert res.tensors["kl"][2].abs().max() < 1e-5 and res.tensors["kl"][0].min() > 0
    assert "AUC" in (out / "report.html").read_text()


def test_cli_starts_every_prompt_with_bos_by_default(pair_dirs, models, tokenizer, tmp_path: Path) -> None:
    """The toolkit's BOS default (`--bos`): TuCo of the prompts with the tokenizer's BOS first, recorded as such."""
    from interp.analyses import run as run_analysis

    prompts = write_prompts(tmp_path / "a.jsonl", PROMPTS[:3])
    res = run_analysis("tuco", base=pair_dirs["base"], ft=pair_dirs["ft"], prompts=prompts, out=tmp_path / "out",
                       alphas=("1",), max_new_tokens=1)
    expected = tuco(models["base"], models["ft"], *encode_left_padded(tokenizer, PROMPTS[:3], prepend_bos=True))
    assert torch.allclose(res.tensors["tuco"], expected.tuco, atol=1e-5)
    assert res.summary["tokenization"] == {"bos": True, "padding": "left"}
    assert res.summary["bos"] is True and res.summary["bos_token"] == tokenizer.bos_token


def test_cli_rejects_a_wrong_length_alpha(pair_dirs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from interp.cli import main

    prompts = write_prompts(tmp_path / "a.jsonl", PROMPTS[:2])
    with pytest.raises(SystemExit) as done:
        main(["tuco", str(pair_dirs["base"]), str(pair_dirs["ft"]), "--prompts", str(prompts),
              "--alpha", "1,1,1", "--out", str(tmp_path / "out")])
    assert done.value.code == 2 and "3 values but the models have 2 layers" in capsys.readouterr().err


def test_non_finite_tuco_names_the_prompt(pair_dirs, tokenizer) -> None:
    """Blocks that add nothing to the last token make TuCo 0 / 0: an error naming the prompt, never a NaN."""
    silent = NativeTransformer.from_pretrained(pair_dirs["base"])
    with torch.no_grad():
        for block in silent.blocks:
            block.attn.W_O.zero_()
            block.mlp.W_out.zero_()
    with pytest.raises(InterpError, match=r"p.jsonl: the TuCo of prompt 1 \('the cat sees the moon.'\) is NaN"):
        tuco_texts(silent, silent, tokenizer, PROMPTS[:2], progress=False, source="p.jsonl")


def test_an_overflowing_alpha_names_the_alpha_and_prompt(models, tokenizer) -> None:
    with pytest.raises(InterpError, match=r"KL at alpha \[1e\+38, 1e\+38\] of prompt 1 .* NaN or infinite"):
        alpha_sweep(models["base"], models["ft"], tokenizer, PROMPTS[:2], [1.0, 1e38], max_new_tokens=1,
                    progress=False)
    for alpha in (1e39, float("nan"), [1.0, float("-inf")]):
        with pytest.raises(InterpError, match="not a finite float32 number"):
            layer_alphas(alpha, 2)


def test_prompts_are_checked_against_the_context_with_the_generated_tokens(tokenizer) -> None:
    lengths = [len(tokenizer.encode(p, add_special_tokens=False)) for p in PROMPTS]
    longest = max(range(len(PROMPTS)), key=lengths.__getitem__)
    n_ctx = lengths[longest] + 4
    check_prompts(tokenizer, PROMPTS, n_ctx=n_ctx, new_tokens=4, prepend_bos=False)  # fits exactly
    with pytest.raises(InterpError, match=f"f.txt: prompt {longest + 1} .* is {n_ctx - 3} tokens \\(\\+ 4 answer or generated"):
        check_prompts(tokenizer, PROMPTS, n_ctx=n_ctx, new_tokens=4, prepend_bos=True, source="f.txt")
    with pytest.raises(InterpError, match="prompt 2 .* encodes to no tokens"):
        check_prompts(tokenizer, ["a", "", "b"], n_ctx=99, new_tokens=1, prepend_bos=False)
