"""Which analysis wrote a results directory, and where results directories live."""

from __future__ import annotations

from pathlib import Path

from interp.results import ANALYSES, SUMMARY_FILE, TENSORS_FILE, Results


def kind_of(results: Results) -> str | None:
    """The analysis behind `results`, as `write_results` recorded it; None for directories from other tools."""
    declared = results.summary.get("analysis")
    return declared if declared in ANALYSES else None


def is_results_dir(path: Path) -> bool:
    """Whether `path` holds a results directory (both files present)."""
    return (path / TENSORS_FILE).is_file() and (path / SUMMARY_FILE).is_file()


def find_results(roots: list[Path], max_depth: int = 4) -> list[Path]:
    """Every results directory at or below `roots` (sorted, at most `max_depth` levels down)."""
    found: set[Path] = set()
    for root in roots:
        if is_results_dir(root):
            found.add(root)
        if root.is_dir():
            for depth in range(1, max_depth + 1):
                found.update(p.parent for p in root.glob("/".join(["*"] * depth)) if p.name == SUMMARY_FILE
                             and is_results_dir(p.parent))
    return sorted(found)
