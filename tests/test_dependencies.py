"""pyproject.toml's dependencies (with its optional extras, the test tools aside) are exactly what the library's code
imports (interp, probes, patching, apps)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"interp", "probes", "patching", "apps", "benchmarks"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions() -> dict[str, set[str]]:
    """Distribution -> the library files importing it (top-level modules resolved through installed metadata)."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for package in ("interp", "probes", "patching", "apps"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in OURS or top in sys.stdlib_module_names:
                        continue
                    for dist in owners.get(top, [top]):
                        found.setdefault(_normal(dist), set()).add(str(path.relative_to(ROOT)))
    return found


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {name: specs for name, specs in project["optional-dependencies"].items() if name != "test"}
    specs = [*project["dependencies"], *(spec for group in extras.values() for spec in group)]
    return {_normal(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in specs}


def test_every_import_is_declared_and_every_dependency_imported() -> None:
    used, listed = imported_distributions(), declared()
    undeclared = {dist: sorted(files)[:2] for dist, files in used.items() if dist not in listed}
    assert not undeclared, f"imported but not in pyproject.toml dependencies: {undeclared}"
    assert not listed - set(used), f"declared but never imported: {sorted(listed - set(used))}"
