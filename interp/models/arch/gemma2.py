"""Gemma-2: Gemma plus norms after attention and MLP (four a block), attention and final logit soft-capping, and
sliding-window attention on alternate layers; scores scaled by query_pre_attn_scalar."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PreTrainedConfig

from interp.models.arch.gemma import gemma_norms
from interp.models.arch.spec import TINY, llama_spec

SANDWICH = {"ln1": "input_layernorm", "ln1_post": "post_attention_layernorm", "ln2": "pre_feedforward_layernorm",
            "ln2_post": "post_feedforward_layernorm"}


def gemma2_mechanisms(c: PreTrainedConfig, dtype: torch.dtype) -> dict[str, Any]:
    """Gemma's norms, post-norms, the query scale, and soft-capping (Gemma-2 and Gemma-3 alike)."""
    return gemma_norms(c, dtype) | dict(post_norms=True, attn_scale=math.sqrt(c.query_pre_attn_scalar),
                                        attn_softcap=c.attn_logit_softcapping, final_softcap=c.final_logit_softcapping)


SPEC = llama_spec("gemma2", "Gemma-2", "Gemma2ForCausalLM",
                  ("Gemma2Config", TINY | dict(query_pre_attn_scalar=16, sliding_window=4, attn_logit_softcapping=5.0,
                                               final_logit_softcapping=3.0)),
                  mechanisms=gemma2_mechanisms, norms=SANDWICH, norm_kind="rms1p", post_norms=True, norm_center=0.0,
                  notes="four norms a block, attention + logit soft-capping, alternating sliding window")
