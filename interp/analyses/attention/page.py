"""Attention page: one head's pattern on one prompt at the checkpoint the slider picks, with the head's induction and
previous-token scores beside it and their curves over checkpoints; patterns for a new prompt come from the
`interp attention` command line it shows (the page never loads a model)."""

from __future__ import annotations

import shlex
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from torch import Tensor

from interp.analyses.widgets import axes_of, lines, literal, plotly_text, tick_labels, unique_labels
from interp.results import Results


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


def new_prompt_command(results: Results, prompt: str) -> str:
    """The `interp attention` command line that computes patterns for `prompt` with the same run, layers, probe and
    BOS policy, into a sibling of this results directory."""
    summary = results.summary
    args = ["interp", "attention", str(summary["run"]), "--prompt", prompt, "--out", f"{results.path}-new"]
    options = {"--revisions": summary.get("revisions"), "--layers": summary.get("layers_option")}
    probe = summary.get("probe") or {}
    options |= {f"--{key.replace('_', '-')}": probe.get(key) for key in ("seq_len", "batch", "seed")}
    for option, value in options.items():
        args += [option, str(value)] if value is not None else []
    if not summary.get("tokenization", {}).get("bos", True):
        args.append("--no-bos")
    return shlex.join(args)


def render(results: Results, found: list[Path]) -> None:
    """Checkpoint slider, prompt, layer and head pickers; the pattern heatmap; the head's scores and their curves;
    and the command line for a new prompt."""
    t, summary = results.tensors, results.summary
    ticks = axes_of(results, "patterns")
    steps, layers = ticks["checkpoint"], ticks["layer"]
    step_labels = tick_labels("checkpoint", steps)
    shown = st.select_slider("checkpoint", step_labels, value=step_labels[-1], key="attn_ckpt")
    ckpt = step_labels.index(shown)
    prompts = summary["prompts"]
    prompt = st.selectbox("prompt", range(len(prompts)), format_func=lambda i: prompts[i], key="attn_prompt")
    left, right = st.columns(2)
    row = left.selectbox("layer", range(len(layers)), format_func=lambda i: f"L{layers[i]}", key="attn_layer")
    head = right.selectbox("head", range(t["patterns"].shape[3]), format_func=lambda h: f"H{h}", key="attn_head")
    n = int(t["prompt_lengths"][prompt])
    pattern = t["patterns"][ckpt, prompt, row, head, :n, :n]
    plot, side = st.columns([3, 1])
    plot.plotly_chart(pattern_figure(pattern, summary["tokens"][prompt], f"L{layers[row]}H{head}, {shown}"),
                      key="attn_pattern")
    for name in summary["scores"]:
        side.metric(f"{name} score", f"{float(t[name][ckpt, row, head]):.3f}")
    if summary["scores"]:
        side.plotly_chart(score_curves(results, row, head, steps[ckpt]), key="attn_scores")
    else:
        side.caption(literal(f"no scores: the {summary['backend']} backend has no interp forward to score on"))
    with st.expander("compute for a new prompt"):
        text = st.text_input("prompt", key="attn_new_prompt")
        if text.strip():
            st.caption("Run this (or paste it without `interp` under Run an analysis); the results appear here.")
            st.code(new_prompt_command(results, text), language="bash")
