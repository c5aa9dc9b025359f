"""TuCo page: per-prompt table and histogram, and a live alpha slider that reruns the model on a typed prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from apps.views.common import literal, plotly_text
from interp.errors import InterpError
from interp.results import Results


@st.cache_resource(show_spinner="loading models")
def model_pair(base: str, fine_tuned: str) -> tuple[Any, Any, Any]:
    """(pre-trained, fine-tuned, tokenizer) on CPU, loaded once per pair for the whole app."""
    from interp.loading import load

    for path in (base, fine_tuned):
        if not Path(path).is_dir():
            raise InterpError(f"checkpoint {path} (named in summary.json) does not exist",
                              fix="rerun `interp tuco` with checkpoints that exist on this machine")
    pt, ft = load(base, backend="native"), load(fine_tuned, backend="native")
    return pt.native(), ft.native(), ft.tokenizer


@torch.no_grad()
def live(pair: tuple[Any, Any, Any], prompt: str, alpha: float, max_new_tokens: int, prepend_bos: bool
         ) -> tuple[float, str]:
    """TuCo of `prompt` and the greedy continuation of the fine-tuned model with its FTC scaled by `alpha`."""
    from interp.finetuning.tuco import ScaledPair, encode_left_padded, tuco

    pt, ft, tokenizer = pair
    tokens, mask = encode_left_padded(tokenizer, [prompt], prepend_bos, ft.W_E.device)
    score = float(tuco(pt, ft, tokens, mask, output_co=False).tuco[0])
    generated = ScaledPair(pt, ft, alpha).generate(tokens, max_new_tokens, attention_mask=mask,
                                                   eos_token_id=tokenizer.eos_token_id)
    return score, tokenizer.decode(generated[0].tolist(), skip_special_tokens=True)


def prompt_table(results: Results) -> pd.DataFrame:
    """One row per prompt of each set: TuCo, OutputCo and the prompt text when its file is still there."""
    frames = []
    for suffix, key in (("", "prompts"), ("_b", "prompts_b")):
        if f"tuco{suffix}" not in results.tensors:
            continue
        info = results.summary.get(key, {})
        frame = pd.DataFrame({"set": Path(info.get("file", key)).name, "tuco": results.tensors[f"tuco{suffix}"]})
        if f"output_co{suffix}" in results.tensors:
            frame["output_co"] = results.tensors[f"output_co{suffix}"]
        file = Path(info.get("file", ""))
        if file.is_file():
            from interp.finetuning.prompts import read_prompts

            texts = read_prompts(file)
            if len(texts) == len(frame):
                frame["prompt"] = texts
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def histogram(table: pd.DataFrame) -> go.Figure:
    """TuCo histogram, one overlaid trace per prompt set."""
    fig = go.Figure([go.Histogram(x=group["tuco"].tolist(), name=plotly_text(name), opacity=0.6, nbinsx=30)
                     for name, group in table.groupby("set", sort=False)])
    fig.update_layout(barmode="overlay", title="TuCo per prompt", xaxis_title="TuCo", yaxis_title="prompts")
    return fig


def render(results: Results) -> None:
    """Table, histogram, behaviour per alpha, and the live rerun."""
    s = results.summary
    table = prompt_table(results)
    st.caption(literal(f"{s.get('method', '')}: base {s.get('base')}, fine-tuned {s.get('fine_tuned')}"))
    if "auc_tuco_a_vs_b" in s:
        st.metric("AUC (TuCo separates the two prompt sets)", f"{s['auc_tuco_a_vs_b']:.3f}")
    st.plotly_chart(histogram(table), key="tuco_hist")
    st.dataframe(table, key="tuco_table")
    if "behaviour" in s:
        st.write(literal(f"{s.get('behaviour_measure', 'behaviour')} per alpha"), s["behaviour"])

    st.subheader("Live: scale the fine-tuning component")
    prompt = st.text_input("prompt", key="tuco_prompt")
    alpha = st.slider("alpha (0 = pre-trained blocks only, 1 = fine-tuned model)", 0.0, 2.0, 1.0, 0.05,
                      key="tuco_alpha")
    tokens = st.number_input("new tokens", 1, 64, int(s.get("max_new_tokens", 16)), key="tuco_tokens")
    if prompt.strip():
        pair = model_pair(s["base"], s["fine_tuned"])
        score, text = live(pair, prompt, alpha, int(tokens), bool(s.get("prepend_bos", False)))
        st.metric("TuCo of this prompt", f"{score:.4f}")
        st.text_area("continuation at this alpha", text, disabled=True, key="tuco_continuation")
