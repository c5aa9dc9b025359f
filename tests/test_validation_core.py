"""The checks every command relies on: weights that match their config exactly and are finite, devices, output
directories, whole-directory results, strict JSON, escaped reports, option ranges and progress in redirected logs."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from clitools import edit_weights
from interp import loading
from interp.checkpoints import weights_sha256
from interp.errors import InterpError
from interp.options import check_positions, check_range, parse_int_list, parse_names
from interp.outdir import check_out, replace_dir, scratch_dir
from interp.progress import progress
from interp.results import axes, read_results, strict_json, write_results


def damaged(src: Path, dst: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of checkpoint `src` at `dst` whose weights `edit` changed in place."""
    return edit_weights(shutil.copytree(src, dst), edit)


def first_matrix(tensors: dict[str, torch.Tensor]) -> str:
    return sorted(k for k, v in tensors.items() if v.ndim == 2 and "embed" not in k)[0]


def _drop(t: dict[str, torch.Tensor]) -> None:
    del t[first_matrix(t)]


def _reshape(t: dict[str, torch.Tensor]) -> None:
    t[first_matrix(t)] = torch.zeros(3, 3)


def _extra(t: dict[str, torch.Tensor]) -> None:
    t["model.layers.0.extra.weight"] = torch.zeros(2)


def _nan(t: dict[str, torch.Tensor]) -> None:
    t[first_matrix(t)][0, 0] = float("nan")


@pytest.mark.parametrize("edit, needle", [
    (_drop, "are missing"), (_reshape, "another shape"), (_extra, "does not describe"),
])
def test_weights_that_do_not_match_the_config_are_refused(tiny_dir: Callable[[str], Path], tmp_path: Path,
                                                          edit: Callable[[dict[str, torch.Tensor]], None],
                                                          needle: str) -> None:
    bad = damaged(tiny_dir("llama"), tmp_path / "bad", edit)
    for call in (loading.verify_checkpoint, lambda p: loading.load(p, backend="native", device="cpu")):
        with pytest.raises(InterpError, match=needle):
            call(bad)


def test_config_with_more_layers_than_the_weights_is_refused(tiny_dir: Callable[[str], Path],
                                                             tmp_path: Path) -> None:
    bad = shutil.copytree(tiny_dir("gpt2"), tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config | {"n_layer": config["n_layer"] + 1}))
    with pytest.raises(InterpError, match="are missing"):
        loading.load(bad, backend="transformer_lens", device="cpu")


@pytest.mark.parametrize("backend", ["native", "transformer_lens", "nnsight"])
def test_non_finite_weights_are_refused_naming_the_tensor(tiny_dir: Callable[[str], Path], tmp_path: Path,
                                                          backend: str) -> None:
    bad = damaged(tiny_dir("llama"), tmp_path / "nan", _nan)
    name = first_matrix(load_file(str(bad / "model.safetensors")))
    with pytest.raises(InterpError, match=f"weight {name} holds NaN"):
        loading.load(bad, backend=backend, device="cpu")


def test_a_sound_checkpoint_still_loads_exactly(tiny_dir: Callable[[str], Path]) -> None:
    from interp.models.convert import load_hf_causal_lm

    path = tiny_dir("gemma")
    model = loading.load(path, backend="native", device="cpu")
    tokens = torch.tensor([[1, 5, 9, 3]])
    assert torch.allclose(model(tokens), load_hf_causal_lm(path)(tokens).logits, atol=1e-4)


def test_cuda_on_a_machine_without_one_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InterpError, match="no usable CUDA GPU"):
        loading.resolve_device("cuda")
    with pytest.raises(InterpError, match="unknown device"):
        loading.resolve_device("gpu0")
    assert loading.resolve_device("auto") == torch.device("cpu")


def test_weights_hash_follows_the_content(tiny_dir: Callable[[str], Path], tmp_path: Path) -> None:
    import hashlib

    path = shutil.copytree(tiny_dir("llama"), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    expected = hashlib.sha256(b"model.safetensors\0" + weights.read_bytes()).hexdigest()
    assert weights_sha256(path) == expected == weights_sha256(path)  # the second from the cache
    damaged(tiny_dir("llama"), tmp_path / "other", _nan)
    shutil.copy(tmp_path / "other" / "model.safetensors", weights)
    assert weights_sha256(path) != expected


def _results(out: Path, value: float = 1.0, analysis: str = "patch", settings: dict | None = None) -> Path:
    return write_results(out, {"x": torch.full((2, 3), value)}, {"score": value}, [], title="t", analysis=analysis,
                         axes={"x": axes("row", "column")}, tokenization={"bos": None, "padding": None}, inputs=[],
                         settings=settings or {"a": 1})


def test_out_rules(tiny_dir: Callable[[str], Path], tmp_path: Path) -> None:
    assert check_out(tmp_path / "new", "patch", {}) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", "patch", {})
    (tmp_path / "file").write_text("x")
    with pytest.raises(InterpError, match="is a file"):
        check_out(tmp_path / "file", "patch", {})
    with pytest.raises(InterpError, match="is under .*file"):
        check_out(tmp_path / "file" / "out", "patch", {})
    for model_dir in (tiny_dir("gpt2"), tiny_dir("gpt2").parent):
        with pytest.raises(InterpError, match="checkpoint"):
            check_out(model_dir, "patch", {}, force=True)
    other = tmp_path / "project"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InterpError, match="did not write .*notes.txt"):
        check_out(other, "patch", {})
    check_out(other, "patch", {}, force=True)
    done = _results(tmp_path / "done", settings={"a": 1})
    check_out(done, "patch", {"a": 1})  # a rerun with the same settings
    with pytest.raises(InterpError, match="other settings"):
        check_out(done, "patch", {"a": 2})
    with pytest.raises(InterpError, match="results of `patch`"):
        check_out(done, "tuco", {"a": 1})


