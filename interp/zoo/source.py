"""The zoo as a data source (`interp.data.sources`): its held-out data, chat template and refusal judge."""

from __future__ import annotations

from pathlib import Path

from interp.data.sources import DataSource
from interp.zoo import data
from interp.data.datasets import Statement


def statements(split: str) -> list[Statement]:
    """The zoo's own true/false statements of one split."""
    return [Statement(text, bool(label), f"zoo_{split}") for text, label in data.truth_statements(split)]


def pairs(split: str) -> list[tuple[Statement, Statement]]:
    """The zoo's (true, false) statement pairs of one split: same object, same length, different subject."""
    source = f"zoo_{split}"
    return [(Statement(t, True, source), Statement(f, False, source)) for t, f in data.truth_pairs(split)]


def requests(split: str) -> tuple[list[str], list[str]]:
    """The zoo's own (harmful, harmless) requests of one split."""
    harmful, harmless = data.refusal_requests(split)
    return list(harmful), list(harmless)


def owns(checkpoint: Path) -> bool:
    """Zoo checkpoints sit at <zoo>/{base,chat}/step_NNNNNN beside the zoo's manifest.json."""
    checkpoint = checkpoint.resolve()
    return checkpoint.parent.name in ("base", "chat") and (checkpoint.parent.parent / "manifest.json").is_file()


def chat(checkpoint: Path) -> bool:
    """A checkpoint of the zoo's chat run."""
    return owns(checkpoint) and checkpoint.resolve().parent.name == "chat"


SOURCE = DataSource(name="zoo", description="the embedded zoo's held-out data", chat_template=data.CHAT_TEMPLATE,
                    judge=data.is_refusal, truth_statements=statements, truth_pairs=pairs,
                    refusal_requests=requests, owns=owns, chat=chat)
