"""TuCo page: per-prompt table (the prompts as summary.json records them) and histogram, behaviour per alpha."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from interp.analyses.widgets import axes_of, literal, plotly_text
from interp.results import Results


def prompt_table(results: Results) -> pd.DataFrame:
    """One row per prompt of each set: TuCo, OutputCo and the prompt text (the ticks of the `prompt` axis)."""
    frames = []
    for suffix, key in (("", "prompts"), ("_b", "prompts_b")):
        if f"tuco{suffix}" not in results.tensors:
            continue
        info = results.summary.get(key, {})
        frame = pd.DataFrame({"set": Path(info.get("file", key)).name, "tuco": results.tensors[f"tuco{suffix}"]})
        if f"output_co{suffix}" in results.tensors:
            frame["output_co"] = results.tensors[f"output_co{suffix}"]
        frame["prompt"] = axes_of(results, f"tuco{suffix}")["prompt"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def histogram(table: pd.DataFrame) -> go.Figure:
    """TuCo histogram, one overlaid trace per prompt set."""
    fig = go.Figure([go.Histogram(x=group["tuco"].tolist(), name=plotly_text(name), opacity=0.6, nbinsx=30)
                     for name, group in table.groupby("set", sort=False)])
    fig.update_layout(barmode="overlay", title="TuCo per prompt", xaxis_title="TuCo", yaxis_title="prompts")
    return fig


def render(results: Results, found: list[Path]) -> None:
    """Table, histogram and behaviour per alpha."""
    s = results.summary
    table = prompt_table(results)
    st.caption(literal(f"{s.get('method', '')}: base {s.get('base')}, fine-tuned {s.get('fine_tuned')}"))
    if "auc_tuco_a_vs_b" in s:
        st.metric("AUC (TuCo separates the two prompt sets)", f"{s['auc_tuco_a_vs_b']:.3f}")
    st.plotly_chart(histogram(table), key="tuco_hist")
    st.dataframe(table, key="tuco_table")
    if "behaviour" in s:
        st.write(literal(f"{s.get('behaviour_measure', 'behaviour')} per alpha"), s["behaviour"])