def test_results_are_replaced_as_a_whole_and_keep_partials(tmp_path: Path) -> None:
    out = _results(tmp_path / "out", 1.0)
    (out / "partial").mkdir()
    (out / "partial" / "0000.safetensors").write_text("kept")
    _results(out, 2.0)
    assert read_results(out).summary["score"] == 2.0 and float(read_results(out).tensors["x"][0, 0]) == 2.0
    assert (out / "partial" / "0000.safetensors").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directory left behind


def test_an_interrupted_write_leaves_the_old_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _results(tmp_path / "out", 1.0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("interp.results.render_report", killed)
    with pytest.raises(KeyboardInterrupt):
        _results(out, 2.0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_into_a_missing_target(tmp_path: Path) -> None:
    tmp = scratch_dir(tmp_path / "a")
    (tmp / "f").write_text("x")
    replace_dir(tmp, tmp_path / "a")
    assert (tmp_path / "a" / "f").read_text() == "x"


def test_results_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = _results(tmp_path / "out")
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {"0o644"}
    assert oct(out.stat().st_mode & 0o777) == "0o755"


def test_non_finite_results_are_refused_and_summaries_are_strict_json(tmp_path: Path) -> None:
    with pytest.raises(InterpError, match="'x' holds NaN"):
        _results(tmp_path / "nan", float("nan"))
    assert not (tmp_path / "nan").exists()
    out = write_results(tmp_path / "ok", {"x": torch.ones(1)}, {"r": [1.0, float("inf")], "s": float("nan")}, [],
                        analysis="patch", axes={"x": axes("x")}, tokenization={"bos": None, "padding": None}, inputs=[])
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert summary["r"] == [1.0, None] and summary["s"] is None
    assert summary["non_finite"]["keys"] == ["r[1]", "s"]
    assert strict_json({"a": {"b": (float("-inf"),)}}) == ({"a": {"b": [None]}}, ["a.b[0]"])


def test_report_titles_are_escaped(tmp_path: Path) -> None:
    out = write_results(tmp_path / "r", {"x": torch.ones(1)}, {}, [], title="<img src=x onerror=alert(1)>.jsonl",
                        analysis="patch", axes={"x": axes("x")}, tokenization={"bos": None, "padding": None}, inputs=[])
    page = (out / "report.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_option_checks() -> None:
    check_range("--alpha", 0.5, 0, 1)
    for value in (float("nan"), float("inf"), -1, 2):
        with pytest.raises(InterpError, match="--alpha"):
            check_range("--alpha", value, 0, 1)
    with pytest.raises(InterpError, match="--batch-size is 0, but it must be at least 1"):
        check_range("--batch-size", 0, 1)
    check_positions("--pos", [-1, 0, 4], 5)
    with pytest.raises(InterpError, match="--pos 5 is outside"):
        check_positions("--pos", [5], 5)
    assert parse_int_list("--layers", "1, 2", 0, 3) == [1, 2] and parse_int_list("--layers", None) is None
    with pytest.raises(InterpError, match="must be between 0 and 1"):
        parse_int_list("--layers", "7,8", 0, 1)
    for text in (",", "a,b"):
        with pytest.raises(InterpError, match="--layers"):
            parse_int_list("--layers", text)
    assert parse_names("--sites", "z, resid_pre", ["z", "resid_pre"]) == ("z", "resid_pre")
    with pytest.raises(InterpError, match="names nothing"):
        parse_names("--sites", " , ")
    with pytest.raises(InterpError, match="unknown name 'q'"):
        parse_names("--sites", "q", ["z"])


def test_progress_writes_lines_when_redirected(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert list(progress(range(3), desc="checkpoints", unit="ckpt")) == [0, 1, 2]
    lines = stream.getvalue().splitlines()
    assert lines and "\r" not in stream.getvalue() and "checkpoints: 100%" in lines[-1] and "3/3" in lines[-1]


def test_records_keep_their_file_line_numbers(tmp_path: Path, tiny_dir: Callable[[str], Path]) -> None:
    from interp.data.jsonl import numbered_records
    from interp.loading import load_tokenizer
    from patching.tasks import load_task

    good = {"clean": "the cat sees the moon.", "corrupted": "the dog sees the moon.", "answer": " a", "wrong": " b"}
    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good | {"wrong": " a"}) + "\n")
    assert [n for n, _ in numbered_records(path, ("clean",), "{}")] == [1, 3]
    with pytest.raises(InterpError, match="task.jsonl line 3"):
        load_task(path, load_tokenizer(tiny_dir("llama")))


@pytest.mark.parametrize("text", ["first prompt\nsecond\n", '{"prompt": "first prompt"}\n{"prompt": "second"}\n'])
def test_prompt_files_with_a_byte_order_mark(tmp_path: Path, text: str) -> None:
    from interp.data.prompts import read_prompts

    path = tmp_path / "prompts.txt"
    path.write_text("\ufeff" + text, encoding="utf-8")
    assert read_prompts(path) == ["first prompt", "second"]
