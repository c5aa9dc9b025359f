"""Which backend a command loads a checkpoint on: native when interp implements its family (the fast engines,
results unchanged), else the TransformerLens bridge, with one line on stderr saying so."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.models.hooked import HookedModel


def model_type_of(path: Path) -> str:
    """The checkpoint's Hugging Face `model_type` (config.json only)."""
    from interp.loading import read_config

    return str(read_config(path).get("model_type"))


def is_native(path: Path) -> bool:
    """Whether interp has a native implementation of the checkpoint's family."""
    from interp.models.arch import spec_for

    return spec_for(model_type_of(path)) is not None


def native_families() -> str:
    """The natively implemented `model_type`s, for messages."""
    from interp.models.arch import native_model_types

    return ", ".join(native_model_types())


def auto_backend(path: Path, why: str = "") -> str:
    """"native" for a native family; else "transformer_lens", announced in one stderr line (`why`: what changes)."""
    if is_native(path):
        return "native"
    print(f"note: {model_type_of(path)!r} has no native implementation in interp; using backend "
          f"'transformer_lens' (Hugging Face's own forward, TransformerLens hooks){why}", file=sys.stderr)
    return "transformer_lens"


def load_auto(path: Path, device: str, why: str = "") -> "HookedModel":
    """`interp.load` on `auto_backend(path)`."""
    from interp.loading import load

    return load(path, backend=auto_backend(path, why), device=device)


def require_native(path: Path, analysis: str, reason: str) -> None:
    """Refuse, before loading weights, an analysis that needs interp's own forward on a non-native family."""
    if not is_native(path):
        raise InterpError(f"{analysis} needs a native family ({reason}); {path} is {model_type_of(path)!r}",
                          fix=f"use a checkpoint of a natively implemented family: {native_families()}")
