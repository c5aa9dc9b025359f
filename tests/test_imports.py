"""The dependency direction (issue 19), read statically from every module's imports (ast, so nothing is run):
the library never imports the command line or the app, and the app never imports an analysis's internals."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the app may import from the library: the results format it reads (interp.results), the errors it shows
# (interp.errors), the output-directory rules (interp.outdir), progress lines (interp.progress), the page widgets
# (interp.analyses.widgets) and the registry itself (`interp.analyses`, exactly: it finds each analysis's page
# there). Everything else it needs is in summary.json; analyses run only as `interp` commands in a subprocess (the
# "Run an analysis" page).
APP_ALLOWED = ("interp.results", "interp.errors", "interp.outdir", "interp.progress", "interp.analyses.widgets")
REGISTRY = ("interp.analyses", "interp.analyses.analyses")
# What an analysis's explorer page may import: results, errors, the widgets and the registry (`interp.analyses`,
# exactly: a page that computes more, as attention's new prompt, runs a unit through it), nothing of any analysis.
PAGE_ALLOWED = ("interp.results", "interp.errors", "interp.analyses.widgets")
LIBRARY_FORBIDDEN = ("interp.cli", "interp.commands", "apps")
FIRST_PARTY = ("interp", "patching", "probes", "apps")


def imported(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from a import b` counts as `a.b` and `a`), at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def library_modules() -> list[Path]:
    """Every module of `interp` except the command line itself (`interp/cli.py`, `interp/commands/`)."""
    return [p for p in sorted((ROOT / "interp").rglob("*.py"))
            if p != ROOT / "interp" / "cli.py" and (ROOT / "interp" / "commands") not in p.parents]


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_imports_neither_the_cli_nor_the_app(path: Path) -> None:
    bad = sorted(n for n in imported(path) if any(is_under(n, f) for f in LIBRARY_FORBIDDEN))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "apps").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_app_imports_no_analysis_internals(path: Path) -> None:
    ours = {n for n in imported(path) if any(is_under(n, p) for p in FIRST_PARTY)}
    bad = sorted(n for n in ours if not is_under(n, "apps") and n not in REGISTRY
                 and not any(is_under(n, a) for a in APP_ALLOWED))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; the app reads results only ({', '.join(APP_ALLOWED)})"


PAGES = sorted((ROOT / "interp" / "analyses").glob("*/page.py"))


def test_every_analysis_has_its_page() -> None:
    units = [p.parent for p in (ROOT / "interp" / "analyses").glob("*/__init__.py")]
    assert units and sorted(u / "page.py" for u in units) == PAGES


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.parent.name)
def test_pages_read_results_only(path: Path) -> None:
    ours = {n for n in imported(path) if any(is_under(n, p) for p in FIRST_PARTY)}
    bad = sorted(n for n in ours if n not in REGISTRY and not any(is_under(n, a) for a in PAGE_ALLOWED))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; a page reads results only ({', '.join(PAGE_ALLOWED)})"


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from interp.commands.tuco import run_tuco\n    import apps.views.common\n")
    assert {"interp.commands.tuco", "apps.views.common"} <= imported(module)
