"""Streamlit pieces every explorer page shares: cached loading, plotly figures, errors shown as messages instead of
tracebacks, and user strings (file, checkpoint and prompt names) shown as the literal text they are, never as
Markdown or HTML."""

from __future__ import annotations

import contextlib
import html
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

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


_MARKDOWN_SYNTAX = re.compile(r"([!-/:-@\[-`{-~])")


def literal(text: object) -> str:
    """`text` with every ASCII punctuation character backslash-escaped, so that Streamlit's Markdown elements
    (caption, error, write, ...) show it verbatim: no HTML, links, images, emphasis, LaTeX or colour directives."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", str(text))


def plotly_text(text: Any) -> Any:
    """A string with HTML escaped, for plotly titles, labels and trace names (plotly renders a subset of HTML tags and
    decodes entities, so the escaped text shows verbatim); numbers unchanged."""
    return html.escape(text, quote=False) if isinstance(text, str) else text


@contextlib.contextmanager
def errors_as_messages() -> Iterator[None]:
    """Show any error raised inside as a one-paragraph message (with the fix for user errors), never a traceback."""
    try:
        yield
    except InterpError as err:
        st.error(literal(err))
    except Exception as err:  # noqa: BLE001 - the app must keep running whatever a page hits
        st.error(literal(f"{type(err).__name__}: {err}"))


def heatmap(matrix: torch.Tensor, x_labels: Sequence[str], y_labels: Sequence[str], title: str,
            x_title: str, y_title: str) -> go.Figure:
    """A diverging heatmap centred on zero (red positive, blue negative), first row at the top."""
    values = matrix.detach().float().cpu()
    bound = float(values.abs().nan_to_num().max()) or 1.0
    fig = go.Figure(go.Heatmap(z=values.tolist(), x=[plotly_text(x) for x in x_labels],
                               y=[plotly_text(y) for y in y_labels], colorscale="RdBu",
                               reversescale=True, zmin=-bound, zmax=bound, zmid=0))
    fig.update_layout(title=plotly_text(title), xaxis_title=x_title, yaxis_title=y_title, yaxis_autorange="reversed")
    return fig


def lines(curves: Mapping[str, Sequence[float] | torch.Tensor], x: Sequence[float | int | str], title: str,
          x_title: str, y_title: str) -> go.Figure:
    """One line per named curve over the shared `x`."""
    fig = go.Figure()
    for name, ys in curves.items():
        values = ys.tolist() if isinstance(ys, torch.Tensor) else list(ys)
        fig.add_trace(go.Scatter(x=list(x), y=values, mode="lines+markers", name=plotly_text(name)))
    fig.update_layout(title=plotly_text(title), xaxis_title=x_title, yaxis_title=y_title)
    return fig


def unique_labels(tokens: Sequence[str]) -> list[str]:
    """Axis labels for tokens: plotly merges equal category labels, so each is prefixed with its position."""
    return [f"{i}:{t}" for i, t in enumerate(tokens)]


def axes_of(results: Results, name: str) -> dict[str, list[Any]]:
    """{axis name: tick labels} of the tensor `name`, outermost first, as summary.json describes it (0, 1, 2, ...
    for an axis without ticks)."""
    described = results.summary.get("tensors", {}).get(name)
    if not isinstance(described, dict) or name not in results.tensors:
        raise InterpError(f"{results.path}: summary.json does not describe the axes of {name!r} (written by an "
                          "older interp, or by another tool)", fix="rerun the analysis that wrote it")
    ticks = described.get("ticks", {})
    shape = results.tensors[name].shape
    return {axis: list(ticks.get(axis, range(n))) for axis, n in zip(described["axes"], shape)}


def tick_labels(axis: str, ticks: Sequence[Any]) -> list[str]:
    """Labels of one axis: `L3` for layers, `H2` for heads, `step 300` for a checkpoint's step, `i:token` for other
    text ticks, else the tick."""
    if axis in ("layer", "head"):
        return [f"{axis[0].upper()}{t}" for t in ticks]
    if axis == "checkpoint":
        return [f"step {t}" if isinstance(t, int) else str(t) for t in ticks]
    return unique_labels([str(t) for t in ticks]) if any(isinstance(t, str) for t in ticks) else [str(t) for t in ticks]


def grid(values: torch.Tensor, axes: Mapping[str, Sequence[Any]]
         ) -> tuple[torch.Tensor, list[str], list[str], str, str]:
    """A tensor as a 2-D grid: its last axis across, the others down (`L0H1` rows for [layer, head, ...]); returns
    (values, row labels, column labels, column title, row title)."""
    *row_axes, column = axes
    rows = [""]
    for axis in row_axes:
        rows = [row + label for row in rows for label in tick_labels(axis, axes[axis])]
    return values.reshape(len(rows), -1), rows, tick_labels(column, axes[column]), column, ", ".join(row_axes)
