"""The embedded model zoo: small Llama models trained here, with facts, truth, induction heads and refusal in them.

`ensure_zoo()` returns a built zoo (cached per code hash and seed), `default_zoo()` prefers `data/zoo`, and
`interp.zoo.data` holds the held-out evaluation data. Training code is imported only when a zoo must be built.
"""

from __future__ import annotations

from pathlib import Path

from interp.zoo import data

__all__ = ["data", "default_zoo", "ensure_zoo"]


def ensure_zoo(quick: bool = False, seed: int = 0) -> Path:
    """Root of a built zoo (`base/`, `chat/`, `manifest.json`) for this code and seed: cached, else built."""
    from interp.zoo.build import ensure_zoo as _ensure

    return _ensure(quick=quick, seed=seed)


def default_zoo() -> Path:
    """`data/zoo` when it exists under the working directory, else `ensure_zoo()`."""
    from interp.zoo.build import default_zoo as _default

    return _default()
