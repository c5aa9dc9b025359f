"""The architecture families interp runs natively, one spec file each (see docs/DESIGN.md, "Adding a family").

`spec_for(model_type)` is the one lookup every part of interp uses (conversion, nnsight sites, gradient layouts,
tests, docs, errors); a `model_type` without a spec opens on the hook backends only (`interp info` says which).
"""

from __future__ import annotations

import importlib
import pkgutil

from interp.models.arch.spec import ArchSpec, Layout, Matrix

# every module of this package but `spec` is a family: adding a family is adding its file
FAMILIES: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "spec"))
_SPECS: dict[str, ArchSpec] = {}


def specs() -> dict[str, ArchSpec]:
    """Family name -> spec, in the order of `FAMILIES` (imported on first use)."""
    if not _SPECS:
        for family in FAMILIES:
            _SPECS[family] = importlib.import_module(f"interp.models.arch.{family}").SPEC
    return _SPECS


def spec_for(model_type: str | None) -> ArchSpec | None:
    """The native spec covering a Hugging Face `model_type`, or None."""
    return next((s for s in specs().values() if model_type in s.model_types), None)


def native_model_types() -> dict[str, str]:
    """Every natively supported `model_type` -> its family's label (for docs and errors)."""
    return {t: s.label for s in specs().values() for t in s.model_types}


__all__ = ["ArchSpec", "FAMILIES", "Layout", "Matrix", "native_model_types", "spec_for", "specs"]
