"""Hostile inputs to `interp directions truth|refusal` and `interp knowledge` (issue 17): each case is one line
`error: ... (fix: ...)` with exit status 2, said before any compute, and nothing outside --out changes (the checkpoints
included). Models: the quick zoo's last base and chat checkpoints, tiny random checkpoints for other tokenizers and
architectures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from clitools import assert_unchanged, assert_user_error, run, tree_state
from interp.checkpoints import discover
from interp.data.sources import source

TRUTH = ["directions", "truth", "BASE", "POST", "--out", "W/out"]
REFUSAL = ["directions", "refusal", "BASE", "POST", "--out", "W/out"]
KNOWLEDGE = ["knowledge", "BASE", "POST", "--out", "W/out"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def write_csv(path: Path, rows: list[tuple[str, Any]], header: tuple[str, str] = ("statement", "label")) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def refusal_dir(path: Path, files: dict[str, Any]) -> None:
    """A refusal data directory holding `files` (name -> JSON value, or bytes written as they are)."""
    path.mkdir()
    for name, value in files.items():
        (path / name).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())


def make_workspace(work: Path) -> None:
    """Every hostile input file the cases name, and a few good ones."""
    good = [(s.text, int(s.label)) for s in source().truth_statements("train")[:40]]
    write_csv(work / "good.csv", good)
    write_csv(work / "four.csv", [r for r in good if r[1]][:2] + [r for r in good if not r[1]][:2])
    write_csv(work / "one_row.csv", good[:1])
    write_csv(work / "one_class.csv", [r for r in good if r[1]][:3])
    write_csv(work / "columns.csv", good[:4], header=("text", "truth"))
    write_csv(work / "bad_label.csv", [good[0], (good[1][0], "yes")])
    write_csv(work / "empty_statement.csv", [("  ", 1), good[1]])
    write_csv(work / "header_only.csv", [])
    write_csv(work / "long.csv", [(" ".join([s] * 40), label) for s, label in good[:4]])
    long_pairs = [(" ".join([s.text] * 30), int(s.label)) for pair in source().truth_pairs("test")[:12] for s in pair]
    write_csv(work / "long_pairs.csv", long_pairs)
    write_csv(work / "unpaired.csv", [("the sky is blue.", 1), ("grass is purple today.", 0)])
    (work / "latin1.csv").write_bytes("statement,label\ncaf\xe9 is a word.,1\nthe moon is cheese.,0\n"
                                      .encode("latin-1"))
    (work / "afile").write_text("not a directory\n")
    (work / "foreign").mkdir()
    (work / "foreign" / "notes.txt").write_text("mine\n")
    item = [{"instruction": "tell me a story", "category": None}]
    four = {f"{k}_{s}.json": item for k in ("harmful", "harmless") for s in ("train", "val")}
    refusal_dir(work / "no_val", {k: v for k, v in four.items() if k != "harmful_val.json"})
    refusal_dir(work / "bad_json", four | {"harmless_train.json": b"[{\"instruction\": "})
    latin1 = '[{"instruction": "caf\xe9"}]'.encode("latin-1")
    refusal_dir(work / "latin1_json", four | {"harmful_train.json": latin1})
    refusal_dir(work / "empty_list", four | {"harmful_val.json": []})
    refusal_dir(work / "no_instruction", four | {"harmless_val.json": [item[0], {"prompt": "x"}]})


CASES = [
    # directions truth: options
    ("truth-intervene-layers-beyond-the-model", [*TRUTH, "--intervene-layers", "7,8"], ["--intervene-layers is 7",
                                                                                       "between 0 and 1"]),
    ("truth-intervene-layers-twice", [*TRUTH, "--intervene-layers", "1,1"], ["names a layer twice"]),
    ("truth-intervene-layers-empty", [*TRUTH, "--intervene-layers", ","], ["names nothing"]),
    ("truth-probe-layer-beyond", [*TRUTH, "--probe-layer", "2"], ["--probe-layer is 2"]),
    ("truth-probe-layer-negative", [*TRUTH, "--probe-layer", "-1"], ["--probe-layer is -1"]),
    ("truth-pos-zero", [*TRUTH, "--pos", "0"], ["--pos is 0", "and -1"]),
    ("truth-pos-beyond-statements", [*TRUTH, "--pos", "-99"], ["--pos is -99"]),
    ("truth-n-steer-0", [*TRUTH, "--n-steer", "0"], ["--n-steer is 0"]),
    ("truth-n-steer-1", [*TRUTH, "--n-steer", "1"], ["--n-steer is 1"]),
    ("truth-batch-size-0", [*TRUTH, "--batch-size", "0"], ["--batch-size is 0"]),
    ("truth-coeff-nan", [*TRUTH, "--coeff", "nan"], ["--coeff is nan"]),
    ("truth-coeff-inf", [*TRUTH, "--coeff", "inf"], ["--coeff is inf"]),
    ("truth-hook-unknown", [*TRUTH, "--hook", "resid_foo"], ["--hook 'resid_foo'", "resid_pre"]),
    ("truth-resid-mid-of-parallel-neox", ["directions", "truth", "NEOX", "NEOX", "--out", "W/out", "--hook",
                                          "resid_mid"], ["resid_mid does not exist"]),
    ("truth-device-cuda", [*TRUTH, "--device", "cuda"], ["no usable CUDA GPU"]),
    ("truth-pair-incompatible", ["directions", "truth", "BASE", "TINY", "--out", "W/out"], ["checkpoints differ"]),
    # directions truth: CSVs
    ("truth-csv-not-utf8", [*TRUTH, "--data", "W/latin1.csv"], ["latin1.csv is not UTF-8"]),
    ("truth-csv-one-row", [*TRUTH, "--data", "W/one_row.csv"], ["one_row.csv has 1 true and 0 false"]),
    ("truth-csv-one-class", [*TRUTH, "--data", "W/one_class.csv"], ["one_class.csv has 3 true and 0 false"]),
    ("truth-csv-one-class-among-good", [*TRUTH, "--data", "W/good.csv", "--data", "W/one_class.csv"],
     ["one_class.csv has 3 true"]),
    ("truth-csv-columns", [*TRUTH, "--data", "W/columns.csv"], ["columns.csv lacks the columns statement,label"]),
    ("truth-csv-label", [*TRUTH, "--data", "W/bad_label.csv"], ["bad_label.csv, line 3", "'yes' is not 0 or 1"]),
    ("truth-csv-empty-statement", [*TRUTH, "--data", "W/empty_statement.csv"], ["line 2", "statement is empty"]),
    ("truth-csv-header-only", [*TRUTH, "--data", "W/header_only.csv"], ["holds no statements"]),
    ("truth-csv-missing", [*TRUTH, "--data", "W/missing.csv"], ["missing.csv does not exist"]),
    ("truth-csv-directory", [*TRUTH, "--data", "W/no_val"], ["no_val is a directory"]),
    ("truth-eval-one-class", [*TRUTH, "--data", "W/good.csv", "--eval", "W/one_class.csv"], ["one_class.csv has"]),
    ("truth-eval-without-data", [*TRUTH, "--eval", "W/good.csv"], ["--eval needs --data"]),
    ("truth-split-one-class", [*TRUTH, "--data", "W/four.csv"], ["held-out part of four.csv has"]),
    ("truth-context", [*TRUTH, "--data", "W/long.csv", "--eval", "W/long.csv"],
     ["longer than the model's context of 256"]),
    # directions truth: --out
    ("truth-out-a-file", [*TRUTH[:-1], "W/afile"], ["is a file"]),
    ("truth-out-under-a-file", [*TRUTH[:-1], "W/afile/out"], ["is under"]),
    ("truth-out-the-checkpoint", [*TRUTH[:-1], "BASE"], ["is a model checkpoint directory"]),
    ("truth-out-foreign", [*TRUTH[:-1], "W/foreign"], ["already holds files", "notes.txt"]),
    # directions refusal
    ("refusal-n-train-0", [*REFUSAL, "--n-train", "0"], ["--n-train is 0"]),
    ("refusal-n-test-0", [*REFUSAL, "--n-test", "0"], ["--n-test is 0"]),
    ("refusal-max-new-tokens-0", [*REFUSAL, "--max-new-tokens", "0"], ["--max-new-tokens is 0"]),
    ("refusal-batch-size-0", [*REFUSAL, "--batch-size", "0"], ["--batch-size is 0"]),
    ("refusal-coeff-nan", [*REFUSAL, "--coeff", "nan"], ["--coeff is nan"]),
    ("refusal-layer-beyond", [*REFUSAL, "--layer", "2"], ["--layer is 2", "between 0 and 1"]),
    ("refusal-layer-negative", [*REFUSAL, "--layer", "-1"], ["--layer is -1"]),
    ("refusal-template-without-instruction", [*REFUSAL, "--template", "User: hello\nAssistant:"],
     ["has no {instruction}"]),
    ("refusal-template-other-field", [*REFUSAL, "--template", "{name}: {instruction}"], ["not a format string",
                                                                                         "KeyError"]),
    ("refusal-template-unclosed", [*REFUSAL, "--template", "User: {instruction"], ["not a format string"]),
    ("refusal-pos-zero", [*REFUSAL, "--pos", "0"], ["--pos is 0"]),
    ("refusal-pos-beyond-prompts", [*REFUSAL, "--pos", "-9999"], ["--pos is -9999"]),
    ("refusal-context", [*REFUSAL, "--max-new-tokens", "300"], ["+ 300", "longer than the model's context of 256"]),
    ("refusal-data-missing", [*REFUSAL, "--data", "W/nowhere"], ["nowhere does not exist", "harmful_val.json"]),
    ("refusal-data-a-file", [*REFUSAL, "--data", "W/good.csv"], ["is a file, not a directory"]),
    ("refusal-data-no-val", [*REFUSAL, "--data", "W/no_val"], ["has no harmful_val.json", "harmless_train.json"]),
    ("refusal-data-bad-json", [*REFUSAL, "--data", "W/bad_json"], ["harmless_train.json is not UTF-8 JSON"]),
    ("refusal-data-not-utf8", [*REFUSAL, "--data", "W/latin1_json"], ["harmful_train.json is not UTF-8 JSON"]),
    ("refusal-data-empty-list", [*REFUSAL, "--data", "W/empty_list"], ["harmful_val.json is not a non-empty"]),
    ("refusal-data-no-instruction", [*REFUSAL, "--data", "W/no_instruction"], ["harmless_val.json: item 1"]),
    ("refusal-out-checkpoint", [*REFUSAL[:-1], "POST"], ["is a model checkpoint directory"]),
    ("refusal-device-cuda", [*REFUSAL, "--device", "cuda"], ["no usable CUDA GPU"]),
    # knowledge
    ("knowledge-n-pairs-0", [*KNOWLEDGE, "--n-pairs", "0"], ["--n-pairs is 0"]),
    ("knowledge-n-shots-negative", [*KNOWLEDGE, "--n-shots", "-1"], ["--n-shots is -1"]),
    ("knowledge-backend", [*KNOWLEDGE, "--backend", "cuda-magic"], ["unknown patching backend 'cuda-magic'"]),
    ("knowledge-csv-one-class", [*KNOWLEDGE, "--data", "W/one_class.csv"], ["one_class.csv has 3 true"]),
    ("knowledge-csv-not-utf8", [*KNOWLEDGE, "--data", "W/latin1.csv"], ["is not UTF-8"]),
    ("knowledge-context", [*KNOWLEDGE, "--data", "W/long_pairs.csv"], ["longer than the model's context of 256"]),
    ("knowledge-no-pairs", [*KNOWLEDGE, "--data", "W/unpaired.csv"], ["no true statement has a false partner"]),
    ("knowledge-multi-token-answers", ["knowledge", "TINY", "TINY", "--out", "W/out"], ["'TRUE' is 4 tokens",
                                                                                       "one TRUE and one FALSE"]),
    ("knowledge-pair-incompatible", ["knowledge", "TINY", "BASE", "--out", "W/out"], ["checkpoints differ"]),
    ("knowledge-out-foreign", [*KNOWLEDGE[:-1], "W/foreign"], ["already holds files"]),
    ("knowledge-device-cuda", [*KNOWLEDGE, "--device", "cuda"], ["no usable CUDA GPU"]),
]


@pytest.fixture(scope="module")
def models(zoo_quick: Path, tiny_dir: Any) -> dict[str, Path]:
    """Placeholder -> checkpoint: the quick zoo's last base and chat checkpoints, a tiny Llama and GPT-NeoX (verified
    here once: the meta-device check prints Hugging Face's loading bar the first time)."""
    from interp.loading import verify_checkpoint

    found = {"BASE": discover(zoo_quick / "base")[-1].path, "POST": discover(zoo_quick / "chat")[-1].path,
             "TINY": tiny_dir("llama"), "NEOX": tiny_dir("gpt_neox")}
    for path in found.values():
        verify_checkpoint(path)
    return found


def expand(argv: list[str], models: dict[str, Path], work: Path) -> list[str]:
    """Fill in the placeholders: model names and W/ (the workspace)."""
    return [str(models[a]) if a in models else str(work / a[2:]) if a.startswith("W/") else a for a in argv]


@pytest.mark.parametrize("argv,needles", [pytest.param(argv, needles, id=name,
                                                       marks=NO_CUDA if name.endswith("device-cuda") else ())
                                          for name, argv, needles in CASES])
def test_hostile_input_is_one_line_error_and_changes_nothing(argv: list[str], needles: list[str],
                                                             models: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    make_workspace(tmp_path)
    args = expand(argv, models, tmp_path)
    out = Path(args[args.index("--out") + 1])
    watched = {root: tree_state(root) for root in {models[a] for a in argv if a in models}}
    before = tree_state(tmp_path)
    assert_user_error(run(args, capsys), *needles)
    assert_unchanged(tmp_path, before, out)
    for root, state in watched.items():
        assert_unchanged(root, state)
    assert not (tmp_path / "out").exists()  # refused before anything was written
