"""`interp attention`: the patterns against Hugging Face's eager attention (`output_attentions=True`), the scores
against what `interp induction scores` writes, rows that sum to 1 and are causal, the padding and BOS policy
recorded, hostile inputs refused before compute, and the explorer page showing exactly the stored numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from clitools import assert_user_error, run
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp.analyses import run as run_analysis
from interp.errors import InterpError
from interp.results import read_results
from interp.testing import tiny_checkpoint

PROMPTS = ["the cat sees the ball", "my friend likes the moon and the cat sees the ball"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-checkpoint Llama run."""
    run_dir = tmp_path_factory.mktemp("attn") / "run"
    for seed, step in enumerate((100, 200)):
        tiny_checkpoint("llama", run_dir / f"step_{step:06d}", seed=seed)
    return run_dir


@pytest.fixture(scope="module")
def written(tiny_run: Path) -> Path:
    """`interp attention` on the tiny run: one --prompt and a prompt file, small probe."""
    (tiny_run.parent / "prompts.txt").write_text(PROMPTS[1] + "\n")
    out = tiny_run.parent / "attention"
    run_analysis("attention", run=tiny_run, prompt=(PROMPTS[0],), prompts=tiny_run.parent / "prompts.txt", out=out,
                 seq_len=6, batch=2)
    return out


def hf_attentions(ckpt: Path, text: str, bos: bool = True) -> torch.Tensor:
    """Hugging Face's eager attention weights [layer, head, query, key] of `text`, tokenised independently."""
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id, *ids] if bos else ids
    model = AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        attentions = model(torch.tensor([ids]), output_attentions=True).attentions
    return torch.stack([a[0] for a in attentions])


def test_patterns_equal_hugging_face_eager_attention(written: Path, tiny_run: Path) -> None:
    res = read_results(written)
    patterns = res.tensors["patterns"]
    assert res.summary["tensors"]["patterns"]["axes"] == ["checkpoint", "prompt", "layer", "head", "query", "key"]
    assert res.summary["tensors"]["patterns"]["ticks"]["checkpoint"] == [100, 200]
    assert res.summary["prompts"] == PROMPTS and res.summary["backend"] == "native"
    for c, ckpt in enumerate(sorted(tiny_run.iterdir())):
        for p, text in enumerate(PROMPTS):
            expected = hf_attentions(ckpt, text)
            n = expected.shape[-1]
            assert int(res.tensors["prompt_lengths"][p]) == n == len(res.summary["tokens"][p])
            torch.testing.assert_close(patterns[c, p, :, :, :n, :n], expected, atol=1e-5, rtol=0)
            assert not patterns[c, p, :, :, n:].any() and not patterns[c, p, :, :, :, n:].any()  # zero past the end
    assert res.summary["tokens"][0][0] == AutoTokenizer.from_pretrained(tiny_run / "step_000100").bos_token


def test_rows_sum_to_one_and_are_causal(written: Path) -> None:
    res = read_results(written)
    for p, n in enumerate(res.tensors["prompt_lengths"].tolist()):
        pattern = res.tensors["patterns"][:, p, :, :, :n, :n]
        torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]), atol=1e-5, rtol=0)
        assert not pattern.triu(1).any() and bool((pattern >= 0).all())


def test_policy_and_inputs_recorded(written: Path) -> None:
    summary = read_results(written).summary
    assert summary["tokenization"] == {"bos": True, "padding": None}
    assert "no padding" in summary["pattern_padding"]
    assert [i["role"] for i in summary["inputs"]] == ["checkpoint", "checkpoint", "prompts"]


def test_scores_equal_interp_induction_scores(written: Path, tiny_run: Path) -> None:
    induction = run_analysis("induction", run=tiny_run, out=tiny_run.parent / "induction", seq_len=6, batch=2)
    res = read_results(written)
    assert res.summary["scores"] == ["induction", "previous_token"]
    for name in res.summary["scores"]:
        torch.testing.assert_close(res.tensors[name], induction.tensors[name], atol=0, rtol=0)
        assert res.summary["tensors"][name]["axes"] == ["checkpoint", "layer", "head"]


