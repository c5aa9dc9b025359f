"""Hostile inputs to `interp gradients` and `interp induction` (scores and train): broken checkpoints, mismatched
pairs and runs, out-of-range options and unusable output directories each give one line `error: ... (fix: ...)`,
exit 2, before any compute, and change nothing outside --out; the happy paths give the right results."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from clitools import assert_unchanged, assert_user_error, edit_config, edit_weights, truncate, run, tree_state
from safetensors.torch import load_file

from interp.testing import tiny_checkpoint, train_tiny_tokenizer

TENSOR = "model.layers.1.self_attn.v_proj.weight"


def _nan(weights: dict[str, torch.Tensor]) -> None:
    weights[TENSOR][0, 0] = math.nan


def _remove(*names: str) -> Callable[[Path], None]:
    return lambda ckpt: [(ckpt / name).unlink() for name in names]


# damage -> (how, what the error says)
DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "config_3_layers_weights_2": (lambda c: edit_config(c, num_hidden_layers=3), "tensor(s) the config needs are missing"),
    "deleted_tensor": (lambda c: edit_weights(c, lambda w: w.pop("model.layers.1.mlp.up_proj.weight")),
                       "model.layers.1.mlp.up_proj.weight"),
    "reshaped_tensor": (lambda c: edit_weights(c, lambda w: w.update({TENSOR: w[TENSOR][:8].clone()})),
                        "have another shape than the config gives"),
    "nan_weights": (lambda c: edit_weights(c, _nan), f"weight {TENSOR} holds NaN"),
    "truncated_safetensors": (truncate, "is damaged or not a weight file"),
    "missing_tokenizer": (_remove("tokenizer.json", "tokenizer_config.json"), "has no tokenizer"),
    "invalid_config_json": (lambda ckpt: (ckpt / "config.json").write_text("{not json"), "is not readable JSON"),
    "config_without_weights": (_remove("model.safetensors"), "has config.json but no weights"),
}
FOUND_WHEN_LOADING = {"nan_weights"}  # found as the weights are read: after other checkpoints' progress lines


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Callable[[str], Path]) -> Path:
    """A tree of good and damaged checkpoints, runs and data files; tests write only below root/out."""
    root = tmp_path_factory.mktemp("hostile")
    good = tiny_dir("llama")
    shutil.copytree(good, root / "good")
    for name, (damage, _) in DAMAGES.items():
        shutil.copytree(good, root / "broken" / name)
        damage(root / "broken" / name)
        shutil.copytree(good, root / "runs" / name / "step_000100")
        shutil.copytree(root / "broken" / name, root / "runs" / name / "step_000200")
    shutil.copytree(good, root / "runs" / "mixed" / "step_000100")
    shutil.copytree(tiny_dir("gpt2"), root / "runs" / "mixed" / "step_000200")
    shutil.copytree(good, root / "other_tokenizer")
    train_tiny_tokenizer(kind="word").save_pretrained(root / "other_tokenizer")
    shutil.copytree(tiny_dir("gpt2"), root / "clamped" / "step_000000")
    (root / "clamped" / "run.json").write_text(json.dumps({"clamps": ["prev:5.0"]}))
    shutil.copytree(tiny_dir("gpt2"), root / "bad_run_json" / "step_000000")
    (root / "bad_run_json" / "run.json").write_text("{oops")
    pairs = [("the cat sees", " the ball ."), ("a dog likes the", " moon and the door .")]
    _write_jsonl(root / "data.jsonl", [{"instruction": i, "response": r} for i, r in pairs])
    _write_jsonl(root / "long.jsonl", [{"instruction": "the cat", "response": " the ball ." * 100}])
    _write_jsonl(root / "empty_response.jsonl", [{"instruction": "the cat sees", "response": ""}])
    (root / "not_json.jsonl").write_text('{"instruction": "a", "response": "b"}\nnot json\n')
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "somefile").write_text("a file, not a directory\n")
    (root / "user_dir").mkdir()
    (root / "user_dir" / "notes.txt").write_text("keep me\n")
    return root


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _command(kind: str, root: Path, ckpt: Path, out: Path) -> list[object]:
    """The argv of one command reading the (possibly damaged) checkpoint `ckpt`."""
    good = root / "good"
    return {
        "gradients": ["gradients", ckpt, "--data", root / "data.jsonl", "--out", out],
        "gradients --model-b": ["gradients", good, "--model-b", ckpt, "--data", root / "data.jsonl", "--out", out],
        "induction": ["induction", ckpt, "--out", out, "--seq-len", 8, "--batch", 2],
        "induction run": ["induction", root / "runs" / ckpt.name, "--out", out, "--seq-len", 8, "--batch", 2],
    }[kind]


def _refused(argv: list[object], root: Path, capsys: pytest.CaptureFixture[str], *needles: str, out: Path,
             after_progress: bool = False) -> None:
    """Run `argv`: exit 2 with one line naming `needles`, and nothing outside `out` changed."""
    before = tree_state(root)
    assert_user_error(run(argv, capsys), *needles, after_progress=after_progress)
    assert_unchanged(root, before, out)


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", ["gradients", "gradients --model-b", "induction", "induction run"])
def test_broken_checkpoints_are_refused(root: Path, capsys: pytest.CaptureFixture[str], kind: str,
                                        damage: str) -> None:
    ckpt = root / "broken" / damage
    out = root / "out" / f"{kind.replace(' ', '_')}-{damage}"
    _refused(_command(kind, root, ckpt, out), root, capsys, DAMAGES[damage][1], out=out,
             after_progress=damage in FOUND_WHEN_LOADING)
    if damage not in FOUND_WHEN_LOADING:
        assert not out.exists()


GRADIENT_OPTIONS: dict[str, tuple[list[str], str]] = {
    "batch size 0": (["--batch-size", "0"], "--batch-size is 0"),
    "max length 1": (["--max-length", "1"], "--max-length is 1"),
    "limit 0": (["--limit", "0"], "--limit is 0"),
    "unknown dtype": (["--dtype", "float8"], "unknown dtype"),
    "unknown template": (["--template", "nope"], "unknown template"),
    "cuda without a GPU": (["--device", "cuda"], "no usable CUDA GPU"),
    "response truncated away": (["--max-length", "2"], "data.jsonl:1: no response token is left"),
    "same labels": (["--data-b", "{root}/data.jsonl", "--label-a", "x", "--label-b", "x"], "both conditions are "
                                                                                         "labelled 'x'"),
    "model b another architecture": (["--model-b", "{root}/runs/mixed/step_000200"], "checkpoints differ"),
    "model b another tokenizer": (["--model-b", "{root}/other_tokenizer"], "a different tokenizer"),
    "model b a run": (["--model-b", "{root}/runs/mixed"], "is a training run holding 2 checkpoints"),
}


@pytest.mark.parametrize("case", GRADIENT_OPTIONS)
def test_gradients_bad_options(root: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    extra, needle = GRADIENT_OPTIONS[case]
    out = root / "out" / "gradients-options"
    argv = ["gradients", root / "good", "--data", root / "data.jsonl", "--out", out,
            *(arg.format(root=root) for arg in extra)]
    _refused(argv, root, capsys, needle, out=out)
    assert not out.exists()


GRADIENT_DATA: dict[str, tuple[str, ...]] = {
    "longer than the context": ("long.jsonl", "long.jsonl:1: the sample is", "longer than the model's context of 128"),
    "empty response": ("empty_response.jsonl", "empty_response.jsonl:1: no response token is left"),
    "not JSON": ("not_json.jsonl", "not_json.jsonl:2 is not valid JSON"),
    "missing file": ("missing.jsonl", "missing.jsonl does not exist"),
}


@pytest.mark.parametrize("case", GRADIENT_DATA)
def test_gradients_bad_data(root: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    name, *needles = GRADIENT_DATA[case]
    out = root / "out" / "gradients-data"
    _refused(["gradients", root / "good", "--data", root / name, "--out", out], root, capsys, *needles, out=out)
    assert not out.exists()


OUT_DIRS: dict[str, tuple[str, str]] = {
    "a file": ("somefile", "is a file, not a directory"),
    "under a file": ("somefile/results", "is under"),
    "a checkpoint": ("good", "is a model checkpoint directory"),
    "a run": ("runs/mixed", "holds model checkpoints"),
    "the user's files": ("user_dir", "already holds files that interp did not write"),
}


@pytest.mark.parametrize("case", OUT_DIRS)
@pytest.mark.parametrize("kind", ["gradients", "induction", "induction train"])
def test_unusable_out_is_refused(root: Path, capsys: pytest.CaptureFixture[str], kind: str, case: str) -> None:
    where, needle = OUT_DIRS[case]
    out = root / where
    argv = {"gradients": ["gradients", root / "good", "--data", root / "data.jsonl", "--out", out],
            "induction": ["induction", root / "good", "--out", out, "--seq-len", 8],
            "induction train": ["induction", "train", "--out", out, "--steps", 1]}[kind]
    before = tree_state(root)
    assert_user_error(run(argv, capsys), needle)
    assert_unchanged(root, before)


INDUCTION_OPTIONS: dict[str, tuple[list[str], str]] = {
    "seq len 0": (["--seq-len", "0"], "--seq-len is 0"),
    "seq len past the context": (["--seq-len", "64"], "--seq-len is 64, but it must be between 1 and 63"),
    "batch 0": (["--batch", "0"], "--batch is 0"),
    "threshold nan": (["--threshold", "nan"], "--threshold is nan, not a finite number"),
    "threshold above 1": (["--threshold", "2"], "--threshold is 2.0"),
    "cuda without a GPU": (["--device", "cuda"], "no usable CUDA GPU"),
    "text missing": (["--text", "{root}/missing.txt"], "cannot be read"),
    "text not UTF-8": (["--text", "{root}/latin1.txt"], "cannot be read as UTF-8"),
    "text too short": (["--text", "{root}/somefile"], "fewer than one window"),
}


@pytest.mark.parametrize("case", INDUCTION_OPTIONS)
def test_induction_bad_options(root: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    extra, needle = INDUCTION_OPTIONS[case]
    out = root / "out" / "induction-options"
    argv = ["induction", root / "good", "--out", out, *(arg.format(root=root) for arg in extra)]
    _refused(argv, root, capsys, needle, out=out)
    assert not out.exists()


INDUCTION_RUNS: dict[str, str] = {
    "runs/mixed": "checkpoints differ",
    "clamped": "clamp prev:5.0 names a head the model does not have",
    "bad_run_json": "run.json is not a JSON object",
    "missing_run": "does not exist",
}


@pytest.mark.parametrize("run_dir", INDUCTION_RUNS)
def test_induction_bad_runs(root: Path, capsys: pytest.CaptureFixture[str], run_dir: str) -> None:
    out = root / "out" / "induction-runs"
    _refused(["induction", root / run_dir, "--out", out, "--seq-len", 8], root, capsys, INDUCTION_RUNS[run_dir],
             out=out)
    assert not out.exists()


TRAIN_OPTIONS: dict[str, tuple[list[str], str]] = {
    "steps 0": (["--steps", "0"], "--steps is 0"),
    "batch 0": (["--batch", "0"], "--batch is 0"),
    "save every 0": (["--save-every", "0"], "--save-every is 0"),
    "lr nan": (["--lr", "nan"], "--lr is nan"),
    "lr 0": (["--lr", "0"], "--lr is 0.0, but it must be positive"),
    "unknown task": (["--task", "nope"], "unknown task 'nope'"),
    "clamp past the layers": (["--clamp", "prev:2.0"], "clamp prev:2.0 names a head the model does not have"),
    "clamp past the heads": (["--clamp", "induction:1.4"], "clamp induction:1.4 names a head"),
    "negative clamp": (["--clamp", "prev:-1.0"], "clamp prev:-1.0 names a head"),
    "unreadable clamp": (["--clamp", "prev:zero"], "cannot read the clamp 'prev:zero'"),
    "unknown clamp kind": (["--clamp", "erase:0.0"], "unknown clamp kind 'erase'"),
    "two copy clamps": (["--clamp", "copy:0.0", "--clamp", "copy:1.1"], "at most one copy clamp"),
}


@pytest.mark.parametrize("case", TRAIN_OPTIONS)
def test_train_bad_options(root: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    extra, needle = TRAIN_OPTIONS[case]
    out = root / "out" / "train"
    _refused(["induction", "train", "--out", out, *extra], root, capsys, needle, out=out)
    assert not out.exists()


# ---- the right results -----------------------------------------------------------------------------------------


def test_gradients_on_the_zoo_rerun_resume_and_force(zoo_quick: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A zoo checkpoint: results, then a rerun with the same settings is accepted, other settings are refused
    (nothing changed), and --force replaces them."""
    ckpt = zoo_quick / "base" / "step_000300"
    data = tmp_path / "data.jsonl"
    _write_jsonl(data, [{"instruction": "the cat sees", "response": " the ball."},
                        {"instruction": "a dog", "response": " likes the moon."}])
    out = tmp_path / "out"
    argv = ["gradients", ckpt, "--data", data, "--out", out, "--batch-size", 2]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["weights_sha256"] and "| data | q |" in stdout
    assert not (out / "partial").exists()
    assert run(argv, capsys)[0] == 0
    before = tree_state(tmp_path)
    assert_user_error(run([*argv, "--mlp"], capsys), "made with other settings")
    assert_unchanged(tmp_path, before)
    code, _, err = run([*argv, "--mlp", "--force"], capsys)
    assert code == 0, err
    assert "nuclear.up" in load_file(out / "results.safetensors")


