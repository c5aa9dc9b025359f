"""Loaders for the truth and refusal data: Geometry-of-Truth CSVs and refusal-direction JSON lists (a data source's
own, e.g. the zoo's, come from `interp.data.sources`).

Geometry of Truth (Marks & Tegmark 2023): CSV with columns `statement,label` (1 true, 0 false), extra columns ignored.
Refusal (Arditi et al. 2024): a JSON list of `{"instruction": str, "category": str | null}`; a refusal data directory
holds four of them, `REFUSAL_FILES` (the `harmful_val`/`harmless_val` lists are the held-out split).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from interp.errors import InterpError


@dataclass(frozen=True)
class Statement:
    """One true/false statement; `source` names the dataset it came from (for per-dataset centring)."""

    text: str
    label: bool
    source: str = ""


TRUTH_FIX = "use the Geometry-of-Truth CSV format: UTF-8, a header statement,label, then one statement per row with " \
            "label 1 (true) or 0 (false)"
REFUSAL_FILES = ("harmful_train.json", "harmless_train.json", "harmful_val.json", "harmless_val.json")
REFUSAL_LAYOUT = (f"a directory holding {', '.join(REFUSAL_FILES)}, each a JSON list of "
                  '{"instruction": "...", "category": ...} objects (the refusal_direction layout)')


def load_truth_csv(path: str | Path) -> list[Statement]:
    """Statements of a Geometry-of-Truth CSV (`statement,label`): UTF-8, a non-empty statement and a 0/1 label a row."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InterpError(f"truth dataset {path} {what}", fix="pass a CSV file with columns statement,label")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"statement", "label"} <= set(reader.fieldnames):
                raise InterpError(f"{path} lacks the columns statement,label (has {reader.fieldnames})", fix=TRUTH_FIX)
            statements = [_statement(row, path, reader.line_num) for row in reader]
    except UnicodeDecodeError as err:
        raise InterpError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})", fix=TRUTH_FIX) from err
    except csv.Error as err:
        raise InterpError(f"{path}: not a readable CSV ({err})", fix=TRUTH_FIX) from err
    if not statements:
        raise InterpError(f"{path} holds no statements (a header only)", fix=TRUTH_FIX)
    return statements


def _statement(row: dict[str, str | None], path: Path, line: int) -> Statement:
    """One CSV row as a Statement, or an error naming the file and line."""
    text, label = row.get("statement") or "", (row.get("label") or "").strip()
    if not text.strip():
        raise InterpError(f"{path}, line {line}: the statement is empty", fix=TRUTH_FIX)
    if label not in ("0", "1"):
        raise InterpError(f"{path}, line {line}: label {label!r} is not 0 or 1", fix=TRUTH_FIX)
    return Statement(text, label == "1", path.stem)


def check_both_labels(statements: Sequence[Statement], where: str, fix: str) -> None:
    """Refuse statements that are not both true and false ones: directions, probes, centring and steering need both."""
    n_true = sum(s.label for s in statements)
    if n_true == 0 or n_true == len(statements):
        raise InterpError(f"{where} has {n_true} true and {len(statements) - n_true} false statement(s); it needs "
                          "both", fix=fix)


def load_instructions(path: str | Path) -> list[str]:
    """Instructions of a refusal JSON list (`[{"instruction": ..., "category": ...}, ...]`), none empty."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"refusal dataset {path} does not exist", fix=f"pass {REFUSAL_LAYOUT}")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InterpError(f"{path} is not UTF-8 JSON ({err})", fix=f"pass {REFUSAL_LAYOUT}") from err
    if not isinstance(items, list) or not items:
        raise InterpError(f"{path} is not a non-empty JSON list", fix=f"pass {REFUSAL_LAYOUT}")
    for i, item in enumerate(items):
        text = item.get("instruction") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise InterpError(f"{path}: item {i} is not an object with a non-empty string \"instruction\"",
                              fix=f"pass {REFUSAL_LAYOUT}")
    return [item["instruction"] for item in items]


def load_refusal_dir(directory: str | Path, split: str = "train") -> tuple[list[str], list[str]]:
    """(harmful, harmless) instructions of `split` from a directory laid out like ../shared/datasets/refusal/."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise InterpError(f"refusal data {directory} {what}", fix=f"pass {REFUSAL_LAYOUT}")
    missing = [name for name in REFUSAL_FILES if not (directory / name).is_file()]
    if missing:
        raise InterpError(f"refusal data directory {directory} has no {' or '.join(missing)}",
                          fix=f"pass {REFUSAL_LAYOUT}")
    return (load_instructions(directory / f"harmful_{split}.json"),
            load_instructions(directory / f"harmless_{split}.json"))
