"""Which analysis wrote a results directory, and where results directories live."""

from __future__ import annotations

from pathlib import Path

from interp.results import REPORT_FILE, SUMMARY_FILE, TENSORS_FILE, Results

RESULTS_FILES = (TENSORS_FILE, SUMMARY_FILE, REPORT_FILE)


def kind_of(results: Results) -> str | None:
    """The analysis behind `results`, as `write_results` recorded it; None for directories from other tools (the
    explorer decides which page, if any, shows each analysis)."""
    declared = results.summary.get("analysis")
    return declared if isinstance(declared, str) else None


def missing_files(path: Path) -> list[str]:
    """The files of a complete results directory that `path` lacks (empty when it is complete)."""
    return [name for name in RESULTS_FILES if not (path / name).is_file()]


def find_results(roots: list[Path], max_depth: int = 4) -> list[Path]:
    """Every directory at or below `roots` (sorted, at most `max_depth` levels down) holding any results file, so
    that an incomplete one is shown as such; hidden directories (`write_results`' `.NAME.*.tmp` scratch copies and
    `.old` leftovers) are skipped."""
    found: set[Path] = set()
    for root in (r for r in roots if r.is_dir()):
        if missing_files(root) != list(RESULTS_FILES):
            found.add(root)
        for depth in range(1, max_depth + 1):
            found.update(p.parent for p in root.glob("/".join(["*"] * depth)) if p.name in RESULTS_FILES
                         and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return sorted(found)
