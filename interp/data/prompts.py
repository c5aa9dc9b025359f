"""Prompt files: JSONL of `{"prompt": str}`, or plain text with one prompt a line; written atomically as JSONL.

JSONL is the form to use for prompts that contain newlines (chat templates); plain text is for quick lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from interp.data.jsonl import read_records
from interp.errors import InterpError

_FORMAT_FIX = 'write one JSON object {"prompt": "..."} per line, or plain text with one prompt per line'


def read_prompts(path: str | Path) -> list[str]:
    """The prompts in `path`: JSONL when the file ends in .jsonl/.json or its first line starts with `{`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InterpError(f"prompt file {path} does not exist", fix="check the path")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of a prompt
    except UnicodeDecodeError as err:
        raise InterpError(f"prompt file {path} is not UTF-8 text ({err})", fix=_FORMAT_FIX) from err
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise InterpError(f"prompt file {path} holds no prompts", fix=_FORMAT_FIX)
    if path.suffix in (".jsonl", ".json") or numbered[0][1].lstrip().startswith("{"):
        prompts = [row["prompt"] for row in read_records(path, ("prompt",), '{"prompt": "..."}')]
        if not all(prompts):
            raise InterpError(f"{path} has an empty prompt", fix="remove the line or give it text")
        return prompts
    return [line for _, line in numbered]


def write_prompts(path: str | Path, prompts: Iterable[str]) -> Path:
    """Write prompts as JSONL (the form `read_prompts` reads back exactly, newlines included), atomically: readers
    see the old file or the new one, never a part."""
    from interp.results import atomic_write_bytes  # imports torch: only when writing

    path = Path(path)
    atomic_write_bytes(path, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode("utf-8"))
    return path
