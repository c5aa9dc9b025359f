"""The interp explorer: browse every results directory interp writes (it reads only those: axis names, ticks and
inputs come from each directory's summary.json), and start analyses as `interp` commands.

Run with `interp app [RESULTS_DIR_OR_ZOO ...]` (or `streamlit run apps/explorer.py -- DIR ...` where interp is
installed): it imports `apps` and `interp` as the installed packages, so a wheel serves it as a checkout does.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import streamlit as st

from apps.views import runner
from apps.views.kinds import find_results, kind_of, missing_files
from interp.analyses import analyses
from interp.analyses.widgets import errors_as_messages, literal, load_results

DIRS_VARIABLE = "INTERP_APP_DIRS"


def default_roots() -> list[Path]:
    """$INTERP_APP_DIRS (set by `interp app`), else the script's arguments, else `data/zoo` and the working dir."""
    listed = os.environ.get(DIRS_VARIABLE)
    args = [Path(a).expanduser() for a in (listed.split(os.pathsep) if listed else sys.argv[1:]) if a]
    return args or [p for p in (Path("data/zoo"), Path(".")) if p.is_dir()]


def browse() -> None:
    """Pick a zoo, run or results directory, then the results directory to show, and render its page."""
    roots_text = st.sidebar.text_area("zoo, run or results directories (one per line)",
                                      "\n".join(str(p) for p in default_roots()), key="roots")
    roots = [Path(line.strip()).expanduser() for line in roots_text.splitlines() if line.strip()]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        st.sidebar.warning(literal(f"not found: {', '.join(missing)}"))
    found = find_results([p for p in roots if p.exists()] + st.session_state.get("ran", []))
    if not found:
        st.info("No results directories found. Run an analysis (sidebar: Run an analysis) or point the app at a "
                "directory holding results.safetensors and summary.json.")
        return
    path = st.sidebar.selectbox("results directory", found, format_func=str, key="results_dir")
    incomplete = missing_files(path)
    if incomplete:
        st.error(literal(f"{path} is an incomplete results directory: {', '.join(incomplete)} missing (an "
                         "interrupted or foreign write; rerun the analysis that wrote it)"))
        return
    results = load_results(path)
    unit = analyses().get(kind_of(results) or "")
    if unit is None:
        names = ", ".join(sorted(results.tensors)[:12])
        st.warning(literal(f"{path}: no page knows these results (tensors: {names})"))
        return
    st.header(unit.title)
    st.caption(literal(path))
    importlib.import_module(unit.page).render(results, found)  # each analysis's page: it reads results only


def main() -> None:
    st.set_page_config(page_title="interp explorer", layout="wide")
    mode = st.sidebar.radio("mode", ["Browse results", "Run an analysis"], key="mode")
    with errors_as_messages():
        browse() if mode == "Browse results" else runner.render()


main()
