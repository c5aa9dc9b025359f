"""Published checkpoint layouts: each suite's names discovered in training order (steps, tokens seen, stages and
ingredients), Pythia's README cache_dir layout, OLMo's checkpoint catalogue, and the error for a run it cannot order."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
from interp.testing import write_hub_cache

from interp.checkpoints import Name, discover, parse_name, step_of, weights_sha256
from interp.errors import InterpError

B = 10**9


@pytest.mark.parametrize("name, parsed", [
    ("step3000", Name(3000)), ("step_60", Name(60)), ("ckpt_356", Name(356)), ("ckpt_000", Name(0)),
    ("checkpoint-100", Name(100)), ("global_step25", Name(25)),
    ("step1000-tokens4B", Name(1000, 4 * B)),
    ("stage1-step1000-tokens4B", Name(1000, 4 * B, 1)),
    ("stage2-ingredient2-step5000-tokens21B", Name(5000, 21 * B, 2, 2)),
    ("stage1-step928646-tokens3896B", Name(928646, 3896 * B, 1)),
    ("step10-tokens500M", Name(10, 500 * 10**6)),
    ("stage1", None), ("ingredient1-step5", None), ("stage1-step5-tokens4", None), ("ckpt-3", None),
    ("stage1-ingredient1-tokens4B", None), ("main", None),
])
def test_parse_name(name: str, parsed: Name | None) -> None:
    assert parse_name(name) == parsed


def _run(root: Path, names: list[str], source: Path) -> Path:
    """A run directory of copies of one tiny checkpoint under `names` (in the order given: discovery must sort)."""
    for name in names:
        shutil.copytree(source, root / name)
    return root


@pytest.mark.parametrize("names", [
    ["step143000", "step0", "step512", "step1", "step1000"],  # Pythia
    ["step_360", "step_60", "step_120"],  # OLMo-2-Instruct's RL stage
    ["ckpt_356", "ckpt_000", "ckpt_010"],  # LLM360 Amber
    ["checkpoint-500", "checkpoint-20"],  # Hugging Face Trainer
    ["global_step300", "global_step5"],  # DeepSpeed
])
def test_suite_names_in_step_order(tmp_path: Path, tiny_dir: Callable[[str], Path], names: list[str]) -> None:
    found = discover(_run(tmp_path / "run", names, tiny_dir("gpt2")))
    assert [c.path.name for c in found] == sorted(names, key=lambda n: int(re.sub(r"\D", "", n)))
    assert all(c.tokens is None and c.stage is None and c.revision is None for c in found)


def test_olmo_stages_then_steps_then_ingredients(tmp_path: Path, tiny_dir: Callable[[str], Path]) -> None:
    names = ["stage2-ingredient2-step1000-tokens5B", "stage1-step20000-tokens84B",
             "stage2-ingredient1-step1000-tokens5B", "stage1-step1000-tokens5B", "stage2-ingredient1-step500-tokens3B"]
    found = discover(_run(tmp_path / "olmo", names, tiny_dir("gpt2")))
    assert [(c.stage, c.step, c.ingredient, c.tokens) for c in found] == [
        (1, 1000, None, 5 * B), (1, 20000, None, 84 * B), (2, 500, 1, 3 * B), (2, 1000, 1, 5 * B),
        (2, 1000, 2, 5 * B)]
    assert [c.label for c in found][-2:] == ["stage2-ingredient1-step_001000", "stage2-ingredient2-step_001000"]


def test_pythia_readme_cache_dir_layout(tmp_path: Path, tiny_dir: Callable[[str], Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`from_pretrained("EleutherAI/pythia-70m", revision="step3000", cache_dir="./pythia-70m/step3000")`, per step."""
    from clitools import run

    from interp.loading import verify_checkpoint

    root = tmp_path / "pythia-70m"
    snapshots = {step: write_hub_cache(root / f"step{step}", "EleutherAI/pythia-70m", f"step{step}", tiny_dir("gpt2"))
                 for step in [3000, 0, 1000]}
    found = discover(root)
    assert [(c.step, c.path, c.revision, c.run) for c in found] == [
        (step, snapshots[step], f"step{step}", "pythia-70m") for step in [0, 1000, 3000]]
    verify_checkpoint(found[0].path)
    assert discover(root / "step1000") == [found[1]]  # one step directory is a run of one
    code, out, _ = run(["info", root], capsys)
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    start = lines.index(["step", "sha256", "revision"])
    sha = weights_sha256(tiny_dir("gpt2"))[:12]  # three copies of one checkpoint: identical weights, warned
    assert lines[start + 1:start + 4] == [["0", sha, "step0"], ["1000", sha, "step1000"], ["3000", sha, "step3000"]]
    assert f"warning: step0, step1000 and step3000 have identical weights (sha256 {sha})" in out


