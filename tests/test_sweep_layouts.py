"""Sweeps over every published checkpoint layout and the Hugging Face cache: `interp info` opens each, `interp patch`
and `interp induction scores` sweep it (the same numbers as over a plain run of the same two checkpoints), every
checkpoint read is identified by its weights' sha256 in summary.json, identical weights are warned about before any
model loads, a mixed run is refused, and a sweep holds one model at a time."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pytest
import torch
from clitools import assert_user_error, run
from interp.testing import write_hub_cache

from interp.checkpoints import weights_sha256
from interp.results import read_results
from interp.testing import tiny_checkpoint

B = 10**9
HUB_ID = "tiny-org/tiny-pythia"
TASK = '{"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"}\n'
PATCH = ["--sites", "resid_pre", "--device", "cpu"]
INDUCTION = ["--seq-len", "4", "--batch", "2"]


class Layout(NamedTuple):
    """A run as a suite publishes it: what to pass as RUN (and --revisions), and what a sweep must find in it."""

    argv: list[str]  # RUN [--revisions ...]
    steps: list[int]  # in training order; the i-th holds the i-th source checkpoint
    names: list[str]  # the revision or directory each is listed under
    tokens: list[int | None]
    revisions: bool = False  # listed under revision names (a Hugging Face cache), not directories


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny GPT-2 checkpoints with different random weights: the early and the late one of every layout."""
    root = tmp_path_factory.mktemp("sources")
    return [tiny_checkpoint("gpt2", root / f"seed{seed}", seed=seed) for seed in (0, 1)]


def _copies(root: Path, names: list[str], sources: list[Path]) -> Path:
    """`root` holding a copy of the i-th source under the i-th name, written latest first (discovery must sort)."""
    for name, source in reversed(list(zip(names, sources))):
        shutil.copytree(source, root / name)
    return root


def _named(names: list[str], steps: list[int], tokens: list[int | None] | None = None) -> Callable[..., Layout]:
    """A layout of step-named directories."""
    def build(root: Path, sources: list[Path]) -> Layout:
        return Layout([str(_copies(root, names, sources))], steps, names, tokens or [None, None])
    return build


def _pythia_readme(root: Path, sources: list[Path]) -> Layout:
    """`from_pretrained("EleutherAI/pythia-70m", revision="stepN", cache_dir="RUN/stepN")` per step."""
    for step, source in zip((1000, 200), reversed(sources)):
        write_hub_cache(root / f"step{step}", "EleutherAI/pythia-70m", f"step{step}", source)
    return Layout([str(root)], [200, 1000], ["step200", "step1000"], [None, None], revisions=True)


def _olmo_catalogue(root: Path, sources: list[Path]) -> Layout:
    """OLMo's published catalogue beside two of its three checkpoints downloaded."""
    _copies(root, ["step200-unsharded", "step1000-unsharded"], sources)
    (root / "checkpoints.csv").write_text("Step,Checkpoint Directory\n" + "".join(
        f"{step},https://olmo-checkpoints.org/ai2-llm/peteish1/step{step}-unsharded/\n" for step in (0, 200, 1000)))
    return Layout([str(root)], [200, 1000], ["step200-unsharded", "step1000-unsharded"], [None, None])


LAYOUTS: dict[str, Callable[..., Layout]] = {
    "pythia": _named(["step200", "step1000"], [200, 1000]),
    "olmo": _named(["stage1-step1000-tokens4B", "stage2-ingredient1-step200-tokens5B"], [1000, 200], [4 * B, 5 * B]),
    "olmo2_instruct": _named(["step_60", "step_360"], [60, 360]),
    "amber": _named(["ckpt_99", "ckpt_356"], [99, 356]),
    "trainer": _named(["checkpoint-200", "checkpoint-1000"], [200, 1000]),
    "deepspeed": _named(["global_step200", "global_step1000"], [200, 1000]),
    "pythia_readme": _pythia_readme,
    "olmo_catalogue": _olmo_catalogue,
}
HUB_REVISIONS = {"hub_listed": ["--revisions", "step1000,step200"], "hub_cached": ["--revisions", "cached"],
                 "hub_default": []}


@pytest.fixture(params=[*LAYOUTS, *HUB_REVISIONS])
def layout(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           sources: list[Path]) -> Layout:
    """Each layout holding the two source checkpoints; the hub ones in a fresh HF_HUB_CACHE (`main` = step1000)."""
    if request.param in LAYOUTS:
        return LAYOUTS[request.param](tmp_path / "run", sources)
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    late = write_hub_cache(cache, HUB_ID, "step1000", sources[1])
    write_hub_cache(cache, HUB_ID, "step200", sources[0])
    write_hub_cache(cache, HUB_ID, "main", sources[1], commit=late.name)
    monkeypatch.chdir(tmp_path)
    return Layout([HUB_ID, *HUB_REVISIONS[request.param]], [200, 1000], ["step200", "step1000"], [None, None],
                  revisions=True)


