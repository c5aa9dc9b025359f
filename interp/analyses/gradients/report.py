"""Figures and tables of `interp gradients`: curves per projection, MAD tables, RD between conditions."""

from __future__ import annotations

import math
from typing import Any

from interp.dynamics.gradients.run import LayerGradients
from interp.dynamics.gradients.stats import STATISTICS, THIRDS, relative_difference

_COLUMNS = ("all",) + THIRDS


def curve_figure(conditions: dict[str, LayerGradients], stat: str = "nuclear") -> Any:
    """One panel per projection, x = layer, y = the statistic averaged over samples, one line per condition."""
    from plotly.subplots import make_subplots

    projections = next(iter(conditions.values())).projections
    cols = min(4, len(projections))
    rows = math.ceil(len(projections) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{stat} | {p}" for p in projections])
    palette = ("#d62728", "#1f77b4", "#2ca02c", "#7f7f7f")
    for c, (label, result) in enumerate(conditions.items()):
        curves = result.curves()
        for i, proj in enumerate(projections):
            fig.add_scatter(y=curves[f"{stat}.{proj}"].tolist(), mode="lines+markers", name=label,
                            legendgroup=label, showlegend=i == 0, line_color=palette[c % len(palette)],
                            row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(height=320 * rows, title=f"Gradient {stat} per layer (mean over samples)")
    return fig


def mad_rows(conditions: dict[str, LayerGradients], stat: str = "nuclear") -> list[list[Any]]:
    """Rows [condition, projection, MAD all, early, middle, late]."""
    return [[label, proj, *(table[col] for col in _COLUMNS)]
            for label, result in conditions.items() for proj, table in result.mad(stat).items()]


def _number(value: float) -> str:
    """n/a where a third has fewer than two layers (MAD needs one adjacent pair)."""
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def mad_markdown(conditions: dict[str, LayerGradients], stat: str = "nuclear") -> str:
    """The MAD table as Markdown (for READMEs and the terminal)."""
    lines = ["| condition | projection | MAD all | early | middle | late |", "|---|---|---|---|---|---|"]
    for label, proj, *values in mad_rows(conditions, stat):
        lines.append(f"| {label} | {proj} | " + " | ".join(map(_number, values)) + " |")
    return "\n".join(lines)


def mad_figure(conditions: dict[str, LayerGradients], stat: str = "nuclear") -> Any:
    """The MAD table as a plotly table."""
    import plotly.graph_objects as go

    rows = mad_rows(conditions, stat)
    cells = [list(col) for col in zip(*rows)]
    cells[2:] = [[_number(v) for v in col] for col in cells[2:]]
    header = ["condition", "projection", "MAD all", "early", "middle", "late"]
    fig = go.Figure(go.Table(header={"values": header}, cells={"values": cells}))
    fig.update_layout(title=f"MAD of the {stat} curve across layers (whole model and thirds)",
                      height=120 + 28 * len(rows))
    return fig


def relative_differences(a: LayerGradients, b: LayerGradients) -> dict[str, float]:
    """RD(a, b) for every statistic and projection: {"nuclear.q": ..., ...}; empty if the depths differ."""
    if a.n_layers != b.n_layers:
        return {}
    ca, cb = a.curves(), b.curves()
    return {key: relative_difference(ca[key], cb[key]) for key in ca if key in cb}


def condition_figures(conditions: dict[str, LayerGradients]) -> list[Any]:
    """The report: nuclear-norm curves, sigma_1-ratio curves, Frobenius curves, then the MAD table."""
    return [curve_figure(conditions, stat) for stat in STATISTICS] + [mad_figure(conditions)]