def test_layers_and_no_bos(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = tiny_run / "step_000200"
    res = run_analysis("attention", run=ckpt, prompt=(PROMPTS[0],), layers="1", bos=False, out=tmp_path / "a",
                       seq_len=6, batch=2)
    expected = hf_attentions(ckpt, PROMPTS[0], bos=False)
    assert res.summary["layers"] == [1] and res.summary["tokenization"]["bos"] is False
    assert res.summary["tensors"]["patterns"]["ticks"]["layer"] == [1]
    torch.testing.assert_close(res.tensors["patterns"][0, 0, 0], expected[1], atol=1e-5, rtol=0)
    full = run_analysis("induction", run=ckpt, out=tmp_path / "i", seq_len=6, batch=2)
    torch.testing.assert_close(res.tensors["induction"][0], full.tensors["induction"][0, 1:2])


@pytest.mark.parametrize("extra, needles", [
    (["--prompt", ""], ["prompt 1 is empty"]),
    (["--prompt", "   "], ["prompt 1 is empty"]),
    ([], ["no prompt was given"]),
    (["--prompt", "the cat " * 200], ["longer than the model's context"]),
    (["--prompt", "the cat", "--layers", "2"], ["--layers is 2"]),
    (["--prompt", "the cat", "--layers", "-1"], ["--layers is -1"]),
    (["--prompt", "the cat", "--seq-len", "0"], ["--seq-len"]),
    (["--prompt", "the cat", "--batch", "0"], ["--batch"]),
])
def test_hostile_inputs_refused_before_compute(extra: list[str], needles: list[str], tiny_run: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import interp.analyses.attention as unit

    def never(*args: object) -> None:
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(unit, "attend_checkpoint", never)
    out = tmp_path / "out"
    assert_user_error(run(["attention", tiny_run, "--out", out, *extra], capsys), *needles)
    assert not out.exists()


def test_a_family_without_native_forward_reads_patterns_on_the_bridge(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from test_any_model import build

    ckpt = build("mixtral", tmp_path / "mixtral", 0)
    code, _, err = run(["attention", ckpt, "--prompt", PROMPTS[0], "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    res = read_results(tmp_path / "out")
    assert res.summary["backend"] == "transformer_lens" and res.summary["scores"] == []
    torch.testing.assert_close(res.tensors["patterns"][0, 0], hf_attentions(ckpt, PROMPTS[0]), atol=1e-5, rtol=0)


def test_a_bridge_without_pattern_hooks_is_refused_before_the_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import interp.analyses.attention as unit
    from test_any_model import build

    monkeypatch.setattr(unit, "attend_checkpoint", None)  # the sweep must not start
    ckpt = build("gptj", tmp_path / "gptj", 0)
    result = run(["attention", ckpt, "--prompt", PROMPTS[0], "--out", tmp_path / "out"], capsys)
    assert_user_error(result, "has no hook blocks.0.attn.hook_pattern on the transformer_lens backend",
                      after_progress=True)  # after the note that names the backend
    assert not (tmp_path / "out").exists()


def test_patterns_too_large_refused(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import interp.analyses.attention as unit

    # 4 bytes x 2 checkpoints x 2 layers x 4 heads x 6 x 6 positions (BOS + 5 tokens), one byte too many
    monkeypatch.setattr(unit, "MAX_PATTERN_BYTES", 4 * 2 * 2 * 4 * 6 * 6 - 1)
    assert_user_error(run(["attention", tiny_run, "--prompt", "the cat sees the ball", "--out", tmp_path / "o"],
                          capsys), "GiB", "--layers")
    assert not (tmp_path / "o").exists()


def test_missing_prompt_file_refused(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(run(["attention", tiny_run, "--prompts", tmp_path / "none.txt", "--out", tmp_path / "o"],
                          capsys), "does not exist")


def test_page_shows_the_stored_pattern_and_scores(written: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from apptools import explorer

    at = explorer(written.parent, monkeypatch, written)
    assert at.header[0].value == "Attention patterns" and not at.error
    res = read_results(written)
    t = res.tensors
    at.select_slider(key="attn_ckpt").set_value("step 100").run()
    at.selectbox(key="attn_prompt").set_value(1)
    at.selectbox(key="attn_layer").set_value(1)
    at.selectbox(key="attn_head").set_value(2).run()
    heatmap, curves = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    n = int(t["prompt_lengths"][1])
    torch.testing.assert_close(torch.tensor(heatmap["data"][0]["z"]), t["patterns"][0, 1, 1, 2, :n, :n])
    assert heatmap["data"][0]["x"][1] == f"1:{res.summary['tokens'][1][1]}"
    assert heatmap["layout"]["xaxis"]["title"]["text"] == "key"
    assert [m.value for m in at.metric] == [f"{float(t[name][0, 1, 2]):.3f}" for name in res.summary["scores"]]
    torch.testing.assert_close(torch.tensor(curves["data"][0]["y"]), t["induction"][:, 1, 2])
    assert curves["layout"]["shapes"][0]["x0"] == 100  # the current checkpoint is marked
    assert not at.exception


def test_page_computes_a_new_prompt_through_the_unit(written: Path, tiny_run: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Typing a prompt and clicking writes a new results directory beside the shown one (by the unit's `run`, with
    the shown results' settings), whose patterns equal Hugging Face's for that prompt, and shows them; a second
    click reuses it; an unrelated directory at that name is never overwritten."""
    from apptools import explorer

    shown = shutil.copytree(written, tmp_path / "attention", ignore=shutil.ignore_patterns("partial"))
    at = explorer(tmp_path, monkeypatch, shown)
    text = "the moon likes <b>my</b> ball"
    at.text_input(key="attn_prompt_text").input(text)
    at.button(key="attn_compute").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    [new] = [p for p in tmp_path.iterdir() if p.name.startswith("attention-prompt-")]
    res = read_results(new)
    assert res.summary["prompts"] == [text] and res.summary["probe"]["seq_len"] == 6
    for c, ckpt in enumerate(sorted(tiny_run.iterdir())):
        torch.testing.assert_close(res.tensors["patterns"][c, 0], hf_attentions(ckpt, text), atol=1e-5, rtol=0)
    n = int(res.tensors["prompt_lengths"][0])
    at.select_slider(key="attn_new_ckpt").set_value("step 100").run()
    heatmap = json.loads(at.get("plotly_chart")[2].proto.spec)  # the shown pattern, its curves, then the new one
    torch.testing.assert_close(torch.tensor(heatmap["data"][0]["z"]), res.tensors["patterns"][0, 0, 0, 0, :n, :n])
    stamp = (new / "summary.json").stat().st_mtime_ns
    at.button(key="attn_compute").click().run()
    assert (new / "summary.json").stat().st_mtime_ns == stamp and not at.exception
    at.text_input(key="attn_prompt_text").input("   ")
    at.button(key="attn_compute").click().run()
    assert "prompt 1 is empty" in at.error[0].value and len(at.get("plotly_chart")) == 2


def test_page_refuses_a_new_prompt_when_the_checkpoints_moved(tiny_run: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from apptools import explorer

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    shown = tmp_path / "results" / "attention"
    run_analysis("attention", run=run_dir, prompt=(PROMPTS[0],), out=shown, layers="0", seq_len=6, batch=2)
    run_dir.rename(tmp_path / "moved")
    at = explorer(tmp_path / "results", monkeypatch, shown)
    at.text_input(key="attn_prompt_text").input(PROMPTS[1])
    at.button(key="attn_compute").click().run()
    assert "is no longer there" in at.error[0].value and not at.exception
    assert [p.name for p in shown.parent.iterdir()] == ["attention"]


def test_spec_for_a_new_prompt_refuses_changed_checkpoints(tiny_run: Path, tmp_path: Path) -> None:
    """A checkpoint added to the run, or other weights at a recorded path, are refused before any compute."""
    from interp.analyses.attention import Spec

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    res = run_analysis("attention", run=run_dir, prompt=(PROMPTS[0],), out=tmp_path / "a", layers="0", seq_len=6,
                       batch=2)
    spec = Spec.for_prompt(res, PROMPTS[1])
    assert (spec.layers, spec.seq_len, spec.batch, spec.bos, spec.prompt) == ("0", 6, 2, True, (PROMPTS[1],))
    assert spec.out.parent == tmp_path and not spec.out.exists()
    shutil.copytree(run_dir / "step_000200", run_dir / "step_000300")
    with pytest.raises(InterpError, match="now holds 3 checkpoint"):
        Spec.for_prompt(res, PROMPTS[1])
    shutil.rmtree(run_dir / "step_000300")
    tiny_checkpoint("llama", run_dir / "step_000200", seed=7)
    with pytest.raises(InterpError, match="changed since"):
        Spec.for_prompt(res, PROMPTS[1])


@pytest.mark.zoo
def test_zoo_induction_head_attends_to_the_token_after_the_earlier_copy(zoo: Path, tmp_path: Path) -> None:
    """On the zoo's base run, the last checkpoint's top induction head puts most of each second-copy query's
    attention on the token after that query's earlier copy (the induction stripe), and the first does not."""
    words = "baker candle moon silver garden toad rune bell"
    res = run_analysis("attention", run=zoo / "base", prompt=(f"{words} {words}",), out=tmp_path / "zoo")
    best = res.summary["top_heads"]["induction"]
    n = int(res.tensors["prompt_lengths"][0])
    half = (n - 1) // 2
    row = res.summary["layers"].index(best["layer"])
    stripe = [res.tensors["patterns"][c, 0, row, best["head"], 1 + half + i, 2 + i] for c in (0, -1)
              for i in range(half - 1)]
    first, last = torch.stack(stripe[: half - 1]).mean(), torch.stack(stripe[half - 1:]).mean()
    print(f"zoo base L{best['layer']}H{best['head']}: induction score {best['score']:.3f}, stripe attention "
          f"{float(first):.3f} at step {res.summary['steps'][0]} -> {float(last):.3f} at {res.summary['steps'][-1]}")
    assert last > 0.5 > first
