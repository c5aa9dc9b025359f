"""interp: mechanistic interpretability across training. `interp.load(path)` opens a checkpoint as a `HookedModel`."""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def __getattr__(name: str) -> Any:
    """Import `load` on first use, so `import interp` stays light (no torch or transformers)."""
    if name == "load":
        from interp.loading import load

        return load
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
