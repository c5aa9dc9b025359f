"""Gradients page: one statistic's curve per projection against layer (one condition, or two compared)."""

from __future__ import annotations

import streamlit as st
from torch import Tensor

from apps.views.common import lines
from interp.dynamics.gradient_stats import STATISTICS
from interp.results import Results


def curves(tensors: dict[str, Tensor], stat: str) -> dict[str, Tensor]:
    """{"q": [layer], ...}, or {"a.q": ..., "b.q": ...} for a comparison; per-sample rows left out."""
    return {name.replace(f"{stat}.", ""): value for name, value in tensors.items()
            if value.ndim == 1 and not name.startswith("samples.") and f"{stat}." in name
            and name.split(f"{stat}.")[0] in ("", "a.", "b.")}


def render(results: Results) -> None:
    """Curves per projection, then the MAD tables from the summary."""
    stat = st.selectbox("statistic", [s for s in STATISTICS if curves(results.tensors, s)], key="grad_stat")
    chosen = curves(results.tensors, stat)
    n_layers = next(iter(chosen.values())).shape[0]
    labels = results.summary.get("conditions", {})
    title = f"{stat} of the gradient per layer" + (
        f" (a = {labels['a']['label']}, b = {labels['b']['label']})" if labels else "")
    st.plotly_chart(lines(chosen, list(range(n_layers)), title, "layer", stat), key="grad_curves")
    if "mad_markdown" in results.summary:
        st.code(results.summary["mad_markdown"], language=None)  # user labels in it: shown, never rendered
    elif "mad" in results.summary:
        st.json(results.summary["mad"])
