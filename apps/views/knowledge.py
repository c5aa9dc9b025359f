"""Knowledge page: the layer x token patching maps within and across base and post (Du et al. 2025, 1.1)."""

from __future__ import annotations

import streamlit as st

from apps.views.common import heatmap, unique_labels
from interp.results import Results


def render(results: Results) -> None:
    """One heatmap per map, chosen in a select box; correlations as a table."""
    maps = sorted(name.removeprefix("map_") for name in results.tensors if name.startswith("map_"))
    name = st.selectbox("map (source_to_target, or a model's own)", maps, key="knowledge_map")
    values = results.tensors[f"map_{name}"]
    tokens = results.summary.get("tokens", [])
    x = unique_labels(tokens) if len(tokens) == values.shape[1] else [str(i) for i in range(values.shape[1])]
    st.plotly_chart(heatmap(values, x, [f"L{l}" for l in range(values.shape[0])],
                            f"logit difference after patching: {name}", "token", "layer"), key="knowledge_heatmap")
    st.json(results.summary.get("correlations", {}))
