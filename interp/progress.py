"""Progress on long work: a tqdm bar on a terminal, and plain log lines when the output is redirected to a file; none
in a sweep's worker process (`QUIET` set: its driver shows one bar for all workers)."""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_SECONDS = 10.0  # how often a redirected log gets a progress line
QUIET = "INTERP_QUIET_PROGRESS"  # set in a sweep's worker processes (interp.executors)


class _Lines:
    """A file-like wrapper that turns tqdm's carriage-return redraws into one line each."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").strip()  # redraws and nested bars' cursor moves
        if text:
            self.stream.write(text + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None, **options: Any) -> tqdm:
    """`tqdm(items)` that also advances in a redirected log: a line every `LOG_SECONDS` (and at the end)."""
    stream = sys.stderr
    if os.environ.get(QUIET):
        return tqdm(items, desc=desc, total=total, disable=True, **options)
    if stream.isatty():
        return tqdm(items, desc=desc, unit=unit, total=total, **options)
    return tqdm(items, desc=desc, unit=unit, total=total, file=_Lines(stream), mininterval=LOG_SECONDS,
                maxinterval=LOG_SECONDS, ascii=True, dynamic_ncols=False, ncols=100, **options)


def on_terminal() -> bool:
    """Whether nested progress bars (per layer, per batch) are worth drawing: stderr is a terminal, not a worker's."""
    return sys.stderr.isatty() and not os.environ.get(QUIET)
