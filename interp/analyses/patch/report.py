"""The patching report's figures (`interp.analyses.patch.figures`): a heatmap per site with a slider over
checkpoints, and the top effects against step."""

from __future__ import annotations

from typing import Any, Sequence

import einops
import torch
from torch import Tensor


def _grid(values: Tensor, site: str, tokens: Sequence[str]) -> tuple[Tensor, list[str], list[str]]:
    """One checkpoint's result as a 2-D grid with row and column labels."""
    n_layers = values.shape[0]
    if values.ndim == 3:  # [layer, head, pos]
        rows = [f"L{l}H{h}" for l in range(n_layers) for h in range(values.shape[1])]
        return einops.rearrange(values, "l h p -> (l h) p"), rows, _pos_labels(tokens, values.shape[-1])
    if site.startswith(("z", "q", "k", "v", "pattern")):
        return values, [f"L{l}" for l in range(n_layers)], [f"H{h}" for h in range(values.shape[1])]
    return values, [f"L{l}" for l in range(n_layers)], _pos_labels(tokens, values.shape[-1])


def _pos_labels(tokens: Sequence[str], n: int) -> list[str]:
    return [f"{i}:{tokens[i]!r}" if i < len(tokens) else str(i) for i in range(n)]


def site_heatmap(site: str, normalised: Tensor, labels: Sequence[str], tokens: Sequence[str]) -> Any:
    """Heatmap of one site's normalised effect, one slider step per checkpoint."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, label in enumerate(labels):
        z, rows, cols = _grid(normalised[i], site, tokens)
        fig.add_trace(go.Heatmap(z=z.tolist(), x=cols, y=rows, colorscale="RdBu", zmid=0, visible=i == len(labels) - 1,
                                 name=label, colorbar={"title": "normalised"}))
    steps = [{"method": "update", "label": label,
              "args": [{"visible": [j == i for j in range(len(labels))]}, {"title": f"{site}: {label}"}]}
             for i, label in enumerate(labels)]
    fig.update_layout(title=f"{site}: {labels[-1]}", yaxis={"autorange": "reversed"},
                      sliders=[{"active": len(labels) - 1, "steps": steps, "currentvalue": {"prefix": "checkpoint: "}}],
                      height=max(400, 18 * len(_grid(normalised[0], site, tokens)[1]) + 200))
    return fig


def top_components(results: dict[str, Tensor], steps: Sequence[int | None], k: int = 8) -> Any:
    """The k components with the largest |normalised effect| at any checkpoint, plotted against step."""
    import plotly.graph_objects as go

    scored = []
    for site, values in results.items():
        flat = values.flatten(1).nan_to_num(0.0)
        peak = flat.abs().amax(0)
        for idx in torch.topk(peak, min(k, peak.numel())).indices.tolist():
            cell = torch.unravel_index(torch.tensor(idx), values.shape[1:])
            scored.append((float(peak[idx]), f"{site}[{','.join(str(int(c)) for c in cell)}]", flat[:, idx]))
    scored.sort(key=lambda s: -s[0])
    x = [s if s is not None else i for i, s in enumerate(steps)]
    fig = go.Figure([go.Scatter(x=x, y=series.tolist(), mode="lines+markers", name=name)
                     for _, name, series in scored[:k]])
    fig.update_layout(title=f"Largest {k} components' normalised effect against step", xaxis_title="step",
                      yaxis_title="normalised effect")
    return fig
