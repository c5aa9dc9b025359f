"""The explorer (apps/explorer.py) under streamlit's AppTest: it finds every registered analysis's page through the
registry (`interp.analyses`), every page renders real results directories, the numbers it plots are the ones on disk
and its axis labels the ticks summary.json records, the run page lists each analysis's example command line and
starts it, errors show as messages, and `interp app` builds the right streamlit command line."""

from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from streamlit.testing.v1 import AppTest

from apps.views import runner
from apps.views.kinds import find_results, kind_of
from apptools import explorer as app
from interp.analyses import analyses
from interp.analyses import run as run_analysis
from interp.results import axes, read_results, write_results
from interp.testing import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]

EXPLORER = str(ROOT / "apps" / "explorer.py")
TASK = [{"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"},
        {"clean": "my friend likes the moon", "corrupted": "my friend likes a moon", "answer": ".", "wrong": " the"}]
PROMPTS = ["the cat sees the ball", "my friend likes the moon", "the dog sees a moon"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-checkpoint run and one results directory per analysis, written by the analyses themselves through
    the registry (truth, refusal and knowledge need the zoo's vocabulary, so theirs hold synthetic tensors of the
    real layout)."""
    base = tmp_path_factory.mktemp("app")
    run = base / "run"
    for seed, step in enumerate((100, 200)):
        tiny_checkpoint("llama", run / f"step_{step:06d}", seed=seed)
    results = base / "results"
    (base / "task.jsonl").write_text("".join(json.dumps(line) + "\n" for line in TASK))
    run_analysis("patch", run=run, task=base / "task.jsonl", out=results / "patch", sites="resid_pre,z,z_by_pos",
                 device="cpu")
    run_analysis("patch", run=run / "step_000100", task=base / "task.jsonl", out=results / "patch_other",
                 sites="resid_pre", device="cpu")
    (base / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    run_analysis("tuco", base=run / "step_000100", ft=run / "step_000200", prompts=base / "prompts.txt",
                 out=results / "tuco", alphas=("0", "1"), max_new_tokens=3)
    run_analysis("induction", run=run, out=results / "induction", seq_len=6, batch=2)
    run_analysis("attention", run=run, prompt=(PROMPTS[0],), out=results / "attention", seq_len=6, batch=2)
    run_analysis("lens", run=run, prompts=base / "prompts.txt", task=base / "task.jsonl", out=results / "lens",
                 steps=5)
    run_analysis("diff", base=run / "step_000100", post=run / "step_000200", prompts=base / "prompts.txt",
                 out=results / "diff")
    run_analysis("chain", analysis="diff", run=run, set=(f"prompts={base / 'prompts.txt'}",), out=results / "chain")
    (base / "grad.jsonl").write_text("".join(json.dumps({"instruction": p, "response": "the ball"}) + "\n"
                                             for p in PROMPTS))
    run_analysis("gradients", model=run / "step_000100", data=base / "grad.jsonl", model_b=run / "step_000200",
                 label_a="early", label_b="late", template="plain", out=results / "gradients")
    _synthetic(results)
    return results


NO_INPUTS = {"tokenization": {"bos": True, "padding": None}, "inputs": []}


def _synthetic(results: Path) -> None:
    """Truth, refusal and knowledge results with the tensor names, shapes and axes their analyses write."""
    from interp.analyses.refusal import refusal_axes
    from interp.analyses.truth import truth_axes

    g = torch.Generator().manual_seed(0)
    layers, d = 3, 8
    write_results(results / "truth", {"theta_base": torch.randn(layers, d, generator=g),
                                      "theta_post": torch.randn(layers, d, generator=g),
                                      "cosine": torch.rand(layers, generator=g),
                                      "mm_accuracy": torch.rand(2, 2, layers, generator=g),
                                      "lr_accuracy": torch.rand(2, layers, generator=g),
                                      "nie": torch.rand(2, 2, 2, generator=g)},
                  {"method": "truthfulness directions", "probe_layer": 1, "intervene_layers": [0, 1],
                   "nie": {"base_dir_in_post": {"true_to_false": 0.1, "false_to_true": 0.2}}}, analysis="truth",
                  axes=truth_axes(), **NO_INPUTS)
    write_results(results / "refusal", {"direction_base": torch.randn(layers, d, generator=g),
                                        "direction_post": torch.randn(layers, d, generator=g),
                                        "cosine": torch.rand(layers, generator=g),
                                        "baseline": torch.rand(2, 2, generator=g),
                                        "ablation": torch.rand(2, 2, generator=g),
                                        "addition": torch.rand(2, 2, generator=g)},
                  {"method": "refusal directions", "layer": 1, "pos": -1}, analysis="refusal",
                  axes=refusal_axes(SimpleNamespace(selection=None)), **NO_INPUTS)
    maps = {f"map_{k}": torch.randn(layers, 4, generator=g) for k in ("base", "post", "base_to_post", "post_to_base")}
    write_results(results / "knowledge", maps,
                  {"method": "knowledge storage", "correlations": {"pearson_base_post": 0.5}}, analysis="knowledge",
                  axes={name: axes("layer", "pos", pos=["a", "b", "a", "c"]) for name in maps}, **NO_INPUTS)


def charts(at: AppTest) -> list[dict]:
    """The plotly figures on the page, as JSON."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def stored(path: Path) -> dict[str, torch.Tensor]:
    """The tensors on disk, read with safetensors directly (the oracle for what the pages plot)."""
    return load_file(str(path / "results.safetensors"))


def test_every_results_directory_is_found_and_recognised(root: Path) -> None:
    kinds = {p.name: kind_of(read_results(p)) for p in find_results([root])}
    assert kinds == {"patch": "patch", "patch_other": "patch", "tuco": "tuco", "induction": "induction",
                     "gradients": "gradients", "a": "gradients", "b": "gradients", "truth": "truth",
                     "refusal": "refusal", "knowledge": "knowledge", "lens": "lens", "diff": "diff",
                     "attention": "attention", "chain": "chain", "step_000100__step_000200": "diff"}
    assert set(kinds.values()) == set(analyses())  # every registered analysis has results here, so its page is tested


@pytest.mark.parametrize("name", ["patch", "tuco", "induction", "gradients", "truth", "refusal", "knowledge", "lens",
                                  "diff", "attention", "chain"])
def test_each_page_is_found_through_the_registry(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch, root / name)
    assert at.header[0].value == analyses()[name].title and not at.error


def test_patching_heatmap_slider_and_differences(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch, root / "patch")
    assert at.header[0].value == "Activation patching"
    t = stored(root / "patch")
    [fig] = charts(at)
    assert fig["data"][0]["type"] == "heatmap" and fig["layout"]["title"]["text"] == "resid_pre: step 200"
    torch.testing.assert_close(torch.tensor(fig["data"][0]["z"]), t["resid_pre"][1])
    tokens = read_results(root / "patch").summary["prompt_tokens"]["clean"]  # the pos ticks label the columns
    assert fig["data"][0]["x"] == [html.escape(f"{i}:{token}", quote=False) for i, token in enumerate(tokens)]
    assert fig["data"][0]["y"] == ["L0", "L1"] and fig["layout"]["xaxis"]["title"]["text"] == "pos"

    at.select_slider(key="patch_ckpt").set_value("step 100").run()
    at.selectbox(key="patch_site").set_value("z")
    at.toggle(key="patch_raw").set_value(True).run()
    [fig] = charts(at)
    assert fig["data"][0]["x"] == ["H0", "H1", "H2", "H3"]
    torch.testing.assert_close(torch.tensor(fig["data"][0]["z"]), t["z.raw"][0])

    at.selectbox(key="patch_site").set_value("z_by_pos").run()
    z = torch.tensor(charts(at)[0]["data"][0]["z"])  # [layer, head, pos] shown as (layer head) rows
    torch.testing.assert_close(z.reshape(t["z_by_pos.raw"][0].shape), t["z_by_pos.raw"][0])

    at.selectbox(key="patch_site").set_value("resid_pre")
    at.toggle(key="patch_raw").set_value(False).run()
    at.radio(key="patch_mode").set_value("two checkpoints").run()
    at.selectbox(key="patch_other_ckpt").set_value("step 200").run()
    diff = charts(at)[1]["data"][0]
    torch.testing.assert_close(torch.tensor(diff["z"]), t["resid_pre"][0] - t["resid_pre"][1])

    at.radio(key="patch_mode").set_value("two models").run()
    at.selectbox(key="patch_other_dir").set_value(root / "patch_other").run()
    other = stored(root / "patch_other")
    torch.testing.assert_close(torch.tensor(charts(at)[1]["data"][0]["z"]), t["resid_pre"][0] - other["resid_pre"][0])
    assert not at.exception and not at.error


def test_directions_pages_plot_the_stored_curves(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch, root / "truth")
    t = stored(root / "truth")
    cosine, accuracy = charts(at)
    torch.testing.assert_close(torch.tensor(cosine["data"][0]["y"]), t["cosine"])
    by_name = {trace["name"]: trace["y"] for trace in accuracy["data"]}
    torch.testing.assert_close(torch.tensor(by_name["base probe on post"]), t["mm_accuracy"][0, 1])
    torch.testing.assert_close(torch.tensor(by_name["logistic probe on post"]), t["lr_accuracy"][1])

    at.sidebar.selectbox(key="results_dir").set_value(root / "refusal").run()
    assert at.header[0].value == "Refusal directions" and not at.exception
    t = stored(root / "refusal")
    table = at.dataframe[0].value
    assert table.loc["post", "ablate base dir, harmful"] == pytest.approx(float(t["ablation"][0, 1]))
    assert table.loc["base", "add post dir, harmless"] == pytest.approx(float(t["addition"][1, 0]))
    assert table.loc["post", "no intervention, harmless"] == pytest.approx(float(t["baseline"][1, 1]))


def test_knowledge_page(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch, root / "knowledge")
    at.selectbox(key="knowledge_map").set_value("post_to_base").run()
    [fig] = charts(at)
    assert fig["data"][0]["x"] == ["0:a", "1:b", "2:a", "3:c"]
    torch.testing.assert_close(torch.tensor(fig["data"][0]["z"]), stored(root / "knowledge")["map_post_to_base"])


def test_induction_page_curves_per_head(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch, root / "induction")
    t = stored(root / "induction")
    heads, icl = charts(at)
    best = int(t["induction"][-1].flatten().argmax())
    layer, head = divmod(best, t["induction"].shape[2])
    assert heads["data"][0]["name"] == f"L{layer}H{head}" and heads["data"][0]["x"] == [100, 200]
    torch.testing.assert_close(torch.tensor(heads["data"][0]["y"]), t["induction"][:, layer, head])
    torch.testing.assert_close(torch.tensor(icl["data"][0]["y"]), t["icl_score"])

    at.selectbox(key="ind_score").set_value("previous_token").run()
    at.multiselect(key="ind_heads").set_value(["L1H2"]).run()
    [trace] = charts(at)[0]["data"]
    torch.testing.assert_close(torch.tensor(trace["y"]), t["previous_token"][:, 1, 2])


def test_gradients_page_curves_per_projection(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch, root / "gradients")
    at.selectbox(key="grad_stat").set_value("frobenius").run()
    t = stored(root / "gradients")
    by_name = {trace["name"]: trace["y"] for trace in charts(at)[0]["data"]}
    assert set(by_name) == {f"{side}.{p}" for side in "ab" for p in "qkvo"}
    torch.testing.assert_close(torch.tensor(by_name["b.v"]), t["b.frobenius.v"])
    # the single-condition directory (OUT/a) has unprefixed curves
    at.sidebar.selectbox(key="results_dir").set_value(root / "gradients" / "a").run()
    by_name = {trace["name"]: trace["y"] for trace in charts(at)[0]["data"]}
    torch.testing.assert_close(torch.tensor(by_name["q"]), stored(root / "gradients" / "a")["frobenius.q"])


def test_tuco_page_table_and_histogram_from_the_results_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root.parent / "prompts.txt").write_text("changed since the run\n")  # the page must not read the prompt file
    at = app(root, monkeypatch, root / "tuco")
    t = stored(root / "tuco")
    table = at.dataframe[0].value
    assert list(table["prompt"]) == PROMPTS
    torch.testing.assert_close(torch.tensor(table["tuco"].to_list()), t["tuco"])
    [hist] = charts(at)
    torch.testing.assert_close(torch.tensor(hist["data"][0]["x"]), t["tuco"])
    assert not at.text_input and not at.slider  # no live rerun of the models: the explorer reads results only


