"""Token-level diff page: the prompts coloured by per-token KL, the top changed tokens, the activation-difference norms
and the activation-difference lens's top tokens per layer (Minder et al. 2025), read by the logit lens and by a tuned
lens."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
import streamlit as st

from interp.analyses.widgets import axes_of, heatmap, literal, plotly_text
from interp.results import Results


def kl_text(tokens: Sequence[str], values: Sequence[float], top: float, width: int = 12) -> go.Figure:
    """The prompt as a grid of its tokens (`width` a row, read left to right, top to bottom), each cell coloured from
    white (no change) to red (`top`, the largest KL shown), its KL on hover; tokens escaped as plotly text."""
    rows = [list(range(i, min(i + width, len(tokens)))) for i in range(0, len(tokens), width)]
    z = [[values[j] for j in row] + [None] * (width - len(row)) for row in rows]
    text = [[plotly_text(tokens[j]) for j in row] + [""] * (width - len(row)) for row in rows]
    fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", colorscale="Reds", zmin=0, zmax=top or 1.0,
                               hovertemplate="%{text}: KL %{z:.4f}<extra></extra>", xgap=1, ygap=1))
    fig.update_layout(yaxis={"autorange": "reversed", "showticklabels": False},
                      xaxis={"showticklabels": False}, height=60 + 40 * len(rows))
    return fig


def render(results: Results, found: list[Path]) -> None:
    """Prompt text coloured by KL (direction and prompt chosen), the changed-tokens table, a norms heatmap per prompt,
    and both lenses' tokens per layer at a chosen slot."""
    t, s = results.tensors, results.summary
    directions = axes_of(results, "kl")["direction"]
    direction = st.radio("KL direction", directions, horizontal=True, key="diff_direction")
    d = directions.index(direction)
    prompt = st.selectbox("prompt", range(len(s["prompt_tokens"])), key="diff_prompt")
    tokens, n = s["prompt_tokens"][prompt], len(s["prompt_tokens"][prompt])
    values = t["kl"][d, prompt, :n].tolist()
    top = float(t["kl"][d].max())
    st.caption(literal(f"KL({direction}) of the next-token distributions after each token; red = {top:.4f} nats "
                       f"(the largest over all prompts); mean over all tokens: {s['mean_kl'][direction]:.4f}"))
    st.plotly_chart(kl_text(tokens, values, top), key="diff_text")
    st.subheader("Tokens whose predictions changed most")
    st.dataframe(s["top_changed"], key="diff_changed")
    layers = [f"L{layer}" for layer in axes_of(results, "act_diff_norm")["layer"]]
    st.plotly_chart(heatmap(t["act_diff_norm"][:, prompt, :n], [f"{i}:{x}" for i, x in enumerate(tokens)], layers,
                            "|resid_post(post) - resid_post(base)|", "token", "layer"), key="diff_norms")
    if "adl_top_tokens" not in s:
        st.info(literal(s.get("adl_skipped", "no activation-difference lens in these results")))
        return
    slots = axes_of(results, "adl_top_ids")["slot"]
    slot = st.selectbox("activation-difference lens: position of the unrelated text", slots, index=len(slots) - 1,
                        key="diff_slot")
    st.caption(literal(f"{s['adl_lens']}, on the mean difference over {s['adl_n_texts']} texts ({s['adl_text']}); "
                       f"left out of the ranking (never predicted): {', '.join(s['adl_left_out'])}"))
    st.dataframe({layer: by_slot[slot] for layer, by_slot in s["adl_top_tokens"].items()}, key="diff_adl")
    if "adl_tuned_top_tokens" not in s:
        st.caption(literal(s.get("adl_tuned_skipped", "no tuned-lens reading in these results")))
        return
    training = s["adl_tuned_training"]
    st.caption(literal(f"{s['adl_tuned_lens']} ({training['trained_on']}, {training['steps']} Adam steps, KL to the "
                       f"final distribution {training['loss_first']:.4g} -> {training['loss_last']:.4g}, summed over "
                       "layers); the last layer is read unchanged, as by the logit lens"))
    st.dataframe({layer: by_slot[slot] for layer, by_slot in s["adl_tuned_top_tokens"].items()}, key="diff_adl_tuned")
