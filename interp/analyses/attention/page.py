"""Attention page: one head's pattern on one prompt at the checkpoint the slider picks, with the head's induction and
previous-token scores beside it and their curves over checkpoints (plotly; interp does not use circuitsvis). A new
prompt's patterns are computed by the attention unit's `run`, looked up in the registry, into a sibling results
directory, as every result is: the page itself never loads a model."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from torch import Tensor

from interp.analyses import analyses
from interp.analyses.widgets import (
    axes_of, errors_as_messages, lines, literal, load_results, plotly_text, tick_labels, unique_labels,
)
from interp.results import SUMMARY_FILE, Results


def pattern_figure(pattern: Tensor, tokens: list[str], title: str) -> go.Figure:
    """A [query, key] attention pattern from 0 to 1, token labels on both axes, first query at the top."""
    labels = [plotly_text(label) for label in unique_labels(tokens)]
    fig = go.Figure(go.Heatmap(z=pattern.float().tolist(), x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1))
    fig.update_layout(title=plotly_text(title), xaxis_title="key", yaxis_title="query", yaxis_autorange="reversed")
    return fig


def score_curves(results: Results, layer: int, head: int, step: object) -> go.Figure:
    """The head's scores over checkpoints, the current checkpoint marked."""
    t, names = results.tensors, results.summary["scores"]
    steps = axes_of(results, names[0])["checkpoint"]
    fig = lines({name: t[name][:, layer, head] for name in names}, steps, "scores across training", "step", "score")
    fig.add_vline(x=step, line_dash="dash")
    return fig


def view(results: Results, key: str) -> None:
    """Checkpoint slider, prompt, layer and head pickers; the pattern heatmap; the head's scores and their curves
    (widget keys start with `key`, so two results can be shown on one page)."""
    t, summary = results.tensors, results.summary
    ticks = axes_of(results, "patterns")
    steps, layers = ticks["checkpoint"], ticks["layer"]
    step_labels = tick_labels("checkpoint", steps)
    shown = st.select_slider("checkpoint", step_labels, value=step_labels[-1], key=f"{key}_ckpt")
    ckpt = step_labels.index(shown)
    prompts = summary["prompts"]
    prompt = st.selectbox("prompt", range(len(prompts)), format_func=lambda i: prompts[i], key=f"{key}_prompt")
    left, right = st.columns(2)
    row = left.selectbox("layer", range(len(layers)), format_func=lambda i: f"L{layers[i]}", key=f"{key}_layer")
    head = right.selectbox("head", range(t["patterns"].shape[3]), format_func=lambda h: f"H{h}", key=f"{key}_head")
    n = int(t["prompt_lengths"][prompt])
    pattern = t["patterns"][ckpt, prompt, row, head, :n, :n]
    plot, side = st.columns([3, 1])
    plot.plotly_chart(pattern_figure(pattern, summary["tokens"][prompt], f"L{layers[row]}H{head}, {shown}"),
                      key=f"{key}_pattern")
    for name in summary["scores"]:
        side.metric(f"{name} score", f"{float(t[name][ckpt, row, head]):.3f}")
    if summary["scores"]:
        side.plotly_chart(score_curves(results, row, head, steps[ckpt]), key=f"{key}_scores")
    else:
        side.caption(literal(f"no scores: the {summary['backend']} backend has no interp forward to score on"))


def computed(results: Results, prompt: str) -> Path:
    """The results directory of `prompt` on what `results` read, computed by the attention unit's `run` (through the
    registry) unless an earlier click already wrote it."""
    unit = analyses()["attention"]
    spec = unit.spec.for_prompt(results, prompt)
    if not (spec.out / SUMMARY_FILE).exists():
        with st.spinner(f"reading {len(results.summary['steps'])} checkpoint(s) on the new prompt"):
            unit.run(spec)
    return spec.out


def render(results: Results, found: list[Path]) -> None:
    """The view of these results, then a new prompt's: computed on click, shown until another replaces it."""
    view(results, "attn")
    st.subheader("a new prompt")
    text = st.text_input("prompt", key="attn_prompt_text")
    added = st.session_state.setdefault("attn_added", {})  # results directory -> the new prompt's directory
    if st.button("compute its patterns", key="attn_compute"):
        added.pop(str(results.path), None)
        with errors_as_messages():
            added[str(results.path)] = str(computed(results, text))
    if str(results.path) in added:
        path = Path(added[str(results.path)])
        st.caption(literal(f"written to {path}"))
        view(load_results(path), "attn_new")
