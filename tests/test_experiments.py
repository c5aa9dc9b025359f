"""experiments/: each script whose numbers README.md quotes runs on the quick zoo, and its numbers are the ones the
library's own command computes on the same prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import run

ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def tuco_numbers(zoo_quick: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """`python -m experiments.tuco_zoo` on the quick zoo (2 requests of each kind): its numbers and its --out."""
    out = tmp_path_factory.mktemp("tuco-zoo") / "out"
    done = subprocess.run([sys.executable, "-m", "experiments.tuco_zoo", str(zoo_quick), "--limit", "2",
                           "--max-new-tokens", str(NEW_TOKENS), "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    numbers = json.loads((out / "numbers.json").read_text())
    assert json.loads(done.stdout) == numbers
    return numbers, out


def interp_tuco(numbers: dict, prompts: Path, prompts_b: Path, out: Path, capsys: pytest.CaptureFixture[str],
                *alphas: str) -> dict:
    """`interp tuco` (BOS prepended, as the experiment does) on the experiment's checkpoints: its summary.json."""
    argv = ["tuco", numbers["base"], numbers["chat"], "--prompts", prompts, "--prompts-b", prompts_b, "--bos",
            "--max-new-tokens", str(NEW_TOKENS), "--out", out, *(a for alpha in alphas for a in ("--alpha", alpha))]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    return json.loads((out / "summary.json").read_text())


def test_tuco_zoo_chat_vs_pretraining_is_interp_tuco(tuco_numbers: tuple[dict, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    numbers, out = tuco_numbers
    summary = interp_tuco(numbers, out / "chat.jsonl", out / "pretraining.jsonl", tmp_path / "r", capsys, "1")
    got = numbers["chat_vs_pretraining"]
    assert got["n"] == summary["prompts"]["n"] == summary["prompts_b"]["n"] == 4
    assert got["tuco_chat_mean"] == pytest.approx(summary["prompts"]["tuco_mean"], abs=1e-6)
    assert got["tuco_text_mean"] == pytest.approx(summary["prompts_b"]["tuco_mean"], abs=1e-6)
    assert got["auc"] == pytest.approx(summary["auc_tuco_a_vs_b"], abs=1e-9)


def test_tuco_zoo_attack_and_refusal_sweep_are_interp_tuco(tuco_numbers: tuple[dict, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    numbers, out = tuco_numbers
    attack = numbers["attack"]
    assert set(attack["attacks"]) == {"1-shot", "2-shot", "3-shot", "prefill-sure"} and attack["n"] == 2
    summary = interp_tuco(numbers, out / "harmful.jsonl", out / "harmful_1-shot.jsonl", tmp_path / "r", capsys,
                          "0", "1")
    one_shot = attack["attacks"]["1-shot"]
    assert attack["tuco_plain_mean"] == pytest.approx(summary["prompts"]["tuco_mean"], abs=1e-6)
    assert one_shot["tuco_mean"] == pytest.approx(summary["prompts_b"]["tuco_mean"], abs=1e-6)
    assert one_shot["auc_plain_vs_attacked"] == pytest.approx(summary["auc_tuco_a_vs_b"], abs=1e-9)
    sweep = numbers["refusal_vs_alpha"]["harmful"]
    assert (sweep["0.0"], sweep["1.0"]) == (summary["behaviour"]["0"], summary["behaviour"]["1"])
