"""Truth-directions page: the base/post direction cosine and the held-out probe accuracies per layer, and the NIEs of
steering (Du et al. 2025, 1.2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from torch import Tensor

from interp.analyses.widgets import axes_of, lines, literal
from interp.results import Results


def accuracy_curves(results: Results) -> dict[str, Tensor]:
    """Held-out accuracy per layer: mass-mean probe of each model on each model ([owner, model, layer]), logistic
    probe on each model ([model, layer]); owners and models named by the tensors' ticks."""
    mm, lr = results.tensors["mm_accuracy"], results.tensors["lr_accuracy"]
    axes = axes_of(results, "mm_accuracy")
    curves = {f"{o} probe on {m}": mm[i, j] for i, o in enumerate(axes["owner"]) for j, m in enumerate(axes["model"])}
    return curves | {f"logistic probe on {m}": lr[j] for j, m in enumerate(axes_of(results, "lr_accuracy")["model"])}


def render(results: Results, found: list[Path]) -> None:
    """Cosine and accuracy curves over the layers; the probe and steering layers; the NIE table."""
    s, layers = results.summary, axes_of(results, "cosine")["layer"]
    st.caption(literal(f"{s.get('method', '')}: base {s.get('base')}, post {s.get('post')}; data: {s.get('data')}"))
    st.plotly_chart(lines({"cos(base, post)": results.tensors["cosine"]}, layers, "Direction cosine per layer",
                          "layer", "cosine"), key="dir_cosine")
    st.plotly_chart(lines(accuracy_curves(results), layers, "Held-out probe accuracy per layer", "layer", "accuracy"),
                    key="dir_accuracy")
    st.write(literal(f"probe layer {s.get('probe_layer')}, steering at layers {s.get('intervene_layers')}"))
    st.dataframe(pd.DataFrame(s.get("nie", {})).T, key="dir_nie")
