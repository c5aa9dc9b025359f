"""Hostile input to `interp cache`, `interp tuco` and `interp info`: broken checkpoints, unusable --out directories,
out-of-range options, bad prompt files, damaged caches. Each case exits 2 with one line naming what is wrong, before
any compute, and changes nothing outside --out; or it gives the right result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from clitools import assert_unchanged, assert_user_error, edit_config, edit_weights, truncate, run, tree_state

HOOK = "blocks.0.hook_resid_post"
PROMPTS = "the cat sees the moon.\na dog\n1 2 3 4 5\n"


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "config without weights": (lambda c: (c / "model.safetensors").unlink(), "no weights"),
    "invalid config.json": (lambda c: (c / "config.json").write_text("{not json"), "not readable JSON"),
    "truncated safetensors": (truncate, "damaged"),
    "missing tokenizer": (lambda c: [p.unlink() for p in c.glob("*token*")], "no tokenizer"),
    "config says 3 layers": (lambda c: edit_config(c, num_hidden_layers=3), "do not match config.json"),
    "a tensor missing": (lambda c: edit_weights(c, lambda w: w.pop("model.layers.1.mlp.down_proj.weight")), "do not match config.json"),
    "unknown architecture": (lambda c: edit_config(c, model_type="nonsense"), "'nonsense'"),
    "config of another family": (lambda c: edit_config(c, model_type="mamba"), "do not match config.json"),
}


@pytest.fixture(scope="module")
def broken(tiny_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the tiny Llama checkpoint, each broken one way."""
    root = tmp_path_factory.mktemp("broken")
    made = {}
    for name, (damage, _) in BROKEN.items():
        made[name] = shutil.copytree(tiny_dir("llama"), root / name.replace(" ", "_").replace(".", "_"))
        damage(made[name])
    return made


