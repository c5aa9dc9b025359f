"""Plotly figures for the base-vs-post reports: per-layer curves, grouped bars and side-by-side heatmaps."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor


def layer_curves(curves: Mapping[str, Tensor], title: str, y_title: str) -> Any:
    """One line per named per-layer series."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values in curves.items():
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=values.tolist(), mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=y_title)
    return fig


def grouped_bars(groups: Mapping[str, Mapping[str, float]], title: str, y_title: str) -> Any:
    """Bars: one trace per series name, one x group per outer key."""
    import plotly.graph_objects as go

    series = list(dict.fromkeys(k for inner in groups.values() for k in inner))
    fig = go.Figure([go.Bar(name=s, x=list(groups), y=[groups[g].get(s) for g in groups]) for s in series])
    fig.update_layout(title=title, barmode="group", yaxis_title=y_title)
    return fig


def heatmaps(maps: Mapping[str, Tensor], x_labels: Sequence[str], title: str) -> Any:
    """Layer x position heatmaps side by side, one colour scale shared per panel."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=list(maps), horizontal_spacing=0.06)
    for col, values in enumerate(maps.values(), start=1):
        fig.add_trace(go.Heatmap(z=values.tolist(), x=[f"{i}:{t}" for i, t in enumerate(x_labels)],
                                 colorscale="RdBu", zmid=0, showscale=col == len(maps)), row=1, col=col)
        fig.update_xaxes(title_text="token", row=1, col=col)
        fig.update_yaxes(title_text="layer", row=1, col=col)
    fig.update_layout(title=title, height=450, width=max(600, 450 * len(maps)))
    return fig


def scatter_log(points: Mapping[str, tuple[Tensor, Tensor]], title: str, x_title: str, y_title: str) -> Any:
    """Scatter of (x, y) per model with a log y axis (LogitVar against output norm, as Du's fig. 1)."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers", name=name, marker={"size": 4})
                     for name, (x, y) in points.items()])
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, yaxis_type="log")
    return fig
