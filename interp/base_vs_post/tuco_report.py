"""Figures for `interp tuco`: TuCo histograms per prompt set, per-layer curves, behaviour against alpha."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from interp.base_vs_post.tuco import TuCoResult


def histograms(sets: dict[str, TuCoResult], title: str, output_co: bool = False) -> Any:
    """Overlaid histograms of TuCo (or OutputCo) per prompt set."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, res in sets.items():
        values = res.output_co if output_co else res.tuco
        if values is not None:
            fig.add_trace(go.Histogram(x=values.tolist(), name=name, opacity=0.6, nbinsx=30))
    what = "OutputCo" if output_co else "TuCo"
    fig.update_layout(barmode="overlay", title=title, xaxis_title=what, yaxis_title="prompts")
    return fig


def layer_curves(sets: dict[str, TuCoResult]) -> list[Any]:
    """Mean cumulative TuCo after each block, and the mean cumulative L1 norms of PTC and FTC."""
    import plotly.graph_objects as go

    curve, norms = go.Figure(), go.Figure()
    for name, res in sets.items():
        layers = list(range(1, res.ptc.shape[1] + 1))
        curve.add_trace(go.Scatter(x=layers, y=res.tuco_by_layer.mean(0).tolist(), mode="lines+markers", name=name))
        norms.add_trace(go.Scatter(x=layers, y=res.ptc.mean(0).tolist(), mode="lines+markers", name=f"{name}: PTC"))
        norms.add_trace(go.Scatter(x=layers, y=res.ftc.mean(0).tolist(), mode="lines+markers", name=f"{name}: FTC",
                                   line={"dash": "dash"}))
    curve.update_layout(title="TuCo of the first l blocks (mean over prompts)", xaxis_title="blocks summed (l)",
                        yaxis_title="cumulative TuCo", yaxis_range=[0, 1])
    norms.update_layout(title="||sum of the first l PTC / FTC at the last token||_1 (mean over prompts)",
                        xaxis_title="blocks summed (l)", yaxis_title="L1 norm")
    return [curve, norms]


def alpha_curves(labels: Sequence[str], behaviour: dict[str, torch.Tensor], kl: dict[str, torch.Tensor],
                 behaviour_name: str) -> list[Any]:
    """Behaviour rate and mean next-token KL to the fine-tuned model, against alpha, per prompt set."""
    import plotly.graph_objects as go

    rate, div = go.Figure(), go.Figure()
    for name in behaviour:
        rate.add_trace(go.Scatter(x=list(labels), y=behaviour[name].tolist(), mode="lines+markers", name=name))
        div.add_trace(go.Scatter(x=list(labels), y=kl[name].mean(-1).tolist(), mode="lines+markers", name=name))
    rate.update_layout(title=f"{behaviour_name} of greedy continuations against alpha "
                             "(x_(l+1) = x_l + PTC + alpha FTC)", xaxis_title="alpha", yaxis_title=behaviour_name,
                       yaxis_range=[0, 1], xaxis_type="category")
    div.update_layout(title="next-token KL(fine-tuned || scaled) after the prompt, mean", xaxis_title="alpha",
                      yaxis_title="KL (nats)", xaxis_type="category")
    return [rate, div]
