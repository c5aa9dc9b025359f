"""The one results format: `results.safetensors`, `summary.json`, `report.html` in a directory.

Every analysis command writes one; the app and the notebooks read them. Writes are atomic (temporary file,
then rename), so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, save_file

from interp.errors import InterpError

TENSORS_FILE = "results.safetensors"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
_PACKAGES = ("interp", "torch", "transformers", "transformer-lens", "nnsight", "triton")


@dataclass
class Results:
    """A results directory read back: its tensors by name and its summary."""

    path: Path
    tensors: dict[str, torch.Tensor]
    summary: dict[str, Any]


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour the numbers depend on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata_: dict[str, str] | None = None) -> None:
    """`safetensors.save_file` through a temporary file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata_)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with a stable layout, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


ANALYSES = ("patch", "truth", "refusal", "knowledge", "tuco", "induction", "gradients")


def write_results(
    out_dir: str | Path,
    tensors: dict[str, torch.Tensor],
    summary: dict[str, Any],
    figures: Iterable[Any] = (),
    title: str = "interp report",
    *,
    analysis: str,
) -> Path:
    """Write a complete results directory and return its path.

    `analysis` (one of `ANALYSES`) is recorded in the summary so the app knows which page shows it; provenance
    (`versions`, `created`) is added too.
    `figures` are plotly figures, stacked in `report.html` (plotly.js inlined once, so it opens offline).
    """
    if analysis not in ANALYSES:
        raise ValueError(f"unknown analysis {analysis!r}; expected one of {ANALYSES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(out / TENSORS_FILE, tensors)
    full = {"analysis": analysis, "versions": package_versions(), "created": datetime.now(timezone.utc).isoformat(),
            **summary}
    atomic_write_json(out / SUMMARY_FILE, full)
    atomic_write_bytes(out / REPORT_FILE, render_report(list(figures), title).encode())
    return out


def render_report(figures: list[Any], title: str) -> str:
    """One self-contained HTML page with the figures stacked vertically."""
    parts = []
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    body = "\n".join(parts) if parts else "<p>No figures.</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1>{body}</body></html>\n"
    )


def read_results(path: str | Path) -> Results:
    """Read a results directory written by `write_results`."""
    out = Path(path)
    tensors_file, summary_file = out / TENSORS_FILE, out / SUMMARY_FILE
    if not tensors_file.is_file() or not summary_file.is_file():
        raise InterpError(
            f"{out} is not an interp results directory (needs {TENSORS_FILE} and {SUMMARY_FILE})",
            fix="pass the --out directory of an interp analysis command",
        )
    return Results(path=out, tensors=load_file(str(tensors_file)), summary=json.loads(summary_file.read_text()))