def test_results_without_axes_show_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "old").mkdir()  # a directory an older interp wrote: no "tensors" entry in its summary
    save_file({"map_base": torch.zeros(2, 3)}, str(tmp_path / "old" / "results.safetensors"))
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"analysis": "knowledge"}))
    (tmp_path / "old" / "report.html").write_text("<p>old</p>")
    at = app(tmp_path, monkeypatch)
    assert len(at.error) == 1 and "does not describe the axes of" in at.error[0].value
    assert "rerun the analysis" in at.error[0].value


def test_the_run_page_lists_every_analysis_example(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch)
    at.sidebar.radio(key="mode").set_value("Run an analysis").run()
    commands = {" ".join(unit.command): unit.example for unit in analyses().values()}
    assert at.selectbox(key="run_kind").options == list(commands)
    for command, example in commands.items():
        at.selectbox(key="run_kind").set_value(command).run()
        assert example.startswith(f"{command} ") and at.text_input(key=f"run_args_{command}").value == example


def test_start_an_analysis_from_the_app(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch)
    at.sidebar.radio(key="mode").set_value("Run an analysis").run()
    at.selectbox(key="run_kind").set_value("induction scores").run()
    out = tmp_path / "fresh"
    run_dir = read_results(root / "induction").summary["run"]
    at.text_input(key="run_args_induction scores").input(
        f"induction scores {run_dir} --out {out} --seq-len 5 --batch 2").run()
    at.button(key="run_go").click().run()
    assert not at.exception and not at.error, at.error
    assert "finished" in at.success[0].value
    assert kind_of(read_results(out)) == "induction"
    at.sidebar.radio(key="mode").set_value("Browse results").run()
    assert str(out.resolve()) in at.sidebar.selectbox(key="results_dir").options


