"""Output directories: checked before any compute, written as a whole, never losing what the user did not ask to lose.

`check_out` runs first in every command: `--out` must be missing or empty, or hold the same analysis run with the
same settings (a rerun or a resume), or `--force` is given; it is never a file, never under a file, and never a
checkpoint, run or zoo directory (not even with `--force`). `replace_dir` then swaps a fully written sibling
directory into place, so a reader sees the old results or the new ones, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from interp.errors import InterpError

SUMMARY_FILE = "summary.json"
_WEIGHT_GLOBS = ("model*.safetensors", "pytorch_model*.bin", "adapter_model.safetensors")


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of an analysis's settings (what `check_out` compares on a rerun)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_out(out: str | Path, analysis: str, settings: dict[str, Any], force: bool = False) -> Path:
    """`out` as a directory an analysis may write (see the module docstring), or an `InterpError` saying why not."""
    out = Path(out).expanduser()
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == out else f"is under {parent}, which is"
            raise InterpError(f"--out {out} {where} a file, not a directory", fix="choose another --out directory")
    if not out.exists():
        return out
    _refuse_model_dir(out)
    entries = [e for e in out.iterdir() if not e.name.startswith(".")]
    if not entries or force:
        return out
    previous = _previous_run(out)
    if previous is None:
        shown = ", ".join(sorted(e.name for e in entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise InterpError(f"--out {out} already holds files that interp did not write ({shown})",
                          fix="choose an empty or new --out directory (or pass --force to replace its contents)")
    if previous.get("analysis") != analysis or previous.get("settings_sha256") != settings_hash(settings):
        what = (f"results of `{previous.get('analysis')}`" if previous.get("analysis") != analysis
                else f"`{analysis}` results made with other settings")
        raise InterpError(f"--out {out} already holds {what}",
                          fix="choose another --out directory (or pass --force to replace them)")
    return out


def _previous_run(out: Path) -> dict[str, Any] | None:
    """What interp recorded of the run that wrote `out` (`analysis`, `settings_sha256`), or None when it wrote none.

    Read from a results directory's summary, an activation cache's marker, or an interrupted sweep's partials."""
    for record in (SUMMARY_FILE, "cache.json", "partial/settings.json"):
        try:
            found = json.loads((out / record).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(found, dict) and "analysis" in found:
            return found
    return None


def _refuse_model_dir(out: Path) -> None:
    """Refuse a checkpoint, a run of checkpoints or a zoo as --out: results written there would corrupt it."""
    from interp.checkpoints import is_checkpoint_dir

    if is_checkpoint_dir(out) or any(next(out.glob(g), None) for g in _WEIGHT_GLOBS):
        raise InterpError(f"--out {out} is a model checkpoint directory", fix="write results to a directory of "
                                                                              "their own, e.g. --out results/NAME")
    if (out / "checkpoints.json").is_file() or any(is_checkpoint_dir(sub) for sub in out.iterdir() if sub.is_dir()):
        raise InterpError(f"--out {out} holds model checkpoints (a run or a zoo)",
                          fix="write results to a directory of their own, e.g. --out results/NAME")


def write_partial_settings(out: Path, analysis: str, settings: dict[str, Any]) -> None:
    """Record which analysis and settings an interrupted sweep's `partial/` belongs to (for `check_out`)."""
    from interp.results import atomic_write_json

    atomic_write_json(out / "partial" / "settings.json",
                      {"analysis": analysis, "settings_sha256": settings_hash(settings)})


def scratch_dir(out: Path) -> Path:
    """A new empty sibling of `out` to write into before `replace_dir` (same filesystem, so the rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def replace_dir(tmp: Path, out: Path, keep: tuple[str, ...] = ("partial",)) -> None:
    """Move the fully written `tmp` to `out`; entries of the old `out` named in `keep` move into the new one."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for name in keep:
        if (out / name).exists() and not (tmp / name).exists():
            os.replace(out / name, tmp / name)
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.replace(out, old / "previous")
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
