"""Gradients page: one statistic's curve per projection against layer (one condition, or two compared)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from torch import Tensor

from interp.analyses.widgets import axes_of, lines
from interp.errors import InterpError
from interp.results import Results


def layer_curves(results: Results) -> list[str]:
    """The tensors with one `layer` axis (`[a.|b.]STATISTIC.PROJECTION`), in the order they were written."""
    return [name for name, described in results.summary.get("tensors", {}).items()
            if described.get("axes") == ["layer"]]


def statistics(results: Results) -> list[str]:
    """The statistics the curves hold (`nuclear`, ...), in the order they were written."""
    return list(dict.fromkeys(name.split(".")[-2] for name in layer_curves(results)))


def curves(results: Results, stat: str) -> dict[str, Tensor]:
    """{"q": [layer], ...}, or {"a.q": ..., "b.q": ...} for a comparison."""
    return {name.replace(f"{stat}.", ""): results.tensors[name] for name in layer_curves(results)
            if name.split(".")[-2] == stat}


def render(results: Results, found: list[Path]) -> None:
    """Curves per projection, then the MAD tables from the summary."""
    if not statistics(results):
        raise InterpError(f"{results.path}: summary.json names no per-layer gradient curves (written by an older "
                          "interp?)", fix="rerun `interp gradients`")
    stat = st.selectbox("statistic", statistics(results), key="grad_stat")
    chosen = curves(results, stat)
    layers = axes_of(results, next(name for name in layer_curves(results) if name.split(".")[-2] == stat))["layer"]
    labels = results.summary.get("conditions", {})
    title = f"{stat} of the gradient per layer" + (
        f" (a = {labels['a']['label']}, b = {labels['b']['label']})" if labels else "")
    st.plotly_chart(lines(chosen, layers, title, "layer", stat), key="grad_curves")
    if "mad_markdown" in results.summary:
        st.code(results.summary["mad_markdown"], language=None)  # user labels in it: shown, never rendered
    elif "mad" in results.summary:
        st.json(results.summary["mad"])
