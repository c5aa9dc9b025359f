"""The one results format: `results.safetensors`, `summary.json`, `report.html` in a directory.

Every analysis command writes one; the app and the notebooks read them. A results directory is written as a whole
(into a sibling temporary directory, then renamed into place), so an interrupted run never leaves a mix of old and
new files; files get the user's umask; `summary.json` is strict JSON; a non-finite tensor is refused, not written.
A results directory describes itself: every tensor's axis names and tick labels, the tokenisation policy and every
input's identity are in `summary.json`, so a reader (the app, a notebook) needs nothing of the analysis that wrote it.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from interp.errors import InterpError
from interp.outdir import current_umask, replace_dir, scratch_dir, settings_hash

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
        os.chmod(tmp, 0o666 & ~current_umask())
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
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(obj: Any) -> tuple[Any, list[str]]:
    """`obj` with every non-finite float replaced by None (strict JSON has no NaN), and where each one was."""
    found: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(where or "(top)")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return clean(obj, ""), found


def atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON (non-finite numbers as null) with a stable layout, written atomically."""
    cleaned, _ = strict_json(obj)
    atomic_write_bytes(path, (json.dumps(cleaned, indent=2, default=str, allow_nan=False) + "\n").encode())


@dataclass(frozen=True)
class Axes:
    """One tensor's axis names, outermost first, and the tick labels of the axes that are not 0, 1, 2, ...
    (site names, prompts, checkpoint steps, token strings)."""

    names: tuple[str, ...]
    ticks: Mapping[str, Sequence[Any]] = field(default_factory=dict)


def axes(*names: str, **ticks: Sequence[Any]) -> Axes:
    """`Axes(names, ticks)`, keeping only the ticks of axes in `names` (so one dict of ticks serves many tensors)."""
    return Axes(tuple(names), {k: list(v) for k, v in ticks.items() if k in names})


def describe_tensors(tensors: Mapping[str, torch.Tensor], described: Mapping[str, Axes]) -> dict[str, Any]:
    """The summary's `tensors` entry: axes, ticks, shape and dtype per tensor; an `InterpError` (nothing is written)
    for a tensor without axis names, with as many names as it has dimensions, or with ticks that do not fit."""
    out = {}
    for name, tensor in tensors.items():
        if name not in described:
            raise InterpError(f"the result {name!r} has no axis names; nothing was written",
                              fix="pass axes={name: axes('layer', ...)} to write_results")
        spec = described[name]
        if len(spec.names) != tensor.ndim:
            raise InterpError(f"the result {name!r} has {tensor.ndim} dimensions but {len(spec.names)} axis names "
                              f"{list(spec.names)}; nothing was written", fix="name every axis, outermost first")
        for axis, labels in spec.ticks.items():
            if axis not in spec.names or len(labels) != tensor.shape[spec.names.index(axis)]:
                raise InterpError(f"the result {name!r}: {len(labels)} ticks for axis {axis!r} of shape "
                                  f"{list(tensor.shape)} (axes {list(spec.names)}); nothing was written",
                                  fix="give one tick label per entry of an axis the tensor has")
        out[name] = {"axes": list(spec.names), "ticks": {k: list(v) for k, v in spec.ticks.items()},
                     "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
    return out


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def input_identity(role: str, path: str | Path, **extra: Any) -> dict[str, Any]:
    """One entry of the summary's `inputs`: a model (checkpoint or adapter directory, or cached hub id) by the sha256
    of its weights (`interp.checkpoints.weights_sha256`; an adapter's with its base's), a data file (or directory of
    files) by its bytes'; `extra` (e.g. the step) is kept."""
    from interp.checkpoints import is_model, weights_sha256

    digest = weights_sha256(path) if is_model(path) else file_sha256(Path(path))
    return {"role": role, "path": str(path), "sha256": digest, **extra}


def _check_record(tokenization: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a tokenisation policy without `bos` and `padding`, or an input without role, path and sha256."""
    if not {"bos", "padding"} <= set(tokenization):
        raise InterpError(f"the tokenisation policy {dict(tokenization)} lacks 'bos' or 'padding'; nothing was "
                          "written", fix="pass tokenization={'bos': ..., 'padding': ...} (None where not used)")
    for entry in inputs:
        if not {"role", "path", "sha256"} <= set(entry):
            raise InterpError(f"the input {dict(entry)} lacks role, path or sha256; nothing was written",
                              fix="describe each input with interp.results.input_identity(role, path)")


def write_results(
    out_dir: str | Path,
    tensors: dict[str, torch.Tensor],
    summary: dict[str, Any],
    figures: Iterable[Any] = (),
    title: str = "interp report",
    *,
    analysis: str,
    axes: Mapping[str, Axes],
    tokenization: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]],
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write a complete results directory, as a whole, and return its path.

    `analysis` names what wrote it (readers such as the app choose how to show it by this name); `axes` names every
    tensor's axes (with tick labels where they are not integers), `tokenization` is the policy the analysis used
    (`{"bos": ..., "padding": ...}`) and `inputs` every input's identity (`input_identity`): all recorded in
    `summary.json` (`tensors`, `tokenization`, `inputs`), and a tensor without axes is an `InterpError` before
    anything is written. Provenance (`versions`, `created`) and the hash of `settings` (what
    `interp.outdir.check_out` compares on a rerun) are added. `figures` are plotly figures, stacked in `report.html`
    (plotly.js inlined once, so it opens offline). A non-finite tensor is an `InterpError` naming it; non-finite
    summary numbers become null, listed under `"non_finite"`.
    """
    described = describe_tensors(tensors, axes)
    _check_record(tokenization, inputs)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InterpError(f"the result {name!r} holds NaN or infinite values; nothing was written",
                              fix="check the inputs for degenerate prompts or checkpoints (rerun with --debug)")
    full = {"analysis": analysis, "settings_sha256": settings_hash(settings or {}), "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(), **summary, "tensors": described,
            "tokenization": dict(tokenization), "inputs": [dict(entry) for entry in inputs]}
    full, non_finite = strict_json(full)
    if non_finite:
        full["non_finite"] = {"note": "these values were NaN or infinite and are written as null", "keys": non_finite}
    out = Path(out_dir)
    tmp = scratch_dir(out)
    try:
        atomic_save_tensors(tmp / TENSORS_FILE, tensors)
        atomic_write_json(tmp / SUMMARY_FILE, full)
        atomic_write_bytes(tmp / REPORT_FILE, render_report(list(figures), title).encode())
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def render_report(figures: list[Any], title: str) -> str:
    """One self-contained HTML page with the figures stacked vertically."""
    parts = []
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    body = "\n".join(parts) if parts else "<p>No figures.</p>"
    title = html.escape(title)
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
