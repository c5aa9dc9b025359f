"""JSONL input files (tasks, prompts, instruction/response pairs): one reader, errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

from interp.errors import InterpError


def read_records(path: str | Path, fields: tuple[str, ...], example: str) -> list[dict[str, str]]:
    """The string `fields` of each non-blank line of a JSONL file; `example` is a valid line, shown in errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InterpError(f"{path} does not exist", fix=f"pass a JSONL file with lines like {example}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InterpError(f"{path} is not UTF-8 text ({err.reason})", fix=f"write lines like {example}") from err
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(f"{path}:{number} is not valid JSON ({err.msg})",
                              fix=f"one JSON object per line, like {example}") from err
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in fields):
            raise InterpError(f"{path}:{number} needs string fields {', '.join(fields)}", fix=f"write {example}")
        records.append({k: row[k] for k in fields})
    if not records:
        raise InterpError(f"{path} holds no lines", fix=f"add lines like {example}")
    return records