def test_induction_on_one_checkpoint_prints_the_top_scores(zoo_quick: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """One checkpoint: formation needs two, so the command says so and prints the top heads' scores (never "no
    head reached" while a head scores above the threshold)."""
    out = tmp_path / "one"
    code, stdout, err = run(["induction", zoo_quick / "base" / "step_000300", "--out", out, "--seq-len", 20,
                             "--batch", 2, "--threshold", 0.01], capsys)
    assert code == 0, err
    induction = load_file(out / "results.safetensors")["induction"][0]
    best = int(induction.argmax())
    layer, head = divmod(best, induction.shape[1])
    assert float(induction.max()) >= 0.01
    assert "formation needs at least two checkpoints" in stdout and "no head reached" not in stdout
    assert f"L{layer}H{head} {float(induction.max()):.3f}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top_heads"][0] == {"layer": layer, "head": head, "score": pytest.approx(float(induction.max()))}


def test_gradients_resume_recomputes_replaced_weights(tiny_dir: Callable[[str], Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted sweep resumes only for the same weights: replace the checkpoint's weights (same path, same
    settings) and the rerun recomputes every sample, equal to a fresh run on the new weights."""
    from interp.dynamics.gradients import run as gradient_run

    ckpt = tmp_path / "model"
    shutil.copytree(tiny_dir("llama"), ckpt)
    data = tmp_path / "data.jsonl"
    _write_jsonl(data, [{"instruction": f"the cat sees {w}", "response": " the ball ."} for w in ("a", "b", "c")])
    out = tmp_path / "out"
    argv = ["gradients", ckpt, "--data", data, "--out", out, "--batch-size", 1]
    real, calls, interrupt = gradient_run.per_sample_gradients, [], [True]

    def interrupted_at_the_second_batch(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2 and interrupt[0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gradient_run, "per_sample_gradients", interrupted_at_the_second_batch)
    assert run(argv, capsys)[0] == 130
    assert (out / "partial" / "a.safetensors").is_file()
    shutil.copytree(out, tmp_path / "same_weights")
    interrupt[0] = False
    calls.clear()
    assert run([*argv[:5], tmp_path / "same_weights", *argv[6:]], capsys)[0] == 0
    assert len(calls) == 2  # the same weights resume: the first sample is reused
    tiny_checkpoint("llama", ckpt, seed=1)  # new weights, same shapes, same path
    calls.clear()
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert len(calls) == 3  # nothing reused from the old weights' partial
    resumed = load_file(out / "results.safetensors")
    monkeypatch.undo()
    code, _, err = run([*argv[:5], tmp_path / "fresh", *argv[6:]], capsys)
    assert code == 0, err
    fresh = load_file(tmp_path / "fresh" / "results.safetensors")
    for name, value in fresh.items():
        torch.testing.assert_close(resumed[name], value, msg=name)


def test_non_finite_gradient_statistic_names_the_sample(tiny_dir: Callable[[str], Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A one-token prompt answered by one token: attention over a single key has no query/key gradient, so the
    sigma_1 ratio is 0/0. That is an error naming the checkpoint and the line, not a NaN in the results."""
    data = tmp_path / "data.jsonl"
    _write_jsonl(data, [{"instruction": "the cat sees", "response": " the ball ."},
                        {"instruction": "", "response": "a"}])
    out = tmp_path / "out"
    before = tree_state(tmp_path)
    result = run(["gradients", tiny_dir("llama"), "--data", data, "--out", out, "--batch-size", 1, "--no-bos"],
                 capsys)
    assert_user_error(result, f"{tiny_dir('llama')}: the loss or a gradient statistic of {data}:2 is not finite",
                      after_progress=True)
    assert_unchanged(tmp_path, before, out)
    assert not (out / "results.safetensors").exists()
