"""Directions page: per-layer probe accuracy and base/post cosine (truth), cosine and refusal scores (refusal)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from torch import Tensor

from apps.views.common import lines, literal
from interp.finetuning.truth import ROLES
from interp.results import Results


def accuracy_curves(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Held-out accuracy per layer: mass-mean probe of each model on each model, logistic probe on each model."""
    mm, lr = tensors["mm_accuracy"], tensors["lr_accuracy"]  # [probe model, data model, layer], [model, layer]
    curves = {f"{o} probe on {m}": mm[i, j] for i, o in enumerate(ROLES) for j, m in enumerate(ROLES)}
    return curves | {f"logistic probe on {m}": lr[j] for j, m in enumerate(ROLES)}


def refusal_table(tensors: dict[str, Tensor]) -> pd.DataFrame:
    """Refusal scores: rows the model steered, columns the condition (direction taken from base or post)."""
    rows = {}
    for j, m in enumerate(ROLES):
        row = {"no intervention, harmful": float(tensors["baseline"][j, 0]),
               "no intervention, harmless": float(tensors["baseline"][j, 1])}
        for i, o in enumerate(ROLES):
            row[f"ablate {o} dir, harmful"] = float(tensors["ablation"][i, j])
            row[f"add {o} dir, harmless"] = float(tensors["addition"][i, j])
        rows[m] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def render(results: Results) -> None:
    """Cosine per layer for both kinds; accuracy curves for truth; the refusal-score table for refusal."""
    t, s = results.tensors, results.summary
    layers = list(range(t["cosine"].shape[0]))
    st.caption(literal(f"{s.get('method', '')}: base {s.get('base')}, post {s.get('post')}; data: {s.get('data')}"))
    st.plotly_chart(lines({"cos(base, post)": t["cosine"]}, layers, "Direction cosine per layer", "layer",
                          "cosine"), key="dir_cosine")
    if "mm_accuracy" in t:
        st.plotly_chart(lines(accuracy_curves(t), layers, "Held-out probe accuracy per layer", "layer", "accuracy"),
                        key="dir_accuracy")
        st.write(literal(f"probe layer {s.get('probe_layer')}, steering at layers {s.get('intervene_layers')}"))
        st.dataframe(pd.DataFrame(s.get("nie", {})).T, key="dir_nie")
    else:
        st.write(literal(f"direction layer {s.get('layer')}, position {s.get('pos')}"))
        st.dataframe(refusal_table(t), key="dir_refusal")
