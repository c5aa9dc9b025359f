"""`interp chain` (one base-vs-post analysis over a chain of models) against its oracle, the pair analysis run on each
pair directly: every pair's results.safetensors equals `interp diff A B`'s, the chain's headline tensors equal the
numbers in each pair's summary.json, the pairs are the adjacent ones then each stage against the base, a rerun reuses
the finished pairs, and hostile inputs are refused with exit 2 before any compute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clitools import assert_user_error, run
from interp.analyses import run as run_analysis
from interp.cli import main
from interp.testing import tiny_checkpoint

PROMPTS = ["the cat sat on the mat", "hello", "a b c d e f g h i j"]
STEPS = (100, 200, 300)
PAIRS = ["step_000100__step_000200", "step_000200__step_000300", "step_000100__step_000300"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of three tiny random Llama checkpoints (one seed each) and a prompt file beside it."""
    root = tmp_path_factory.mktemp("chain")
    for seed, step in enumerate(STEPS):
        tiny_checkpoint("llama", root / "run" / f"step_{step:06d}", seed=seed)
    (root / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    return root


@pytest.fixture(scope="module")
def diff_chain(chain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`interp chain diff` on the run, through the command line."""
    out = tmp_path_factory.mktemp("chain_out") / "diff"
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in ["chain", "diff", chain / "run", "--set", f"prompts={chain / 'prompts.txt'}", "--set",
                               "top-k=3", "--set", "adl_positions=2", "--out", out]])
    assert done.value.code == 0
    return out


def test_pairs_are_adjacent_then_against_the_base(diff_chain: Path) -> None:
    summary = json.loads((diff_chain / "summary.json").read_text())
    assert [(p["base"], p["post"]) for p in summary["pairs"]] == [
        ("step_000100", "step_000200"), ("step_000200", "step_000300"), ("step_000100", "step_000300")]
    assert [p["label"] for p in summary["pairs"]] == PAIRS
    assert sorted(p.name for p in (diff_chain / "pairs").iterdir()) == sorted(PAIRS)
    assert summary["pair_settings"] == {"prompts": str(Path(summary["pair_settings"]["prompts"])), "top_k": 3,
                                        "adl_positions": 2}


def test_each_pair_equals_interp_diff_on_that_pair(diff_chain: Path, chain: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for label in PAIRS:
        a, b = label.split("__")
        direct = tmp_path / label
        code, _, err = run(["diff", chain / "run" / a, chain / "run" / b, "--prompts", chain / "prompts.txt",
                            "--top-k", "3", "--adl-positions", "2", "--out", direct], capsys)
        assert code == 0, err
        ours, theirs = load_file(diff_chain / "pairs" / label / "results.safetensors"), load_file(
            direct / "results.safetensors")
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
        settings = [json.loads((d / "summary.json").read_text())["settings_sha256"]
                    for d in (diff_chain / "pairs" / label, direct)]
        assert settings[0] == settings[1]


def test_headlines_are_the_pairs_summary_numbers(diff_chain: Path) -> None:
    tensors = load_file(diff_chain / "results.safetensors")
    summary = json.loads((diff_chain / "summary.json").read_text())
    assert set(tensors) == {"mean_kl_base_post", "mean_kl_post_base"}
    for name, direction in (("mean_kl_base_post", "base||post"), ("mean_kl_post_base", "post||base")):
        expected = [json.loads((diff_chain / "pairs" / label / "summary.json").read_text())["mean_kl"][direction]
                    for label in PAIRS]
        assert torch.equal(tensors[name], torch.tensor(expected, dtype=torch.float64))
        assert summary["tensors"][name]["axes"] == ["pair"]
        assert summary["tensors"][name]["ticks"]["pair"] == PAIRS
    assert (tensors["mean_kl_base_post"] > 0).all()


def test_a_rerun_reuses_finished_pairs(diff_chain: Path, chain: Path) -> None:
    before = {label: (diff_chain / "pairs" / label / "summary.json").stat().st_mtime_ns for label in PAIRS}
    shutil.rmtree(diff_chain / "pairs" / PAIRS[1])  # as if interrupted before that pair
    results = run_analysis("chain", analysis="diff", run=chain / "run", out=diff_chain,
                           set=(f"prompts={chain / 'prompts.txt'}", "top-k=3", "adl_positions=2"))
    after = {label: (diff_chain / "pairs" / label / "summary.json").stat().st_mtime_ns for label in PAIRS}
    assert after[PAIRS[0]] == before[PAIRS[0]] and after[PAIRS[2]] == before[PAIRS[2]]
    assert results.summary["pairs"][1]["label"] == PAIRS[1] and (diff_chain / "pairs" / PAIRS[1]).is_dir()


def test_a_manifest_gives_the_order(chain: Path, tmp_path: Path) -> None:
    """Stages listed out of step order run in the manifest's order (steps given there); a rerun after a data file's
    content changed recomputes the pair."""
    stages = tmp_path / "stages"
    stages.mkdir()
    order = [("base", 300), ("sft", 100)]
    for name, step in order:
        (stages / name).symlink_to(chain / "run" / f"step_{step:06d}")
    (stages / "checkpoints.json").write_text(json.dumps(
        {"checkpoints": [{"path": name, "step": i} for i, (name, _) in enumerate(order)]}))
    prompts = tmp_path / "prompts.txt"
    shutil.copy(chain / "prompts.txt", prompts)
    settings = {"analysis": "diff", "run": stages / "checkpoints.json", "out": tmp_path / "out",
                "set": (f"prompts={prompts}", "adl_positions=2")}
    results = run_analysis("chain", **settings)
    assert [p["label"] for p in results.summary["pairs"]] == ["step_000000__step_000001"]
    pair_dir = tmp_path / "out" / "pairs" / "step_000000__step_000001"
    pair = json.loads((pair_dir / "summary.json").read_text())
    assert [Path(pair[role]).resolve() for role in ("base", "post")] == [
        (chain / "run" / f"step_{step:06d}").resolve() for _, step in order]
    prompts.write_text("a b c\n")  # same settings, other content: the pair is recomputed, not reused
    run_analysis("chain", **settings)
    assert json.loads((pair_dir / "summary.json").read_text())["n_prompts"] == 1


def test_a_manifest_across_runs_keeps_its_listed_order(chain: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """base/step_001800 then chat/step_000017, steps from the names: the pair is (base, chat) although 17 < 1800."""
    stages = tmp_path / "stages"
    listed = {"base/step_001800": 300, "chat/step_000017": 100}
    for name, step in listed.items():
        shutil.copytree(chain / "run" / f"step_{step:06d}", stages / name)
    (stages / "checkpoints.json").write_text(json.dumps({"checkpoints": [{"path": name} for name in listed]}))
    code, _, err = run(["chain", "diff", stages, "--set", f"prompts={chain / 'prompts.txt'}", "--set",
                        "adl_positions=2", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [c["step"] for c in summary["checkpoints"]] == [1800, 17]
    assert [(p["base"], p["post"]) for p in summary["pairs"]] == [("step_001800", "step_000017")]
    pair = json.loads((tmp_path / "out" / "pairs" / "step_001800__step_000017" / "summary.json").read_text())
    assert [Path(pair[role]).resolve() for role in ("base", "post")] == [(stages / n).resolve() for n in listed]


@pytest.mark.parametrize("args, needles", [
    (["nonesuch"], ["no analysis is called 'nonesuch'"]),
    (["patch"], ["'patch' is not a base-vs-post analysis", "diff"]),
    (["chain"], ["'chain' is not a base-vs-post analysis"]),
    (["diff", "--set", "nonesuch=1"], ["no setting 'nonesuch'", "top-k"]),
    (["diff", "--set", "top-k=many"], ["'many' is not a valid int"]),
    (["diff", "--set", "out=x"], ["no setting 'out'"]),
    (["diff", "--set", "base=x"], ["no setting 'base'"]),
    (["diff", "--set", "top-k"], ["is not KEY=VALUE"]),
    (["diff", "--set", "top-k=3", "--set", "top_k=4"], ["top_k is given twice"]),
    (["diff", "--set", "no-bos=1"], ["is not KEY=VALUE"]),
    (["tuco"], ["needs prompts", "--set prompts="]),
])
def test_hostile_settings_exit_2_before_compute(args: list[str], needles: list[str], chain: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    name, *sets = args
    sets = sets if sets or name != "diff" else []
    if name == "diff" and not any("prompts" in a for a in sets):
        sets += ["--set", f"prompts={chain / 'prompts.txt'}"]
    assert_user_error(run(["chain", name, chain / "run", *sets, "--out", tmp_path / "out"], capsys), *needles)
    assert not (tmp_path / "out").exists()


def test_hostile_chains_exit_2_before_compute(chain: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["--set", f"prompts={chain / 'prompts.txt'}"]
    one = tmp_path / "one"
    one.mkdir()
    (one / "step_000100").symlink_to(chain / "run" / "step_000100")
    assert_user_error(run(["chain", "diff", one, *sets, "--out", tmp_path / "out"], capsys), "one checkpoint")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "step_000100").symlink_to(chain / "run" / "step_000100")
    tiny_checkpoint("llama", mixed / "step_000200", intermediate_size=96)  # another MLP width
    assert_user_error(run(["chain", "diff", mixed, *sets, "--out", tmp_path / "out"], capsys), "checkpoints differ")
    assert_user_error(run(["chain", "diff", chain / "run", "--set", "prompts=/nonexistent.txt", "--out",
                           tmp_path / "out"], capsys), "nonexistent")
    assert not (tmp_path / "out").exists()


def test_a_different_chain_in_the_same_out_is_refused(diff_chain: Path, chain: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(run(["chain", "diff", chain / "run", "--set", f"prompts={chain / 'prompts.txt'}",
                           "--out", diff_chain], capsys), "other settings")


def test_tuco_over_the_chain(chain: Path, tmp_path: Path) -> None:
    """TuCo's headlines are its pairs' mean TuCo and OutputCo (no AUC without a second prompt set)."""
    results = run_analysis("chain", analysis="tuco", run=chain / "run", out=tmp_path / "tuco",
                           set=(f"prompts={chain / 'prompts.txt'}", "alphas=0", "alphas=1", "max-new-tokens=2"))
    assert set(results.tensors) == {"tuco_mean", "output_co_mean"}
    for i, label in enumerate(PAIRS):
        pair = json.loads((tmp_path / "tuco" / "pairs" / label / "summary.json").read_text())
        assert pair["alphas"] == ["0", "1"]
        assert results.tensors["tuco_mean"][i].item() == pair["prompts"]["tuco_mean"]
        assert results.tensors["output_co_mean"][i].item() == pair["prompts"]["output_co_mean"]


def test_the_page_shows_the_stored_headlines(diff_chain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from apptools import explorer

    at = explorer(diff_chain.parent, monkeypatch, diff_chain)
    assert at.header[0].value == "Chain of models" and not at.error
    tensors = load_file(diff_chain / "results.safetensors")
    table = at.dataframe[0].value
    assert list(table["pair"]) == PAIRS
    assert list(table["directory"]) == [str(diff_chain / "pairs" / label) for label in PAIRS]
    assert table["mean_kl_base_post"].tolist() == tensors["mean_kl_base_post"].tolist()
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert [c["data"][0]["y"] for c in charts] == [tensors[k].tolist() for k in ("mean_kl_base_post",
                                                                                  "mean_kl_post_base")]
    assert charts[0]["data"][0]["x"] == PAIRS


def test_set_values_parse_to_each_fields_type() -> None:
    from interp.analyses import analysis
    from interp.analyses.chain import parse_sets

    diff = parse_sets(analysis("diff"), ("base", "post"), ("prompts=p.txt", "no-bos", "top-k=3", "adl_text=a.txt",
                                                           "device=cpu"))
    assert diff == {"prompts": Path("p.txt"), "bos": False, "top_k": 3, "adl_text": Path("a.txt"), "device": "cpu"}
    tuco = parse_sets(analysis("tuco"), ("base", "ft"), ("prompts=p.txt", "alphas=0", "alpha=0.5", "bos=true",
                                                         "behaviour-prefix=I can't"))
    assert tuco == {"prompts": Path("p.txt"), "alphas": ("0", "0.5"), "bos": True, "behaviour_prefixes": ("I can't",)}
