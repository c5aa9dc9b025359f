"""Directions page: per-layer probe accuracy and base/post cosine (truth), cosine and refusal scores (refusal)."""

from __future__ import annotations

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


def refusal_table(results: Results) -> pd.DataFrame:
    """Refusal scores: rows the model steered, columns the condition (direction taken from base or post); models,
    owners and request kinds named by the tensors' ticks."""
    t, baseline, steered = results.tensors, axes_of(results, "baseline"), axes_of(results, "ablation")
    rows = {}
    for j, m in enumerate(baseline["model"]):
        row = {f"no intervention, {kind}": float(t["baseline"][j, k]) for k, kind in enumerate(baseline["kind"])}
        for i, o in enumerate(steered["owner"]):
            row[f"ablate {o} dir, harmful"] = float(t["ablation"][i, j])
            row[f"add {o} dir, harmless"] = float(t["addition"][i, j])
        rows[m] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def render(results: Results) -> None:
    """Cosine per layer for both kinds; accuracy curves for truth; the refusal-score table for refusal."""
    t, s = results.tensors, results.summary
    layers = axes_of(results, "cosine")["layer"]
    st.caption(literal(f"{s.get('method', '')}: base {s.get('base')}, post {s.get('post')}; data: {s.get('data')}"))
    st.plotly_chart(lines({"cos(base, post)": t["cosine"]}, layers, "Direction cosine per layer", "layer",
                          "cosine"), key="dir_cosine")
    if "mm_accuracy" in t:
        st.plotly_chart(lines(accuracy_curves(results), layers, "Held-out probe accuracy per layer", "layer",
                              "accuracy"), key="dir_accuracy")
        st.write(literal(f"probe layer {s.get('probe_layer')}, steering at layers {s.get('intervene_layers')}"))
        st.dataframe(pd.DataFrame(s.get("nie", {})).T, key="dir_nie")
    else:
        st.write(literal(f"direction layer {s.get('layer')}, position {s.get('pos')}"))
        st.dataframe(refusal_table(results), key="dir_refusal")
