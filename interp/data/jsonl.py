r"""JSONL input files (tasks, prompts, instruction/response pairs): one reader, errors that name file and line.

Lines are separated by "\n" only (a JSON string may hold U+2028 and other characters `str.splitlines` breaks at);
a leading byte-order mark is accepted; every line is a JSON object whose named fields are strings that can be
written as UTF-8 (no unpaired surrogate escapes such as "\ud800").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interp.errors import InterpError

_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def read_records(path: str | Path, fields: tuple[str, ...], example: str) -> list[dict[str, str]]:
    """The string `fields` of each non-blank line of a JSONL file; `example` is a valid line, shown in errors."""
    return [record for _, record in numbered_records(path, fields, example)]


def numbered_records(path: str | Path, fields: tuple[str, ...], example: str) -> list[tuple[int, dict[str, str]]]:
    """`read_records` with each record's line number in the file (blank lines count), for errors about a record."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InterpError(f"{path} does not exist", fix=f"pass a JSONL file with lines like {example}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InterpError(f"{path} is not UTF-8 text ({err.reason})", fix=f"write lines like {example}") from err
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            records.append((number, _record(_parse(path, number, line, example), fields, f"{path}:{number}", example)))
    if not records:
        raise InterpError(f"{path} holds no lines", fix=f"add lines like {example}")
    return records


def _parse(path: Path, number: int, line: str, example: str) -> Any:
    """One line's JSON value, or an error naming the line."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
        raise InterpError(f"{path}:{number} is not valid JSON ({reason})",
                          fix=f"one JSON object per line, like {example}") from err


def _record(row: Any, fields: tuple[str, ...], where: str, example: str) -> dict[str, str]:
    """The named string fields of one parsed line, refusing anything else with the line's place."""
    if not isinstance(row, dict):
        raise InterpError(f"{where} is a JSON {_JSON_TYPES.get(type(row), 'value')}, not an object",
                          fix=f"write {example}")
    if not all(isinstance(row.get(k), str) for k in fields):
        raise InterpError(f"{where} needs string fields {', '.join(fields)}", fix=f"write {example}")
    for key in fields:
        try:
            row[key].encode("utf-8")
        except UnicodeEncodeError as err:
            raise InterpError(f"{where}: field {key} holds an unpaired surrogate "
                              f"({row[key][err.start:err.end]!r}), which is not text",
                              fix="write the character itself, or a valid surrogate pair") from err
    return {k: row[k] for k in fields}
