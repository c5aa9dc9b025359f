"""Gemma-3 (text): Gemma-2's block with QK-norm per head, local (sliding-window) and global layers, each with its
own rotary base."""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.errors import InterpError
from interp.models.arch.gemma import embed_scale
from interp.models.arch.gemma2 import SANDWICH
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, layer_windows, llama_gradients, llama_rotary,
                                     llama_sites, llama_weights, rotary_config)
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    if getattr(c, "use_bidirectional_attention", False):
        raise InterpError("this Gemma-3 checkpoint attends bidirectionally (an embedding model), not causally",
                          fix="interp analyses causal language models; use a Gemma-3 causal LM checkpoint")
    return rotary_config(c, dtype, architecture="Gemma3ForCausalLM", d_head=head_dim(c),
                         norm_offset=1.0, norm_upcast=True, embed_scale=embed_scale(c, dtype), post_norms=True,
                         qk_norm="head", attn_scale=math.sqrt(c.query_pre_attn_scalar),
                         attn_softcap=c.attn_logit_softcapping, final_softcap=c.final_logit_softcapping,
                         windows=layer_windows(c), rope_types=tuple(c.layer_types))


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, SANDWICH | {"q_norm": "q_norm", "k_norm": "k_norm"})


SPEC = ArchSpec(
    family="gemma3", label="Gemma-3 (text)", model_types=("gemma3_text",), config=config, weights=weights,
    rotary=llama_rotary, sites=llama_sites("rms1p", post_norms=True), gradients=llama_gradients,
    tiny=("Gemma3TextConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, intermediate_size=128, max_position_embeddings=128,
                                   query_pre_attn_scalar=16, sliding_window=4,
                                   layer_types=["sliding_attention", "full_attention"])),
    norm_center=0.0, notes="QK-norm, local/global layers with their own rotary bases",
)
