"""Refusal-directions page: the base/post direction cosine per layer and the refusal scores under ablation and
addition, own and transferred (Du et al. 2025, 1.3; Arditi et al. 2024)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from interp.analyses.widgets import axes_of, lines, literal
from interp.results import Results


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


def render(results: Results, found: list[Path]) -> None:
    """The cosine curve over the layers, the direction's layer and position, and the refusal-score table."""
    s = results.summary
    st.caption(literal(f"{s.get('method', '')}: base {s.get('base')}, post {s.get('post')}; data: {s.get('data')}; "
                       f"judge: {s.get('judge')}"))
    cosine = {"cos(base, post)": results.tensors["cosine"]}
    st.plotly_chart(lines(cosine, axes_of(results, "cosine")["layer"], "Direction cosine per layer", "layer", "cosine"),
                    key="dir_cosine")
    st.write(literal(f"direction layer {s.get('layer')}, position {s.get('pos')}"))
    st.dataframe(refusal_table(results), key="dir_refusal")
