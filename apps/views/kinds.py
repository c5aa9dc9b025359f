"""Which analysis wrote a results directory, and where results directories live."""

from __future__ import annotations

from pathlib import Path

from interp.results import SUMMARY_FILE, TENSORS_FILE, Results

# Tensor names only one analysis writes (checked in order): how a results directory is recognised when its
# summary carries no "analysis" field.
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("patch", ("clean_metric", "corrupted_metric")),
    ("tuco", ("tuco", "ptc", "ftc")),
    ("induction", ("induction", "previous_token", "icl_score")),
    ("truth", ("theta_base", "mm_accuracy", "cosine")),
    ("refusal", ("direction_base", "cosine", "ablation")),
    ("knowledge", ("map_base", "map_post")),
    ("gradients", ("nuclear.q",)),
    ("gradients", ("a.nuclear.q", "b.nuclear.q")),
)
KINDS = ("patch", "truth", "refusal", "knowledge", "tuco", "induction", "gradients")


def kind_of(results: Results) -> str | None:
    """The analysis behind `results`: the summary's "analysis" field, else the first matching tensor signature."""
    declared = results.summary.get("analysis")
    if declared in KINDS:
        return declared
    names = set(results.tensors)
    return next((kind for kind, needed in SIGNATURES if names.issuperset(needed)), None)


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