@pytest.fixture(scope="module")
def reference(sources: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both sweeps over a plain run of the two sources (`step_000001`, `step_000002`): what every layout must give."""
    root = tmp_path_factory.mktemp("reference")
    plain = _copies(root / "run", ["step_000001", "step_000002"], sources)
    task = _task(root)
    from interp.analyses import run as run_analysis

    patch = run_analysis("patch", run=plain, task=task, out=root / "patch", sites="resid_pre", device="cpu")
    induction = run_analysis("induction", run=plain, out=root / "induction", seq_len=4, batch=2)
    return {"patch": patch.tensors, "induction": induction.tensors}


def _task(root: Path) -> Path:
    task = root / "task.jsonl"
    task.write_text(TASK)
    return task


def _hashes(sources: list[Path]) -> list[str]:
    """The oracle: each source checkpoint's weights hash, computed where it was built (not where a layout put it)."""
    return [weights_sha256(source) for source in sources]


def _table(out: str, header: list[str]) -> list[list[str]]:
    """The rows of `interp info`'s checkpoint table under `header`."""
    lines = [line.split() for line in out.splitlines()]
    start = lines.index(header)
    return [row for row in lines[start + 1:] if row][:2]


def test_info_opens_every_layout(layout: Layout, sources: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["info", layout.argv[0]], capsys)
    assert code == 0, err
    has_tokens = any(layout.tokens)
    header = ["step", *(["tokens"] if has_tokens else []), "sha256", "revision" if layout.revisions else "directory"]
    rows = _table(out, header)
    expected = [[str(step), *([f"{tokens // B}B"] if has_tokens else []), sha[:12], shown]
                for step, tokens, sha, shown in zip(layout.steps, layout.tokens, _hashes(sources), layout.names)]
    assert rows == expected
    assert "identical weights" not in out


def _sweep(command: list[str], layout: Layout, out: Path, capsys: pytest.CaptureFixture[str],
           options: list[str]) -> Any:
    code, _, err = run([*command, *layout.argv, "--out", out, *options], capsys)
    assert code == 0, err
    assert "warning:" not in err
    return read_results(out)


def _recorded(checkpoints: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["step"], c["tokens"], c["weights_sha256"]) for c in checkpoints]


