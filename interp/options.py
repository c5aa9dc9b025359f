"""Checks of command options, run before any compute: each out-of-range value is one `InterpError` naming the option."""

from __future__ import annotations

import math
from typing import Sequence

from interp.errors import InterpError


def check_range(option: str, value: float | int | None, low: float | None = None, high: float | None = None) -> None:
    """Refuse a non-finite `value` or one outside [low, high] (None: unbounded on that side); None passes."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InterpError(f"{option} is {value}, not a finite number", fix=f"pass a finite number to {option}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = (f"between {low} and {high}" if low is not None and high is not None
                else f"at least {low}" if low is not None else f"at most {high}")
        raise InterpError(f"{option} is {value}, but it must be {span}", fix=f"pass {option} {span}")


def check_positions(option: str, positions: Sequence[int], length: int) -> None:
    """Refuse token positions (negative ones count from the end) outside a sequence of `length` tokens."""
    for pos in positions:
        if not -length <= pos < length:
            raise InterpError(f"{option} {pos} is outside the prompts' {length} token positions",
                              fix=f"pass {option} between {-length} and {length - 1}")


def parse_int_list(option: str, text: str | None, low: int | None = None, high: int | None = None) -> list[int] | None:
    """`"8,9,10"` -> [8, 9, 10], each within [low, high]; None stays None; an empty list is refused."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError as err:
        raise InterpError(f"{option} {text!r} is not a comma-separated list of integers", fix="write e.g. 2,3") from err
    if not values:
        raise InterpError(f"{option} {text!r} names nothing", fix=f"write e.g. {option} 2,3")
    for value in values:
        check_range(option, value, low, high)
    return values


def parse_names(option: str, text: str, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """`"a,b"` -> ("a", "b"); refuse an empty list and (with `allowed`) unknown names."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise InterpError(f"{option} {text!r} names nothing", fix=f"pass e.g. {option} {(allowed or ['NAME'])[0]}")
    if allowed is not None:
        for name in names:
            if name not in allowed:
                raise InterpError(f"{option}: unknown name {name!r}", fix=f"use some of {', '.join(allowed)}")
    return names


def check_context(ids: Sequence[Sequence[int]], texts: Sequence[str], n_ctx: int, extra: int = 0,
                  source: str = "prompts") -> None:
    """Refuse a prompt that encodes to no tokens or that, with `extra` answer or generated tokens after it, does not
    fit the model's context of `n_ctx` positions; the prompt is named by its number (from 1) in `source`."""
    for number, (seq, text) in enumerate(zip(ids, texts), start=1):
        shown = text if len(text) <= 60 else text[:57] + "..."
        if not seq:
            raise InterpError(f"{source}: prompt {number} ({shown!r}) encodes to no tokens",
                              fix="give every prompt some text")
        if len(seq) + extra > n_ctx:
            more = f" (+ {extra} answer or generated tokens)" if extra else ""
            raise InterpError(f"{source}: prompt {number} ({shown!r}) is {len(seq)} tokens{more}, longer than the "
                              f"model's context of {n_ctx}",
                              fix=f"shorten it to at most {n_ctx - extra} tokens (fewer few-shot lines, or fewer "
                                  "answer or generated tokens)")
