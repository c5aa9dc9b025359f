"""Knowledge page: the layer x token patching maps within and across base and post (Du et al. 2025, 1.1)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from interp.analyses.widgets import axes_of, grid, heatmap
from interp.results import Results


def render(results: Results, found: list[Path]) -> None:
    """One heatmap per map, chosen in a select box; correlations as a table."""
    maps = sorted(name.removeprefix("map_") for name in results.tensors if name.startswith("map_"))
    name = st.selectbox("map (source_to_target, or a model's own)", maps, key="knowledge_map")
    z, rows, cols, x_title, y_title = grid(results.tensors[f"map_{name}"], axes_of(results, f"map_{name}"))
    st.plotly_chart(heatmap(z, cols, rows, f"logit difference after patching: {name}", x_title, y_title),
                    key="knowledge_heatmap")
    st.json(results.summary.get("correlations", {}))
