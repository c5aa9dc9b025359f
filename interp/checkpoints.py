"""Training runs: find a run directory's checkpoints, sorted by step; load them lazily; refuse mismatched ones.

A checkpoint is a Hugging Face directory (`config.json`, weights, tokenizer). A run directory holds checkpoints
named `checkpoint-N`, `stepN`, `step_N`, `step-N` or `global_stepN`, or lists them in a `checkpoints.json`
manifest: `{"checkpoints": [{"path": "relative/or/absolute", "step": 100}, ...]}` (a bare list also works).
A single checkpoint directory is a run of one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from interp.errors import InterpError

if TYPE_CHECKING:
    import torch

    from interp.models.hooked import HookedModel

MANIFEST = "checkpoints.json"
CONFIG = "config.json"
_STEP = re.compile(r"(?:checkpoint-|step[_-]?|global_step)(\d+)")
_NAMING_FIX = (f"point at a checkpoint directory (with {CONFIG}) or at a run directory holding checkpoint-N / step_N "
               f"sub-directories or a {MANIFEST} manifest")


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint directory name (`checkpoint-100`, `step_000300`, ...), else None."""
    match = _STEP.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint directory of a run, with its step (None when unknown) and the run's name."""

    path: Path
    step: int | None
    run: str

    @property
    def label(self) -> str:
        """Short name for tables and file names: `step_000300`, or the directory name when the step is unknown."""
        return f"step_{self.step:06d}" if self.step is not None else self.path.name


def is_checkpoint_dir(path: Path) -> bool:
    """Whether `path` looks like a Hugging Face checkpoint directory (has a config.json)."""
    return (path / CONFIG).is_file()


def discover(path: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run directory sorted by step, or `[that checkpoint]` for a single checkpoint directory."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InterpError(f"{root} does not exist", fix="check the path (typo? not downloaded or trained yet?)")
    if not root.is_dir():
        raise InterpError(f"{root} is a file, not a checkpoint or run directory", fix=_NAMING_FIX)
    root = root.resolve()
    if (root / MANIFEST).is_file():
        found = _from_manifest(root)
    else:
        found = [Checkpoint(sub, parse_step(sub.name), root.name) for sub in root.iterdir()
                 if sub.is_dir() and parse_step(sub.name) is not None and is_checkpoint_dir(sub)]
    if not found:
        if is_checkpoint_dir(root):
            return [Checkpoint(root, step_of(root), root.parent.name if parse_step(root.name) is not None else root.name)]
        raise InterpError(f"{root} is not a checkpoint (no {CONFIG}) and holds no checkpoints", fix=_NAMING_FIX)
    return _sorted_unique(found, root)


def _from_manifest(root: Path) -> list[Checkpoint]:
    """Checkpoints listed in `root/checkpoints.json`; paths are relative to `root` unless absolute."""
    manifest = root / MANIFEST
    entries = _manifest_entries(manifest)
    found = []
    for entry in entries:
        sub = (root / entry["path"]).resolve()
        if not is_checkpoint_dir(sub):
            raise InterpError(f"{manifest} lists {entry['path']}, which is not a checkpoint directory ({sub / CONFIG} "
                              f"missing)", fix=f"fix or remove that entry of {manifest}")
        step = entry.get("step")
        found.append(Checkpoint(sub, int(step) if step is not None else parse_step(sub.name), root.name))
    return found


def _manifest_entries(manifest: Path) -> list[dict[str, Any]]:
    """The validated entries of a manifest file."""
    fix = f'write {manifest} as {{"checkpoints": [{{"path": "step_100", "step": 100}}, ...]}}'
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InterpError(f"{manifest} is not valid JSON ({err})", fix=fix) from err
    entries = data.get("checkpoints") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                and isinstance(e.get("step", 0), (int, type(None))) for e in entries):
        raise InterpError(f"{manifest} must list checkpoints as objects with a string 'path' and an integer 'step'",
                          fix=fix)
    if not entries:
        raise InterpError(f"{manifest} lists no checkpoints", fix=fix)
    return entries


def _sorted_unique(found: list[Checkpoint], root: Path) -> list[Checkpoint]:
    """Sort by step (unknown steps last, in manifest order); refuse two checkpoints claiming the same step."""
    ordered = sorted(found, key=lambda c: (c.step is None, c.step or 0))
    for earlier, later in zip(ordered, ordered[1:]):
        if earlier.step is not None and earlier.step == later.step:
            raise InterpError(f"{root} has two checkpoints for step {earlier.step}: {earlier.path.name} and "
                              f"{later.path.name}", fix="remove or rename one of them")
    return ordered


def step_of(path: str | Path) -> int | None:
    """The step of one checkpoint directory: from its parent's manifest if it is listed there, else from its name."""
    path = Path(path).resolve()
    if (path.parent / MANIFEST).is_file():
        for entry in _manifest_entries(path.parent / MANIFEST):
            if (path.parent / entry["path"]).resolve() == path and entry.get("step") is not None:
                return int(entry["step"])
    return parse_step(path.name)
