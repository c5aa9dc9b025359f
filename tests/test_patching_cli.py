"""`interp patch`: results files over a run, resume after interruption, task validation, prompt batching."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import interp.analyses.patch.sweep as sweep
from interp.analyses.patch import Spec
from interp.analyses.patch import run as run_patch
from interp.cli import main
from interp.errors import InterpError
from interp.results import read_results
from interp.testing import tiny_checkpoint
from patching import activation_patch, metrics
from patching.tasks import load_task

LINES = [
    {"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"},
    {"clean": "my friend likes the moon", "corrupted": "my friend likes a moon", "answer": ".", "wrong": " the"},
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    for seed, step in enumerate((100, 200)):
        tiny_checkpoint("llama", root / f"step_{step:06d}", seed=seed)
    return root


def write_task(path: Path, lines: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_patch_command_writes_three_files_matching_the_engine(run_dir: Path, tmp_path: Path) -> None:
    task = write_task(tmp_path / "task.jsonl", LINES)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main(["patch", str(run_dir), "--task", str(task), "--out", str(out), "--sites", "resid_pre,z_by_pos",
              "--batch-size", "1", "--device", "cpu", "--attribution"])
    assert done.value.code == 0
    res = read_results(out)
    assert (out / "report.html").read_text().count("plotly") > 0
    assert res.tensors["resid_pre"].shape == (2, 2, 6) and res.tensors["z_by_pos"].shape == (2, 2, 4, 6)
    assert [c["step"] for c in res.summary["checkpoints"]] == [100, 200]
    assert res.summary["prompt_tokens"]["clean"][0] == "<|bos|>"
    # the engine on the whole batch at once (LogitDiff is a mean over prompts, so batches of 1 average to it)
    from interp.models.backends.native_backend import NativeModel

    model = NativeModel.from_dir(run_dir / "step_000200", torch.device("cpu"), torch.float32, 200)
    t = load_task(task, model.tokenizer)
    expected = activation_patch(model, t.clean, t.corrupted, site="z_by_pos",
                                metric=metrics.LogitDiff(t.answer_ids, t.wrong_ids))
    torch.testing.assert_close(res.tensors["z_by_pos.raw"][1], expected.raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.tensors["z_by_pos"][1], expected.normalised, atol=1e-4, rtol=1e-4)
    assert res.summary["clean_metric"][1] == pytest.approx(expected.clean_metric, abs=1e-5)
    # attribution patching ran alongside, with its correlation to exact patching per checkpoint
    estimate, exact = res.tensors["resid_pre.attribution.raw"][0], res.tensors["resid_pre.raw"][0]
    r = np.corrcoef(estimate.flatten().numpy(), exact.flatten().numpy())[0, 1]
    assert res.summary["attribution_correlation"]["resid_pre"][0] == pytest.approx(r, abs=1e-5)


def test_interrupted_sweep_resumes_from_last_finished_checkpoint(run_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    task = write_task(tmp_path / "task.jsonl", LINES)
    spec = Spec(run=run_dir, task=task, out=tmp_path / "out", sites="resid_pre", device="cpu")
    real, calls = sweep.patch_checkpoint, []

    def failing_second(model, source, task_, settings_):  # type: ignore[no-untyped-def]
        calls.append(model.step)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, source, task_, settings_)

    monkeypatch.setattr(sweep, "patch_checkpoint", failing_second)
    with pytest.raises(KeyboardInterrupt):
        run_patch(spec)
    calls.clear()
    monkeypatch.setattr(sweep, "patch_checkpoint", lambda *a: calls.append(a[0].step) or real(*a))
    run_patch(spec)
    assert calls == [200]  # only the unfinished checkpoint ran again
    calls.clear()
    with pytest.raises(InterpError, match="made with other settings"):  # changed settings: refused, nothing run
        run_patch(replace(spec, sites="attn_out"))
    assert calls == []
    run_patch(replace(spec, sites="attn_out", force=True))
    assert calls == [100, 200]  # replaced with --force: nothing reused


def test_task_lines_of_different_lengths_are_reported_by_number(run_dir: Path, tmp_path: Path) -> None:
    bad = LINES + [{"clean": "the cat sees", "corrupted": "the dog sees a ball", "answer": " a", "wrong": " the"}]
    task = write_task(tmp_path / "bad.jsonl", bad)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run_dir / "step_000100"))
    with pytest.raises(InterpError, match="lines 3 "):
        load_task(task, tok)


def test_cross_model_sweep_pairs_one_source_with_every_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    task = write_task(tmp_path / "task.jsonl", LINES[:1])
    res = run_patch(Spec(run=run_dir, task=task, out=tmp_path / "out", sites="resid_post",
                         source=run_dir / "step_000200", device="cpu"))
    assert [c["source"].endswith("step_000200") for c in res.summary["checkpoints"]] == [True, True]
    # the clean run is the source's on both rows; the corrupted run is each target's own
    clean, corrupted = res.summary["clean_metric"], res.summary["corrupted_metric"]
    assert clean[0] == pytest.approx(clean[1], abs=1e-6) and corrupted[0] != pytest.approx(corrupted[1], abs=1e-3)
    # step 200 patched with its own clean final residual stream is the clean run
    assert float(res.tensors["resid_post"][1, -1, -1]) == pytest.approx(1.0, abs=1e-4)


def test_changed_weights_are_recomputed_not_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Resume is keyed by content: a checkpoint whose weights were replaced is patched again, and its numbers equal
    a fresh run's; the unchanged checkpoint is reused; summary.json names each checkpoint's weights by sha256."""
    from clitools import run

    from interp.checkpoints import weights_sha256

    run_dir = tmp_path / "run"
    for seed, step in enumerate((100, 200)):
        tiny_checkpoint("llama", run_dir / f"step_{step:06d}", seed=seed)
    task = write_task(tmp_path / "task.jsonl", LINES)
    argv = ["patch", run_dir, "--task", task, "--sites", "resid_pre", "--device", "cpu", "--out"]
    assert run([*argv, tmp_path / "out"], capsys)[0] == 0
    first = read_results(tmp_path / "out")
    assert [c["weights_sha256"] for c in first.summary["checkpoints"]] == [
        weights_sha256(run_dir / "step_000100"), weights_sha256(run_dir / "step_000200")]

    replacement = tiny_checkpoint("llama", tmp_path / "other", seed=7) / "model.safetensors"
    (run_dir / "step_000200" / "model.safetensors").write_bytes(replacement.read_bytes())
    real, calls = sweep.patch_checkpoint, []
    monkeypatch.setattr(sweep, "patch_checkpoint", lambda *a: calls.append(a[0].step) or real(*a))
    assert run([*argv, tmp_path / "out"], capsys)[0] == 0
    assert calls == [200]  # the unchanged checkpoint was resumed, the changed one recomputed
    again = read_results(tmp_path / "out")
    assert run([*argv, tmp_path / "fresh"], capsys)[0] == 0
    fresh = read_results(tmp_path / "fresh")
    assert not torch.allclose(again.tensors["resid_pre.raw"][1], first.tensors["resid_pre.raw"][1])
    for name in ("resid_pre", "resid_pre.raw", "clean_metric", "corrupted_metric"):
        torch.testing.assert_close(again.tensors[name], fresh.tensors[name], atol=0, rtol=0)
    assert again.summary["checkpoints"][1]["weights_sha256"] == weights_sha256(run_dir / "step_000200")
    assert again.summary["checkpoints"][1]["weights_sha256"] != first.summary["checkpoints"][1]["weights_sha256"]


def test_redirected_log_shows_checkpoint_progress(run_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """With stderr not a terminal, the checkpoint loop still reports progress, as plain lines."""
    from clitools import run

    task = write_task(tmp_path / "task.jsonl", LINES)
    code, _, err = run(["patch", run_dir, "--task", task, "--out", tmp_path / "out", "--sites", "resid_pre",
                        "--device", "cpu"], capsys)
    assert code == 0
    lines = [line for line in err.split("\n") if "patching checkpoints" in line]
    assert lines and all(line.startswith("patching checkpoints") and "\r" not in line for line in lines)
    assert "2/2" in lines[-1]