def test_patch_sweeps_every_layout(layout: Layout, sources: list[Path], reference: dict[str, Any], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    res = _sweep(["patch"], layout, tmp_path / "patch", capsys, ["--task", _task(tmp_path), *PATCH])
    assert _recorded(res.summary["checkpoints"]) == list(zip(layout.steps, layout.tokens, _hashes(sources)))
    assert [c["revision"] for c in res.summary["checkpoints"]] == (layout.names if layout.revisions else [None, None])
    assert res.summary["identical_weights"] == []
    for name, value in reference["patch"].items():
        torch.testing.assert_close(res.tensors[name], value, msg=name)


def test_induction_sweeps_every_layout(layout: Layout, sources: list[Path], reference: dict[str, Any],
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = _sweep(["induction", "scores"], layout, tmp_path / "induction", capsys, INDUCTION)
    assert res.summary["steps"] == layout.steps
    assert _recorded(res.summary["checkpoints"]) == list(zip(layout.steps, layout.tokens, _hashes(sources)))
    assert res.summary["identical_weights"] == []
    for name, value in reference["induction"].items():
        if name != "steps":
            torch.testing.assert_close(res.tensors[name], value, msg=name)
    assert res.tensors["steps"].tolist() == layout.steps


# --- weights we can vouch for ---------------------------------------------------------------------------------------
@pytest.fixture
def duplicated(tmp_path: Path, sources: list[Path]) -> Path:
    """A Pythia run whose step2000 serves step1000's weights (as pythia-2.8b's step branches did)."""
    return _copies(tmp_path / "run", ["step0", "step1000", "step2000"], [sources[0], sources[1], sources[1]])


def test_info_shows_identical_weights(duplicated: Path, sources: list[Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["info", duplicated], capsys)
    assert code == 0
    sha = _hashes(sources)[1]
    assert [row[:2] for row in _table(out, ["step", "sha256", "directory"])] == [["0", _hashes(sources)[0][:12]],
                                                                                ["1000", sha[:12]]]
    assert f"warning: step1000 and step2000 have identical weights (sha256 {sha[:12]})" in out.splitlines()


@pytest.mark.parametrize("command, options", [(["patch"], ["--task", "TASK", *PATCH]),
                                              (["induction", "scores"], INDUCTION)])
def test_identical_weights_warn_before_any_model_loads(duplicated: Path, sources: list[Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], command: list[str],
                                                       options: list[str]) -> None:
    from interp.models.native import NativeTransformer

    warned_at_first_load: list[str] = []
    real = NativeTransformer.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        if not warned_at_first_load:
            warned_at_first_load.append(capsys.readouterr().err)
        real(self, *args, **kwargs)

    monkeypatch.setattr(NativeTransformer, "__init__", spy)
    options = [str(_task(tmp_path)) if o == "TASK" else o for o in options]
    code, _, err = run([*command, duplicated, "--out", tmp_path / "out", *options], capsys)
    assert code == 0, err
    sha = _hashes(sources)[1][:12]
    finding = f"step1000 and step2000 have identical weights (sha256 {sha})"
    warnings = [line for line in warned_at_first_load[0].splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and finding in warnings[0]
    res = read_results(tmp_path / "out")
    assert len(res.summary["identical_weights"]) == 1 and finding in res.summary["identical_weights"][0]
    assert [c["step"] for c in res.summary["checkpoints"]] == [0, 1000, 2000]  # the sweep went on


@pytest.mark.parametrize("command, options", [(["patch"], ["--task", "TASK", *PATCH]),
                                              (["induction", "scores"], INDUCTION)])
def test_mixed_architectures_in_the_hub_cache_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          sources: list[Path], tiny_dir: Callable[[str], Path],
                                                          capsys: pytest.CaptureFixture[str], command: list[str],
                                                          options: list[str]) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    write_hub_cache(tmp_path / "cache", HUB_ID, "step200", sources[0])
    write_hub_cache(tmp_path / "cache", HUB_ID, "step1000", tiny_dir("llama"))
    options = [str(_task(tmp_path)) if o == "TASK" else o for o in options]
    assert_user_error(run([*command, HUB_ID, "--out", tmp_path / "out", *options], capsys), "checkpoints differ",
                      "GPT2LMHeadModel", "LlamaForCausalLM")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, options", [(["patch"], ["--task", "TASK", *PATCH]),
                                              (["induction", "scores"], INDUCTION)])
def test_revisions_are_for_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: list[Path],
                                   capsys: pytest.CaptureFixture[str], command: list[str],
                                   options: list[str]) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    write_hub_cache(tmp_path / "cache", HUB_ID, "step200", sources[0])
    options = [str(_task(tmp_path)) if o == "TASK" else o for o in options]
    directory = _copies(tmp_path / "run", ["step200"], sources)
    cases = [([directory, "--revisions", "step200"], ["--revisions", "hub id"]),
             ([HUB_ID, "--revisions", "step200,step5"], ["huggingface-cli download tiny-org/tiny-pythia --revision "
                                                         "step5"]),
             ([HUB_ID, "--revisions", " , "], ["--revisions"])]
    for argv, needles in cases:
        assert_user_error(run([*command, *argv, "--out", tmp_path / "out", *options], capsys), *needles)
        assert not (tmp_path / "out").exists()


# --- one model in memory at a time ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command, options", [(["patch"], ["--task", "TASK", *PATCH]),
                                              (["induction", "scores"], INDUCTION)])
def test_a_sweep_holds_one_model_at_a_time(tmp_path: Path, sources: list[Path], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], command: list[str],
                                           options: list[str]) -> None:
    """When each model is built, every model built before it is gone (no reference keeps an earlier checkpoint)."""
    from interp.models.native import NativeTransformer

    built: list[weakref.ref[Any]] = []
    alive_at_build: list[int] = []
    real = NativeTransformer.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        gc.collect()
        alive_at_build.append(sum(ref() is not None for ref in built))
        real(self, *args, **kwargs)
        built.append(weakref.ref(self))

    monkeypatch.setattr(NativeTransformer, "__init__", counting)
    options = [str(_task(tmp_path)) if o == "TASK" else o for o in options]
    run_dir = _copies(tmp_path / "run", ["step1", "step2", "step3"], [sources[0], sources[1], sources[0]])
    code, _, err = run([*command, run_dir, "--out", tmp_path / "out", *options], capsys)
    assert code == 0, err
    assert len(alive_at_build) >= 3 and alive_at_build == [0] * len(alive_at_build)
