"""Pieces every page shares: cached loading, plotly figures, and errors shown as messages instead of tracebacks."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import plotly.graph_objects as go
import streamlit as st
import torch

from interp.errors import InterpError
from interp.results import SUMMARY_FILE, Results, read_results


@st.cache_resource(show_spinner="reading results")
def _read(path: str, stamp: float) -> Results:
    return read_results(path)


def load_results(path: Path) -> Results:
    """`read_results`, cached until the directory's summary changes (a rerun of the analysis rewrites it)."""
    return _read(str(path), (path / SUMMARY_FILE).stat().st_mtime)


@contextlib.contextmanager
def errors_as_messages() -> Iterator[None]:
    """Show any error raised inside as a one-paragraph message (with the fix for user errors), never a traceback."""
    try:
        yield
    except InterpError as err:
        st.error(f"{err}")
    except Exception as err:  # noqa: BLE001 - the app must keep running whatever a page hits
        st.error(f"{type(err).__name__}: {err}")


def heatmap(matrix: torch.Tensor, x_labels: Sequence[str], y_labels: Sequence[str], title: str,
            x_title: str, y_title: str) -> go.Figure:
    """A diverging heatmap centred on zero (red positive, blue negative), first row at the top."""
    values = matrix.detach().float().cpu()
    bound = float(values.abs().nan_to_num().max()) or 1.0
    fig = go.Figure(go.Heatmap(z=values.tolist(), x=list(x_labels), y=list(y_labels), colorscale="RdBu",
                               reversescale=True, zmin=-bound, zmax=bound, zmid=0))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, yaxis_autorange="reversed")
    return fig


def lines(curves: Mapping[str, Sequence[float] | torch.Tensor], x: Sequence[float | int | str], title: str,
          x_title: str, y_title: str) -> go.Figure:
    """One line per named curve over the shared `x`."""
    fig = go.Figure()
    for name, ys in curves.items():
        values = ys.tolist() if isinstance(ys, torch.Tensor) else list(ys)
        fig.add_trace(go.Scatter(x=list(x), y=values, mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    return fig


def unique_labels(tokens: Sequence[str]) -> list[str]:
    """Axis labels for tokens: plotly merges equal category labels, so each is prefixed with its position."""
    return [f"{i}:{t}" for i, t in enumerate(tokens)]
