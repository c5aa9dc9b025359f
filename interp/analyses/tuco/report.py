"""The report's figures for `interp tuco`, drawn from a results directory's tensors and summary: TuCo and OutputCo
histograms per prompt set, per-layer curves, behaviour rate and KL against alpha."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from interp.results import Results

SUFFIXES = {"prompts": "", "prompts_b": "_b"}  # summary entry of a prompt set -> suffix of its tensors


def prompt_sets(results: Results) -> dict[str, dict[str, Any]]:
    """Each prompt set's tensors (tuco, output_co, ptc, ftc, behaviour, kl), by its file's name (the set's key where
    both files have one name)."""
    sets = {}
    for key, suffix in SUFFIXES.items():
        if f"tuco{suffix}" in results.tensors:
            name = Path(results.summary[key]["file"]).name or key
            sets[key if name in sets else name] = {
                what: results.tensors[f"{what}{suffix}"]
                for what in ("tuco", "output_co", "ptc", "ftc", "behaviour", "kl")}
    return sets


def histograms(sets: dict[str, dict[str, Any]], what: str, title: str) -> Any:
    """Overlaid histograms of `what` (tuco or output_co) per prompt set."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Histogram(x=t[what].tolist(), name=name, opacity=0.6, nbinsx=30) for name, t in sets.items()])
    fig.update_layout(barmode="overlay", title=title, xaxis_title={"tuco": "TuCo", "output_co": "OutputCo"}[what],
                      yaxis_title="prompts")
    return fig


def layer_curves(sets: dict[str, dict[str, Any]]) -> list[Any]:
    """Mean cumulative TuCo after each block, and the mean cumulative L1 norms of PTC and FTC."""
    import plotly.graph_objects as go

    curve, norms = go.Figure(), go.Figure()
    for name, t in sets.items():
        ptc, ftc = t["ptc"], t["ftc"]
        layers = list(range(1, ptc.shape[1] + 1))
        curve.add_trace(go.Scatter(x=layers, y=(ftc / (ptc + ftc)).mean(0).tolist(), mode="lines+markers", name=name))
        norms.add_trace(go.Scatter(x=layers, y=ptc.mean(0).tolist(), mode="lines+markers", name=f"{name}: PTC"))
        norms.add_trace(go.Scatter(x=layers, y=ftc.mean(0).tolist(), mode="lines+markers", name=f"{name}: FTC",
                                   line={"dash": "dash"}))
    curve.update_layout(title="TuCo of the first l blocks (mean over prompts)", xaxis_title="blocks summed (l)",
                        yaxis_title="cumulative TuCo", yaxis_range=[0, 1])
    norms.update_layout(title="||sum of the first l PTC / FTC at the last token||_1 (mean over prompts)",
                        xaxis_title="blocks summed (l)", yaxis_title="L1 norm")
    return [curve, norms]


def alpha_curves(labels: Sequence[str], sets: dict[str, dict[str, Any]], behaviour_name: str) -> list[Any]:
    """Behaviour rate and mean next-token KL to the fine-tuned model, against alpha, per prompt set."""
    import plotly.graph_objects as go

    rate, div = go.Figure(), go.Figure()
    for name, t in sets.items():
        rate.add_trace(go.Scatter(x=list(labels), y=t["behaviour"].tolist(), mode="lines+markers", name=name))
        div.add_trace(go.Scatter(x=list(labels), y=t["kl"].mean(-1).tolist(), mode="lines+markers", name=name))
    rate.update_layout(title=f"{behaviour_name} of greedy continuations against alpha "
                             "(x_(l+1) = x_l + PTC + alpha FTC)", xaxis_title="alpha", yaxis_title=behaviour_name,
                       yaxis_range=[0, 1], xaxis_type="category")
    div.update_layout(title="next-token KL(fine-tuned || scaled) after the prompt, mean", xaxis_title="alpha",
                      yaxis_title="KL (nats)", xaxis_type="category")
    return [rate, div]
