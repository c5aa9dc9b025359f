"""Plotly figures of `interp induction scores`: score vs step per head, per-checkpoint heatmaps, the loss curves."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from interp.dynamics.formation import FormationReport


def _axis(steps: Sequence[int]) -> tuple[list[float], dict[str, Any]]:
    """x values and axis settings: a log axis for log-spaced runs (step 0 drawn at 0.5), else linear."""
    positive = [s for s in steps if s > 0]
    if positive and max(positive) / min(positive) >= 100:
        return [s if s > 0 else 0.5 for s in steps], {"type": "log", "title": "step (log; step 0 drawn at 0.5)"}
    return [float(s) for s in steps], {"title": "step"}


def score_curves(steps: Sequence[int], scores: dict[str, Tensor], formation: FormationReport) -> list[Any]:
    """One figure per score: every head's score against the step, formation steps marked."""
    import plotly.graph_objects as go

    x, xaxis = _axis(steps)
    figures = []
    for name, values in scores.items():
        fig = go.Figure()
        for layer in range(values.shape[1]):
            for head in range(values.shape[2]):
                fig.add_trace(go.Scatter(x=x, y=values[:, layer, head].tolist(), mode="lines+markers",
                                         name=f"L{layer}H{head}"))
        if name == "induction":
            for h in formation.heads:
                fig.add_vline(x=x[list(steps).index(h.step)], line_dash="dot",
                              annotation_text=f"L{h.layer}H{h.head} forms")
        fig.update_layout(title=f"{name} score per head", xaxis=xaxis, yaxis_title=name)
        figures.append(fig)
    return figures


def heatmaps(steps: Sequence[int], scores: dict[str, Tensor]) -> list[Any]:
    """Layer x head heatmaps with a slider over checkpoints."""
    import plotly.express as px

    figures = []
    for name, values in scores.items():
        fig = px.imshow(values.numpy(), animation_frame=0, zmin=float(values.min()), zmax=float(values.max()),
                        labels={"animation_frame": "checkpoint", "x": "head", "y": "layer", "color": name},
                        title=f"{name} per head at each checkpoint (slider: checkpoint index; steps {list(steps)})",
                        color_continuous_scale="Viridis", aspect="auto")
        figures.append(fig)
    return figures


def loss_curves(steps: Sequence[int], icl: Tensor, loss: Tensor, formation: FormationReport) -> Any:
    """The in-context-learning score and mean probe loss against the step, the ICL phase change marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x, xaxis = _axis(steps)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True,
                        subplot_titles=("in-context-learning score (late - early loss)", "mean probe loss"))
    fig.add_trace(go.Scatter(x=x, y=icl.tolist(), mode="lines+markers", name="ICL score"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=loss.tolist(), mode="lines+markers", name="loss"), row=2, col=1)
    if formation.icl_drop_step is not None:
        fig.add_vline(x=x[list(steps).index(formation.icl_drop_step)], line_dash="dash",
                      annotation_text="steepest ICL drop")
    fig.update_xaxes(**xaxis, row=2, col=1)
    if xaxis.get("type") == "log":
        fig.update_xaxes(type="log", row=1, col=1)
    fig.update_layout(title="loss curves")
    return fig