@pytest.fixture(scope="module")
def zoo_pair(zoo_quick: Path) -> tuple[Path, Path]:
    """The quick zoo's last base and last chat checkpoints: a real pre-trained / fine-tuned pair."""
    return (sorted((zoo_quick / "base").glob("step_*"))[-1], sorted((zoo_quick / "chat").glob("step_*"))[-1])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A scratch directory holding a prompt file; the tests prove nothing in it but --out changes."""
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    return tmp_path


def _cache(ckpt: Path, work: Path, *options: str, out: str = "out") -> list[str]:
    return ["cache", str(ckpt), "-p", str(work / "prompts.txt"), "--hook", HOOK, "-o", str(work / out), *options]


def _tuco(base: Path, ft: Path, work: Path, *options: str, out: str = "out") -> list[str]:
    return ["tuco", str(base), str(ft), "--prompts", str(work / "prompts.txt"), "--out", str(work / out),
            "--alpha", "1", "--max-new-tokens", "2", *options]


def _refused(argv: list[str], work: Path, capsys: pytest.CaptureFixture[str], *needles: str,
             inputs: tuple[Path, ...] = ()) -> None:
    """Exit 2 with one line holding `needles`, said before any work: no file under `work` (--out included) or in
    `inputs` changed."""
    states = [(root, tree_state(root)) for root in (work, *inputs)]
    assert_user_error(run(argv, capsys), *needles)
    for root, before in states:
        assert_unchanged(root, before)


# --- broken checkpoints: one line from every command, before any compute ---------------------------------------------
@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("command", ["info", "cache", "tuco base", "tuco fine-tuned"])
def test_broken_checkpoints_are_refused(broken: dict[str, Path], tiny_dir: Callable[[str], Path], work: Path,
                                        capsys: pytest.CaptureFixture[str], case: str, command: str) -> None:
    ckpt, good = broken[case], tiny_dir("llama")
    if command == "info":
        states = tree_state(ckpt)
        assert_user_error(run(["info", str(ckpt)], capsys), BROKEN[case][1], str(ckpt))
        assert_unchanged(ckpt, states)
        return
    argv = (_cache(ckpt, work) if command == "cache" else
            _tuco(ckpt, good, work) if command == "tuco base" else _tuco(good, ckpt, work))
    _refused(argv, work, capsys, BROKEN[case][1], inputs=(ckpt,))


def test_info_refuses_a_run_with_one_broken_checkpoint(broken: dict[str, Path], tiny_dir: Callable[[str], Path],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir("llama"), run_dir / "step_10")
    shutil.copytree(broken["missing tokenizer"], run_dir / "step_20")
    assert_user_error(run(["info", str(run_dir)], capsys), "no tokenizer", "step_20")


def test_cache_verifies_every_checkpoint_of_a_run_first(broken: dict[str, Path], tiny_dir: Callable[[str], Path],
                                                        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = work / "run"
    shutil.copytree(tiny_dir("llama"), run_dir / "step_10")
    shutil.copytree(broken["config says 3 layers"], run_dir / "step_20")
    _refused(_cache(run_dir, work), work, capsys, "step_20", "do not match config.json")


# --- --out ----------------------------------------------------------------------------------------------------------
def _results_of_another_analysis(out: Path) -> None:
    from interp.results import axes, write_results

    write_results(out, {"x": torch.zeros(2)}, {}, analysis="patch", axes={"x": axes("x")},
                  tokenization={"bos": None, "padding": None}, inputs=[], settings={"a": 1})


OUTS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "a file": (lambda w, c: (w / "out.txt").write_text("keep") and w / "out.txt", "is a file"),
    "under a file": (lambda w, c: (w / "f").write_text("keep") and w / "f" / "out", "is under"),
    "a checkpoint": (lambda w, c: shutil.copytree(c, w / "ckpt_copy"), "model checkpoint directory"),
    "a run": (lambda w, c: shutil.copytree(c, w / "run" / "step_1").parent, "holds model checkpoints"),
    "other files": (lambda w, c: (w / "mine").mkdir() or (w / "mine" / "notes.txt").write_text("x") and w / "mine",
                    "did not write"),
    "another analysis": (lambda w, c: _results_of_another_analysis(w / "res") or w / "res", "results of `patch`"),
}


@pytest.mark.parametrize("case", list(OUTS))
@pytest.mark.parametrize("command", ["cache", "tuco"])
def test_unusable_out_is_refused_first(tiny_dir: Callable[[str], Path], work: Path,
                                       capsys: pytest.CaptureFixture[str], case: str, command: str) -> None:
    make, needle = OUTS[case]
    out = make(work, tiny_dir("llama"))
    ckpt = tiny_dir("llama")
    argv = _cache(ckpt, work, out=str(out)) if command == "cache" else _tuco(ckpt, ckpt, work, out=str(out))
    _refused(argv, work, capsys, needle)


def test_cache_out_holding_a_cache_of_other_settings(tiny_dir: Callable[[str], Path], work: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cache import open_cache

    ckpt = tiny_dir("gpt2")
    assert run(_cache(ckpt, work, "--positions", "last"), capsys)[0] == 0
    _refused(_cache(ckpt, work, "--positions", "all"), work, capsys, "`cache` results made with other settings")
    _refused(_cache(ckpt, work, "--dtype", "float16", "--positions", "last"), work, capsys, "other settings")
    # the same settings and one more hook: reused, and the new hook is added
    code, out, _ = run(_cache(ckpt, work, "--positions", "last", "--hook", "blocks.1.hook_resid_post"), capsys)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["reused", "written"]
    assert open_cache(work / "out" / ckpt.name).hooks == (HOOK, "blocks.1.hook_resid_post")
    # --force replaces it all: the old hooks and a stray file are gone
    (work / "out" / "stray.txt").write_text("x")
    code, out, _ = run(_cache(ckpt, work, "--positions", "all", "--force"), capsys)
    assert code == 0 and out.split()[0] == "written"
    assert sorted(p.name for p in (work / "out").iterdir()) == ["cache.json", ckpt.name]
    assert open_cache(work / "out" / ckpt.name).meta(HOOK)["positions"] == "all"


def test_tuco_out_rerun_and_force(zoo_pair: tuple[Path, Path], work: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from interp.results import read_results

    base, chat = zoo_pair
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("mine")
    _refused(_tuco(base, chat, work), work, capsys, "did not write")
    assert run(_tuco(base, chat, work, "--force"), capsys)[0] == 0
    assert not (work / "out" / "notes.txt").exists()
    first = read_results(work / "out")
    assert run(_tuco(base, chat, work), capsys)[0] == 0  # same settings: accepted
    _refused(_tuco(base, chat, work, "--max-new-tokens", "3"), work, capsys, "other settings")
    assert torch.equal(read_results(work / "out").tensors["tuco"], first.tensors["tuco"])


# --- options and prompt files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, needle", [
    (["--batch-size", "0"], "batch size must be at least 1"),
    (["--shard-mb", "0"], "shard size"),
    (["--hook", "../escape"], "'../escape' is not a hook name"),
    (["--backend", "bogus"], "unknown backend"),
    (["--device", "cuda"], "no usable CUDA GPU"),
    (["--device", "tpu"], "device"),
    (["--dtype", "int8"], "unknown dtype"),
    (["--positions", ""], "cannot read positions"),
])
def test_cache_options_are_checked_first(tiny_dir: Callable[[str], Path], work: Path,
                                         capsys: pytest.CaptureFixture[str], options: list[str], needle: str) -> None:
    if torch.cuda.is_available() and "cuda" in options:
        pytest.skip("this machine has a GPU")
    _refused(_cache(tiny_dir("gpt2"), work, *options), work, capsys, needle)


@pytest.mark.parametrize("options, needle", [
    (["--alpha", "nan"], "--alpha is nan, not a finite number"),
    (["--alpha", "inf"], "--alpha is inf"),
    (["--alpha", "1,-inf"], "--alpha is -inf"),
    (["--alpha", "1e39"], "alpha 1e+39 is not a finite float32 number"),
    (["--alpha", "0.5", "--alpha", "0.5"], "--alpha 0.5 is given twice"),
    (["--alpha", "1,1,1"], "3 values but the models have 2 layers"),
    (["--alpha", "x"], "not a number"),
    (["--batch-size", "0"], "--batch-size is 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens is 0"),
    (["--behaviour-prefix", ""], "matches every continuation"),
    (["--device", "cuda"], "no usable CUDA GPU"),
])
def test_tuco_options_are_checked_first(zoo_pair: tuple[Path, Path], work: Path,
                                        capsys: pytest.CaptureFixture[str], options: list[str], needle: str) -> None:
    if torch.cuda.is_available() and "cuda" in options:
        pytest.skip("this machine has a GPU")
    _refused(_tuco(*zoo_pair, work, *options), work, capsys, needle, inputs=zoo_pair)


PROMPT_FILES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "holds no prompts"),
    "blank lines only": (b"\n  \n\n", "holds no prompts"),
    "not UTF-8": ("caf\xe9 au lait\n".encode("latin-1"), "not UTF-8"),
    "JSONL with a bad line": (b'{"prompt": "ok"}\n{"prompt": \n', "prompts.jsonl:2 is not valid JSON"),
    "JSONL line not an object": (b'{"prompt": "ok"}\n["a list"]\n', "prompts.jsonl:2 is a JSON array"),
    "JSONL without the field": (b'{"text": "ok"}\n', "needs string fields prompt"),
    "JSONL unpaired surrogate": (b'{"prompt": "a \\ud800 b"}\n', "unpaired surrogate"),
    "JSONL nested too deeply": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    "JSONL empty prompt": (b'{"prompt": ""}\n', "empty prompt"),
    "longer than the context": (("word " * 400 + "\n").encode(), "context of"),
}


@pytest.mark.parametrize("case", list(PROMPT_FILES))
@pytest.mark.parametrize("command", ["cache", "tuco"])
def test_bad_prompt_files(zoo_pair: tuple[Path, Path], work: Path, capsys: pytest.CaptureFixture[str], case: str,
                          command: str) -> None:
    data, needle = PROMPT_FILES[case]
    name = "prompts.jsonl" if "JSONL" in case else "prompts.txt"
    (work / name).write_bytes(data)
    argv = _cache(zoo_pair[1], work) if command == "cache" else _tuco(*zoo_pair, work)
    argv[argv.index(str(work / "prompts.txt"))] = str(work / name)
    if command == "cache" and case == "longer than the context":  # found once the model is loaded, before compute
        states = tree_state(work)
        assert_user_error(run(argv, capsys), needle, "prompt 1 (")  # the first prompt, numbered from 1 as everywhere
        assert_unchanged(work, states, work / "out")
        assert not list((work / "out").glob("**/*.safetensors"))
        return
    _refused(argv, work, capsys, needle, inputs=zoo_pair)


def test_tuco_prompt_that_only_fits_without_the_generated_tokens(zoo_pair: tuple[Path, Path], work: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from interp.checkpoints import read_summary
    from interp.loading import load_tokenizer

    n_ctx, tokenizer = read_summary(zoo_pair[1]).n_ctx, load_tokenizer(zoo_pair[1])
    text = " ".join(["the"] * n_ctx)
    ids = tokenizer.encode(text, add_special_tokens=False)
    (work / "prompts.txt").write_text(tokenizer.decode(ids[: n_ctx - 1]) + "\n")  # fits alone, not with 2 more
    assert len(tokenizer.encode((work / "prompts.txt").read_text().strip(), add_special_tokens=False)) == n_ctx - 1
    _refused(_tuco(*zoo_pair, work), work, capsys, "prompt 1", "(+ 2 answer or generated tokens)", inputs=zoo_pair)


def test_a_prompt_file_with_a_byte_order_mark_is_read(tiny_dir: Callable[[str], Path], work: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Oracle: the same prompts without the mark."""
    from interp.cache import load_activations

    lines = [json.dumps({"prompt": p}) for p in PROMPTS.split("\n") if p]
    (work / "plain.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (work / "bom.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    ckpt = tiny_dir("gpt2")
    for name in ("plain", "bom"):
        argv = _cache(ckpt, work, out=name)
        argv[argv.index(str(work / "prompts.txt"))] = str(work / f"{name}.jsonl")
        assert run(argv, capsys)[0] == 0
    assert torch.equal(load_activations(work / "bom" / ckpt.name, HOOK), load_activations(work / "plain" / ckpt.name,
                                                                                         HOOK))


# --- results that would be wrong ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def silent_blocks(tiny_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama checkpoint whose blocks add nothing (attention and MLP outputs zero): TuCo is 0 / 0 on it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("silent") / "ckpt"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir("llama")))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_dir("llama"))).save_pretrained(out)
    return out


def test_tuco_that_is_not_a_number_names_the_prompt(silent_blocks: Path, work: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    states = tree_state(work)
    assert_user_error(run(_tuco(silent_blocks, silent_blocks, work), capsys), "prompts.txt: the TuCo of prompt 1",
                      "NaN or infinite", after_progress=True)
    assert_unchanged(work, states)


def test_cache_rebuilds_a_damaged_cache_and_says_so(tiny_dir: Callable[[str], Path], work: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cache import load_activations

    ckpt = tiny_dir("gpt2")
    assert run(_cache(ckpt, work), capsys)[0] == 0
    hook_dir = work / "out" / ckpt.name / HOOK
    good = load_activations(hook_dir.parent, HOOK)
    truncate(hook_dir / "shard-00000.safetensors")
    code, out, _ = run(_cache(ckpt, work), capsys)
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith("rebuilt") and "sha256 differs" in line and line.endswith("recomputed)")
    assert torch.equal(load_activations(hook_dir.parent, HOOK), good)
    assert run(_cache(ckpt, work), capsys)[1].split()[0] == "reused"


def test_cache_recomputes_when_the_weights_change(tiny_dir: Callable[[str], Path], work: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cache import load_activations
    from interp.testing import tiny_checkpoint

    ckpt = shutil.copytree(tiny_dir("gpt2"), work / "ckpt")
    assert run(_cache(ckpt, work), capsys)[0] == 0
    before = load_activations(work / "out" / "ckpt", HOOK)
    tiny_checkpoint("gpt2", ckpt, seed=9)  # new weights in the same place
    code, out, _ = run(_cache(ckpt, work), capsys)
    assert code == 0 and out.split()[0] == "written"
    assert not torch.allclose(load_activations(work / "out" / "ckpt", HOOK), before)
