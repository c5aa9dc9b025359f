"""Token-level diff page: the prompts coloured by per-token KL, the top changed tokens, the activation-difference norms
and the activation-difference lens's top tokens per layer (Minder et al. 2025)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import streamlit as st

from interp.analyses.widgets import axes_of, heatmap, literal
from interp.results import Results


def kl_colour(value: float, top: float) -> str:
    """White (no change) to red (the largest KL shown), as a CSS colour."""
    fade = round(255 * (1 - min(value / top, 1.0))) if top > 0 else 255
    return f"rgb(255,{fade},{fade})"


def coloured_text(tokens: Sequence[str], values: Sequence[float], top: float) -> str:
    """HTML spans, one per token (escaped), its background by `kl_colour` and its KL in the tooltip."""
    spans = [f'<span title="KL {v:.4f}" style="background:{kl_colour(v, top)};color:black;white-space:pre-wrap">'
             f"{html.escape(t)}</span>" for t, v in zip(tokens, values)]
    return '<div style="line-height:1.9;font-family:monospace">' + "".join(spans) + "</div>"


def render(results: Results, found: list[Path]) -> None:
    """Prompt text coloured by KL (direction and prompt chosen), the changed-tokens table, a norms heatmap per prompt,
    and the lens's tokens per layer at a chosen slot."""
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
    st.markdown(coloured_text(tokens, values, top), unsafe_allow_html=True)
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