def test_a_failing_analysis_shows_its_error_line(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(root, monkeypatch)
    at.sidebar.radio(key="mode").set_value("Run an analysis").run()
    at.selectbox(key="run_kind").set_value("patch").run()
    at.text_input(key="run_args_patch").input(f"patch {root / 'nowhere'} --task t.jsonl --out {root / 'x'}").run()
    at.button(key="run_go").click().run()
    assert not at.exception
    assert at.error[0].value.startswith("error\\:") and "nowhere" in at.error[0].value  # shown as literal text


def test_bad_results_show_messages_not_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "odd").mkdir()  # written by some other tool: no "analysis" in its summary
    save_file({"something": torch.zeros(2)}, str(tmp_path / "odd" / "results.safetensors"))
    (tmp_path / "odd" / "summary.json").write_text("{}")
    (tmp_path / "odd" / "report.html").write_text("<p>odd</p>")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "broken" / "summary.json").write_text("{}")
    (tmp_path / "broken" / "report.html").write_text("<p>broken</p>")
    at = app(tmp_path, monkeypatch)  # shows "broken" first
    assert len(at.error) == 1 and not at.warning
    at.sidebar.selectbox(key="results_dir").set_value(tmp_path / "odd").run()
    assert not at.exception and "no page knows these results" in at.warning[0].value


def test_tqdm_progress_is_parsed() -> None:
    lines = list(runner.tqdm_lines(["patching checkpoints:  40%|####  | 2/5\rpatching chec", "kpoints:  60%|#\n"]))
    assert [runner.progress_of(line) for line in lines] == [("patching checkpoints", 40), ("patching checkpoints", 60)]
    assert runner.progress_of("no bar here") is None


def test_interp_app_command_line(tmp_path: Path) -> None:
    from interp.commands.app import streamlit_command
    from interp.errors import InterpError

    write_results(tmp_path / "r", {"x": torch.zeros(1)}, {}, analysis="patch", axes={"x": axes("x")}, **NO_INPUTS)
    cmd = streamlit_command([tmp_path], 8600, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == Path(EXPLORER)
    assert cmd[cmd.index("--server.port") + 1] == "8600" and cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[-2:] == ["--", str(tmp_path.resolve())]
    with pytest.raises(InterpError, match="no such directory"):
        streamlit_command([tmp_path / "missing"], 8600, "127.0.0.1")
