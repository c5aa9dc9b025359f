"""The analyses: one subpackage each (`interp/analyses/<name>/`), exposing `UNIT`, an `interp.analyses.unit.Analysis`.

`ANALYSES` is discovered from the package's subpackages (nothing to register by hand); the `interp` command line and
the explorer's pages are generated from it. `run("truth", base=..., post=..., out=...)` is the Python API.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING, Any

from interp.analyses.unit import Analysis
from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.results import Results


@cache
def analyses() -> dict[str, Analysis]:
    """Every registered analysis by name, in package order."""
    units = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.ispkg:
            unit = importlib.import_module(f"{__name__}.{info.name}").UNIT
            units[unit.name] = unit
    return units


def analysis(name: str) -> Analysis:
    """The analysis `name`, or an `InterpError` listing the registered ones."""
    units = analyses()
    if name not in units:
        raise InterpError(f"no analysis is called {name!r}", fix=f"use one of {', '.join(units)}")
    return units[name]


def run(name: str, **settings: Any) -> Results:
    """Run the analysis `name` with `settings` (its Spec's fields; defaults as on the command line)."""
    unit = analysis(name)
    return unit.run(unit.spec(**settings))
