"""Chain-of-models page: each headline number of the pair analysis over the chain's pairs, as a table and a line
chart, and where each pair's own results directory is (open it in the explorer for the pair's own page)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from interp.analyses.widgets import axes_of, lines, literal
from interp.results import Results


def render(results: Results, found: list[Path]) -> None:
    """The pairs with their kind and directory, a table of every headline over the pairs, and one chart per
    headline."""
    s = results.summary
    st.caption(literal(f"`{s['pair_analysis']}` on each pair of {len(s['checkpoints'])} checkpoints of {s['chain']}; "
                       f"settings: {s['pair_settings'] or 'defaults'}"))
    names = list(s["headlines"])
    rows = [{"pair": pair["label"], "kind": pair["kind"],
             **{name: float(results.tensors[name][i]) for name in names},
             "directory": str(results.path / pair["dir"])} for i, pair in enumerate(s["pairs"])]
    st.dataframe(rows, key="chain_table")
    if s.get("headlines_left_out"):
        st.info(literal(f"not a number in every pair, so left out: {', '.join(s['headlines_left_out'])}"))
    for name in names:
        labels = axes_of(results, name)["pair"]
        st.plotly_chart(lines({name: results.tensors[name]}, labels, f"{name} ({s['headlines'][name]})", "pair",
                              name), key=f"chain_{name}")
