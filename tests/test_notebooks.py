"""The example notebooks: committed exactly as examples/make_notebooks.py writes them (outputs stripped), and each
executes top to bottom on the quick zoo in a fresh kernel of this Python."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
make_notebooks = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
spec.loader.exec_module(make_notebooks)  # type: ignore[union-attr]
NAMES = sorted(make_notebooks.NOTEBOOKS)


def test_the_four_notebooks_are_committed_as_generated_and_stripped() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == NAMES
    for name in NAMES:
        committed = nbformat.read(EXAMPLES / name, as_version=4)
        assert committed == make_notebooks.build(name), f"{name} differs: run python examples/make_notebooks.py"
        assert all(not cell.get("outputs") and cell.get("execution_count") is None
                   for cell in committed.cells if cell.cell_type == "code")


KERNEL = "interp-test-python"


@pytest.fixture
def kernel(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this very interpreter, found first (JUPYTER_PATH), whatever kernels the user has installed."""
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "interp tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(spec_dir.parents[1]))
    return KERNEL


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name: str, zoo_quick: Path, kernel: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # zoo_quick: built (or found in the cache) before the notebook asks for it, so its run time is its own
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's work directory (tempfile.mkdtemp) lands here
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name=kernel, resources={"metadata": {"path": tmp_path}})
    client.execute()
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert "interp app" in printed, printed[-500:]  # the last cell ran
    shown_in_the_explorer(tmp_path, monkeypatch)


def shown_in_the_explorer(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every results directory the notebook wrote opens on its explorer page with a chart and no error."""
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT))
    from apps.views.kinds import find_results

    found = find_results([root])
    assert found
    monkeypatch.setenv("INTERP_APP_DIRS", str(root))
    at = AppTest.from_file(str(ROOT / "apps" / "explorer.py"), default_timeout=120).run()
    for path in found:
        at.sidebar.selectbox(key="results_dir").set_value(path).run()
        assert not at.exception and not at.error and not at.warning, (path, at.error, at.warning)
        assert at.get("plotly_chart"), path
