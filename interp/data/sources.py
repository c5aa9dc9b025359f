"""Data sources: named providers of an analysis's default data, chat template and refusal judge.

A source is registered as a Python entry point in the group `interp.data_sources` (the zoo's:
`zoo = "interp.zoo.source:SOURCE"` in pyproject.toml), so analyses ask for "the default source" or "the source that
trained this checkpoint" and never import the zoo or guess from folder names. A package of one's own data registers
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.data.datasets import Statement

GROUP = "interp.data_sources"
DEFAULT = "zoo"


@dataclass(frozen=True)
class DataSource:
    """What a source provides. `owns(checkpoint)` says whether the checkpoint was trained by this source (with BOS
    first), `chat(checkpoint)` whether it is one of its chat-tuned ones (so `chat_template` is how to prompt it); the
    data functions take a split name ("train" or "test")."""

    name: str
    description: str
    chat_template: str  # a format string with {instruction}, up to where the assistant answers
    judge: Callable[[str], bool]  # does a completion refuse?
    truth_statements: Callable[[str], list[Statement]]
    truth_pairs: Callable[[str], list[tuple[Statement, Statement]]]
    refusal_requests: Callable[[str], tuple[list[str], list[str]]]
    owns: Callable[[Path], bool]
    chat: Callable[[Path], bool]


@cache
def sources() -> dict[str, DataSource]:
    """Every registered source by name."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}


def source(name: str = DEFAULT) -> DataSource:
    """The source `name` (default: the zoo), or an `InterpError` listing the registered ones."""
    found = sources()
    if name not in found:
        raise InterpError(f"no data source is called {name!r} (registered: {', '.join(found) or 'none'})",
                          fix="reinstall interp (`make install`), which registers the zoo's entry point")
    return found[name]


def source_of(checkpoint: str | Path) -> DataSource | None:
    """The source that trained `checkpoint`, if any registered source owns it."""
    return next((s for s in sources().values() if s.owns(Path(checkpoint))), None)
