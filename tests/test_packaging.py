"""interp installs from a wheel with its explorer: the wheel holds the `apps` package (the explorer and its pages), and
`interp app` finds the explorer inside the installed package, never in a source checkout beside it. The scripts beside
the packages (benchmarks/, experiments/) import as `python -m <folder>.<name>` from the checkout, with no sys.path
edit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from clitools import assert_user_error, run
from interp.analyses import analyses

ROOT = Path(__file__).resolve().parents[1]
RESOLVE = """
import json, sys
from pathlib import Path
import interp
from interp.commands.app import explorer, streamlit_command
command = streamlit_command([Path(sys.argv[1])], 8600, "127.0.0.1")
print(json.dumps({"interp": interp.__file__, "explorer": str(explorer()), "served": command[4]}))
"""


def pip(*args: str | Path) -> None:
    """Run this interpreter's pip, offline and quietly."""
    subprocess.run([sys.executable, "-m", "pip", "-q", "--no-input", *map(str, args)], check=True,
                   env={**os.environ, "PIP_NO_INDEX": "1"})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the checkout's files (so the build writes nothing into the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in (n for n in listed if n and (ROOT / n).is_file()):
        (tmp / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp / "src" / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", tmp / "src")
    (built,) = (tmp / "dist").glob("interp-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_explorer_and_its_pages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "interp" / "analyses").glob("*/page.py")}
    assert len(pages) == len(analyses()) and {"apps/__init__.py", "apps/explorer.py", "apps/views/kinds.py",
                                "apps/views/runner.py", "interp/analyses/widgets.py"} | pages <= names
    assert not any(n.startswith(("benchmarks/", "experiments/", "tests/")) for n in names)


@pytest.mark.slow
def test_interp_app_serves_the_installed_explorer(wheel: Path, tmp_path: Path) -> None:
    target, results = tmp_path / "site", tmp_path / "results"
    pip("install", "--no-deps", "--target", target, wheel)
    results.mkdir()
    (results / "summary.json").write_text("{}")
    (tmp_path / "cwd").mkdir()  # not the checkout: nothing there to import by accident
    done = subprocess.run([sys.executable, "-c", RESOLVE, str(results)], cwd=tmp_path / "cwd", capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(target)}, check=True)
    paths = {key: Path(value) for key, value in json.loads(done.stdout).items()}
    assert paths["interp"].is_relative_to(target)
    assert paths["explorer"] == paths["served"] == target / "apps" / "explorer.py"
    assert paths["explorer"].is_file()


def test_interp_app_without_the_apps_package_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "apps", None)  # what an install without `apps` looks like to an import
    monkeypatch.delitem(sys.modules, "apps.explorer", raising=False)
    assert_user_error(run(["app", tmp_path], capsys), "the explorer (the `apps` package) is not installed",
                      "reinstall interp")


@pytest.mark.slow
def test_benchmarks_and_experiments_import_without_path_edits() -> None:
    scripts = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))
    packages = {"interp", "probes", "patching", "apps"}
    assert not [p.name for p in scripts if "sys.path" in p.read_text() or p.stem in packages]
    modules = [f"{p.parent.name}.{p.stem}" for p in scripts if p.stem != "__init__"]
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, check=True)
