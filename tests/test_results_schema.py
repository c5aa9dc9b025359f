"""`write_results` makes results directories that describe themselves (issue 19, item 2): every tensor's axis names
and ticks, the tokenisation policy and every input's identity are in summary.json, and a tensor without axes (or with
the wrong number of them, or ticks that do not fit) is refused before anything is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from interp.checkpoints import weights_sha256
from interp.errors import InterpError
from interp.results import axes, input_identity, read_results, write_results

TOKENS = {"bos": True, "padding": "left"}


def write(out: Path, tensors: dict[str, torch.Tensor], described: dict[str, Any], **record: Any) -> Path:
    """`write_results` with a tokenisation policy and no inputs unless `record` overrides them."""
    return write_results(out, tensors, {"note": 1}, analysis="anything", axes=described,
                         **({"tokenization": TOKENS, "inputs": []} | record))


@pytest.mark.parametrize("described, needle", [
    ({}, "has no axis names"),
    ({"x": axes("layer")}, "has 2 dimensions but 1 axis names"),
    ({"x": axes("layer", "pos", "head")}, "has 2 dimensions but 3 axis names"),
    ({"x": axes("layer", "pos", pos=["a", "b"])}, "2 ticks for axis 'pos'"),
], ids=["missing", "too_few", "too_many", "ticks_misfit"])
def test_a_tensor_without_fitting_axes_is_refused_before_writing(tmp_path: Path, described: dict[str, Any],
                                                                   needle: str) -> None:
    with pytest.raises(InterpError, match=needle) as err:
        write(tmp_path / "out", {"x": torch.zeros(2, 3)}, described)
    assert "nothing was written" in str(err.value) and err.value.fix
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("record, needle", [
    ({"tokenization": {"bos": True}}, "lacks 'bos' or 'padding'"),
    ({"inputs": [{"role": "base", "path": "x"}]}, "lacks role, path or sha256"),
], ids=["tokenization", "input"])
def test_an_incomplete_record_is_refused_before_writing(tmp_path: Path, record: dict[str, Any], needle: str) -> None:
    with pytest.raises(InterpError, match=needle):
        write(tmp_path / "out", {"x": torch.zeros(2)}, {"x": axes("layer")}, **record)
    assert list(tmp_path.iterdir()) == []


def test_the_summary_describes_tensors_tokenisation_and_inputs(tmp_path: Path, tiny_dir: Any) -> None:
    ckpt = tiny_dir("llama")
    data = tmp_path / "prompts.txt"
    data.write_text("a prompt\nanother\n")
    tensors = {"map": torch.rand(2, 3), "steps": torch.tensor([10, 20]), "score": torch.tensor(0.5)}
    described = {"map": axes("layer", "pos", pos=["the", " cat", " sat"], checkpoint=[1, 2]),
                 "steps": axes("checkpoint", checkpoint=["step_10", "step_20"]), "score": axes()}
    inputs = [input_identity("base", ckpt), input_identity("prompts", data, n=2)]
    out = write(tmp_path / "out", tensors, described, inputs=inputs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tensors"] == {
        "map": {"axes": ["layer", "pos"], "ticks": {"pos": ["the", " cat", " sat"]}, "shape": [2, 3],
                "dtype": "float32"},  # ticks of axes the tensor lacks are dropped
        "steps": {"axes": ["checkpoint"], "ticks": {"checkpoint": ["step_10", "step_20"]}, "shape": [2],
                  "dtype": "int64"},
        "score": {"axes": [], "ticks": {}, "shape": [], "dtype": "float32"}}
    assert summary["tokenization"] == TOKENS and summary["analysis"] == "anything"  # any analysis name
    assert summary["inputs"] == [
        {"role": "base", "path": str(ckpt), "sha256": weights_sha256(ckpt)},  # a checkpoint: its weights' hash
        {"role": "prompts", "path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "n": 2}]
    torch.testing.assert_close(read_results(out).tensors["map"], tensors["map"])  # the tensors themselves unchanged


def test_a_directory_input_is_identified_by_its_files(tmp_path: Path) -> None:
    data = tmp_path / "refusal"
    data.mkdir()
    (data / "harmful_train.json").write_text("[]")
    first = input_identity("data", data)["sha256"]
    (data / "harmful_train.json").write_text("[{}]")
    assert input_identity("data", data)["sha256"] != first
