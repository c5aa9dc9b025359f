"""Loaders for the truth and refusal data: Geometry-of-Truth CSVs, refusal-direction JSON lists, and the zoo's own.

Geometry of Truth (Marks & Tegmark 2023): CSV with columns `statement,label` (1 true, 0 false), extra columns ignored.
Refusal (Arditi et al. 2024): a JSON list of `{"instruction": str, "category": str | null}`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError


@dataclass(frozen=True)
class Statement:
    """One true/false statement; `source` names the dataset it came from (for per-dataset centring)."""

    text: str
    label: bool
    source: str = ""


def load_truth_csv(path: str | Path) -> list[Statement]:
    """Statements of a Geometry-of-Truth CSV (`statement,label`)."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"truth dataset {path} does not exist", fix="pass a CSV with columns statement,label")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"statement", "label"} <= set(reader.fieldnames):
            raise InterpError(f"{path} lacks the columns statement,label (has {reader.fieldnames})",
                              fix="use the Geometry-of-Truth CSV format: statement,label with label 1 or 0")
        rows = list(reader)
    try:
        return [Statement(row["statement"], bool(int(row["label"])), path.stem) for row in rows]
    except ValueError as err:
        raise InterpError(f"{path}: a label is not 0 or 1 ({err})", fix="labels must be 1 (true) or 0 (false)") from err


def load_instructions(path: str | Path) -> list[str]:
    """Instructions of a refusal JSON list (`[{"instruction": ..., "category": ...}, ...]`)."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"refusal dataset {path} does not exist", fix="pass a JSON list of {\"instruction\": ...}")
    try:
        items = json.loads(path.read_text())
        return [str(item["instruction"]) for item in items]
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise InterpError(f"{path} is not a list of {{\"instruction\": ...}} objects ({err!r})",
                          fix="use the refusal_direction JSON format") from err


def load_refusal_dir(directory: str | Path, split: str = "train") -> tuple[list[str], list[str]]:
    """(harmful, harmless) instructions from a directory laid out like ../shared/datasets/refusal/."""
    directory = Path(directory)
    return (load_instructions(directory / f"harmful_{split}.json"),
            load_instructions(directory / f"harmless_{split}.json"))


def zoo_statements(split: str) -> list[Statement]:
    """The zoo's own true/false statements of one split."""
    from interp.zoo import data

    return [Statement(text, bool(label), f"zoo_{split}") for text, label in data.truth_statements(split)]


def zoo_pairs(split: str) -> list[tuple[Statement, Statement]]:
    """The zoo's (true, false) statement pairs of one split: same object, same length, different subject."""
    from interp.zoo import data

    source = f"zoo_{split}"
    return [(Statement(t, True, source), Statement(f, False, source)) for t, f in data.truth_pairs(split)]


def zoo_requests(split: str) -> tuple[list[str], list[str]]:
    """The zoo's own (harmful, harmless) requests of one split."""
    from interp.zoo import data

    harmful, harmless = data.refusal_requests(split)
    return list(harmful), list(harmless)


def zoo_facts(split: str) -> list[tuple[str, str]]:
    """The zoo's own (prompt, answer) facts of one split."""
    from interp.zoo import data

    return list(data.facts(split))
