"""Gemma-2: Gemma plus norms after attention and MLP (four a block), attention and final logit soft-capping, and
sliding-window attention on alternate layers; scores scaled by query_pre_attn_scalar."""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.gemma import embed_scale
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, layer_windows, llama_gradients, llama_rotary,
                                     llama_sites, llama_weights, rotary_config)
from interp.models.native import NativeConfig

SANDWICH = {"ln1": "input_layernorm", "ln1_post": "post_attention_layernorm", "ln2": "pre_feedforward_layernorm",
            "ln2_post": "post_feedforward_layernorm"}


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    return rotary_config(c, dtype, architecture="Gemma2ForCausalLM", d_head=head_dim(c),
                         norm_offset=1.0, norm_upcast=True, embed_scale=embed_scale(c, dtype), post_norms=True,
                         attn_scale=math.sqrt(c.query_pre_attn_scalar), attn_softcap=c.attn_logit_softcapping,
                         final_softcap=c.final_logit_softcapping, windows=layer_windows(c))


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, SANDWICH)


SPEC = ArchSpec(
    family="gemma2", label="Gemma-2", model_types=("gemma2",), config=config, weights=weights, rotary=llama_rotary,
    sites=llama_sites("rms1p", post_norms=True), gradients=llama_gradients,
    tiny=("Gemma2Config", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=16, intermediate_size=128, max_position_embeddings=128,
                               query_pre_attn_scalar=16, sliding_window=4, attn_logit_softcapping=5.0,
                               final_logit_softcapping=3.0)),
    norm_center=0.0, notes="four norms a block, attention + logit soft-capping, alternating sliding window",
)
