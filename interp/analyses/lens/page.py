"""Lens page: layer x position heatmaps of KL to the final distribution (or entropy) for the logit and tuned lens at
the checkpoint a slider picks, the held-out KL per layer across checkpoints, and a task's answer rank per layer."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from interp.analyses.widgets import axes_of, heatmap, lines, literal, tick_labels
from interp.results import Results

LENSES = ("logit", "tuned")


def checkpoint_index(results: Results, name: str) -> int:
    """The checkpoint the slider picks (the last by default), as an index into the tensors' first axis."""
    labels = tick_labels("checkpoint", axes_of(results, name)["checkpoint"])
    if len(labels) == 1:
        return 0
    return labels.index(st.select_slider("checkpoint", labels, value=labels[-1], key="lens_ckpt"))


def render(results: Results, found: list[Path]) -> None:
    """Heatmaps per lens at one checkpoint, held-out KL curves per layer, and the task's answer rank."""
    t, s = results.tensors, results.summary
    st.caption(literal(f"{s.get('layers', '')}; KL(final || lens) in nats; tuned lens trained on "
                       f"{len(s.get('training_prompts', []))} of {s.get('prompts')} prompts"))
    metric = st.radio("value", ["kl", "entropy"], horizontal=True, key="lens_metric")
    index = checkpoint_index(results, f"{metric}_logit")
    ticks = axes_of(results, f"{metric}_logit")
    for name, column in zip(LENSES, st.columns(2)):
        column.plotly_chart(heatmap(t[f"{metric}_{name}"][index], tick_labels("pos", ticks["pos"]),
                                    tick_labels("layer", ticks["layer"]), f"{name} lens: {metric}", "position",
                                    "layer"), key=f"lens_heat_{name}")
    layer = st.select_slider("layer", tick_labels("layer", ticks["layer"]), key="lens_layer")
    row = tick_labels("layer", ticks["layer"]).index(layer)
    st.plotly_chart(lines({name: t[f"eval_kl_{name}"][:, row] for name in LENSES}, ticks["checkpoint"],
                          f"KL at {layer} on {s.get('eval_split')} across training", "step", "KL (nats)"),
                    key="lens_across")
    if "answer_rank_logit" in t:
        answers = s.get("task", {}).get("answers", [])
        for name, column in zip(LENSES, st.columns(2)):
            column.plotly_chart(heatmap(t[f"answer_rank_{name}"][index].float(), tick_labels("prompt", answers),
                                        tick_labels("layer", ticks["layer"]), f"{name} lens: answer rank",
                                        "answer", "layer"), key=f"lens_rank_{name}")
        st.json(s.get("task", {}).get("readable_step", {}))
