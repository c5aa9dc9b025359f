"""Patching page: one site's effect per layer as a heatmap, a checkpoint slider, and differences between two
checkpoints or two models (results directories with the same sites)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
import streamlit as st
from torch import Tensor

from interp.analyses.widgets import axes_of, grid, heatmap, literal, load_results, tick_labels
from interp.errors import InterpError
from interp.results import Results


def sites(results: Results) -> list[str]:
    """The patched sites, in the order the sweep ran them."""
    return [s for s in results.summary.get("sites", []) if s in results.tensors]


def checkpoint_labels(results: Results, site: str) -> list[str]:
    """'step 300' per checkpoint (its directory name when the step is unknown), from the site's checkpoint ticks."""
    return tick_labels("checkpoint", axes_of(results, site)["checkpoint"])


def site_values(results: Results, site: str, raw: bool) -> Tensor:
    """[checkpoint, layer, ...] effects of `site`: normalised, or the raw metric."""
    return results.tensors[f"{site}.raw" if raw else site]


def difference(a: Tensor, b: Tensor, what: str) -> Tensor:
    """a - b for two same-shaped effect grids, with a clear error when they do not line up."""
    if a.shape != b.shape:
        raise InterpError(f"cannot subtract {what}: shapes {list(a.shape)} and {list(b.shape)} differ",
                          fix="compare results of the same site, prompts and model size")
    return a - b


def is_patching(path: Path) -> bool:
    """Whether the results directory at `path` was written by `interp patch` (as its summary.json records)."""
    return load_results(path).summary.get("analysis") == "patch"


def _figure(values: Tensor, results: Results, site: str, title: str) -> go.Figure:
    """One checkpoint's effects as a heatmap, rows and columns labelled by the site's axes after `checkpoint`."""
    axes = axes_of(results, site)
    del axes["checkpoint"]
    z, rows, cols, x_title, y_title = grid(values, axes)
    return heatmap(z, cols, rows, title, x_title, y_title)


def render(results: Results, found: Sequence[Path]) -> None:
    """Heatmap of one site at one checkpoint; optionally the difference to another checkpoint or another results
    directory among `found` (another model or run patched with the same site)."""
    names = sites(results)
    if not names:
        raise InterpError(f"{results.path} lists no patched sites", fix="rerun `interp patch`")
    s = results.summary
    st.caption(literal(f"metric {s.get('metric')} ({s.get('direction')}), {s.get('n_prompts')} prompts; "
                       "normalised: 0 = corrupted run, 1 = clean run"))
    left, right = st.columns(2)
    site = left.selectbox("site", names, key="patch_site")
    raw = right.toggle("raw metric", key="patch_raw")
    labels = checkpoint_labels(results, site)
    values = site_values(results, site, raw)
    label = st.select_slider("checkpoint", labels, value=labels[-1], key="patch_ckpt") if len(labels) > 1 else labels[0]
    index = labels.index(label)
    st.plotly_chart(_figure(values[index], results, site, f"{site}: {label}"), key="patch_heatmap")

    mode = st.radio("difference", ["none", "two checkpoints", "two models"], horizontal=True, key="patch_mode")
    if mode == "two checkpoints":
        other = st.selectbox("minus checkpoint", labels, index=0, key="patch_other_ckpt")
        diff = difference(values[index], values[labels.index(other)], "checkpoints")
        st.plotly_chart(_figure(diff, results, site, f"{site}: {label} - {other}"), key="patch_diff")
    elif mode == "two models":
        candidates = [p for p in found if p != results.path and is_patching(p)]
        if not candidates:
            st.info("No other patching results to compare with: pass more results directories to `interp app`.")
            return
        path = st.selectbox("minus results of", candidates, format_func=str, key="patch_other_dir")
        other = load_results(path)
        if site not in other.tensors:
            raise InterpError(f"{path} has no site {site}", fix=f"choose one of {', '.join(sites(other))}")
        theirs = site_values(other, site, raw)
        diff = difference(values[index], theirs[min(index, theirs.shape[0] - 1)], "models")
        st.plotly_chart(_figure(diff, results, site, f"{site}: {results.path.name} - {path.name} ({label})"),
                        key="patch_diff")
