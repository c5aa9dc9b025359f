"""Induction page: each score against training step for the heads the user picks (default: the top heads)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch
from torch import Tensor

from interp.analyses.widgets import axes_of, lines
from interp.results import Results

HEAD_AXES = ["checkpoint", "layer", "head"]


def top_heads(scores: Tensor, k: int) -> list[str]:
    """'L1H3' labels of the k heads with the highest score at the last checkpoint ([checkpoint, layer, head])."""
    final = scores[-1]
    order = torch.argsort(final.flatten(), descending=True)[:k].tolist()
    return [f"L{i // final.shape[1]}H{i % final.shape[1]}" for i in order]


def head_curves(scores: Tensor, heads: list[str]) -> dict[str, Tensor]:
    """Score against checkpoint for each 'LxHy' head."""
    out = {}
    for head in heads:
        layer, h = head[1:].split("H")
        out[head] = scores[:, int(layer), int(h)]
    return out


def render(results: Results, found: list[Path]) -> None:
    """Per-head score curves, the ICL score curve, and the detected formation steps."""
    t = results.tensors
    steps = axes_of(results, "icl_score")["checkpoint"]
    scored = [n for n, described in results.summary.get("tensors", {}).items() if described.get("axes") == HEAD_AXES]
    name = st.selectbox("score", scored, key="ind_score")
    scores = t[name]
    n_layers, n_heads = scores.shape[1:]
    every = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    heads = st.multiselect("heads", every, default=top_heads(scores, min(5, len(every))), key="ind_heads")
    st.plotly_chart(lines(head_curves(scores, heads), steps, f"{name} score per head", "step", "score"),
                    key="ind_curves")
    curves = {"ICL score": t["icl_score"]} | ({"loss": t["loss"]} if "loss" in t else {})
    st.plotly_chart(lines(curves, steps, "In-context learning score and loss", "step", "value"), key="ind_icl")
    st.json(results.summary.get("induction_heads", {}))