def test_info_shows_tokens_seen(tmp_path: Path, tiny_dir: Callable[[str], Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    from clitools import run

    root = _run(tmp_path / "olmo", ["stage1-step2000-tokens9B", "stage1-step1000-tokens4B"], tiny_dir("gpt2"))
    code, out, _ = run(["info", root], capsys)
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    start = lines.index(["step", "tokens", "sha256", "directory"])
    sha = weights_sha256(tiny_dir("gpt2"))[:12]
    assert lines[start + 1:start + 3] == [["1000", "4B", sha, "stage1-step1000-tokens4B"],
                                          ["2000", "9B", sha, "stage1-step2000-tokens9B"]]


OLMO_CATALOGUE = """Step,Checkpoint Directory
0,https://olmo-checkpoints.org/ai2-llm/peteish1/step0-unsharded/
300,https://olmo-checkpoints.org/ai2-llm/peteish1/step300-unsharded/
10000,https://olmo-checkpoints.org/ai2-llm/peteish1/step10000-unsharded/
"""


def test_olmo_catalogue_is_a_manifest(tmp_path: Path, tiny_dir: Callable[[str], Path]) -> None:
    """OLMo's published catalogue (its real header): rows found by their directory's name; rows not downloaded
    are skipped."""
    root = _run(tmp_path / "olmo", ["step300-unsharded", "step0-unsharded", "step_5"], tiny_dir("gpt2"))
    (root / "checkpoints.csv").write_text(OLMO_CATALOGUE)
    found = discover(root)
    assert [(c.step, c.path.name) for c in found] == [(0, "step0-unsharded"), (300, "step300-unsharded")]
    assert step_of(root / "step300-unsharded") == 300
    (root / "checkpoints.csv").write_text("step,revision\n1000,stage1-step1000-tokens4B\n5,step_5\n")
    shutil.copytree(tiny_dir("gpt2"), root / "stage1-step1000-tokens4B")
    assert [(c.step, c.tokens) for c in discover(root)] == [(5, None), (1000, 4 * B)]


@pytest.mark.parametrize("catalogue, needle", [
    ("Step,Where\n0,step0\n", "columns"),
    ("Step,Checkpoint Directory\nten,step0\n", "whole number"),
    ("Step,Checkpoint Directory\n", "lists no checkpoints"),
    (OLMO_CATALOGUE.replace("step0-", "stepX-").replace("step300-", "stepY-"), "none of the 3 checkpoints"),
])
def test_bad_catalogue_is_a_user_error(tmp_path: Path, tiny_dir: Callable[[str], Path], catalogue: str,
                                       needle: str) -> None:
    root = _run(tmp_path / "olmo", ["step0-unsharded", "step0"], tiny_dir("gpt2"))
    (root / "checkpoints.csv").write_text(catalogue)
    with pytest.raises(InterpError, match=needle) as err:
        discover(root)
    assert err.value.fix and "checkpoints.csv" in str(err.value)


def test_unorderable_run_shows_the_manifest_to_write(tmp_path: Path, tiny_dir: Callable[[str], Path]) -> None:
    root = _run(tmp_path / "run", ["final", "early", "best"], tiny_dir("gpt2"))
    (root / "notes").mkdir()
    with pytest.raises(InterpError, match="holds no checkpoints it can order: found best, early, final,") as err:
        discover(root)
    manifest = err.value.fix[err.value.fix.index("{"):]
    assert json.loads(manifest) == {"checkpoints": [{"path": n, "step": i} for i, n in enumerate(["best", "early",
                                                                                                 "final"])]}
    (root / "checkpoints.json").write_text(manifest)  # the manifest shown, as written, orders the run
    assert [c.path.name for c in discover(root)] == ["best", "early", "final"]
