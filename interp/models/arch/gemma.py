"""Gemma: Llama's layout with a scaled embedding, RMSNorm scaling by (1 + w) in float32, and GeGLU."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.llama import PRE_NORMS
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, llama_gradients, llama_rotary, llama_sites,
                                     llama_weights, rotary_config)
from interp.models.native import NativeConfig


def embed_scale(c: PreTrainedConfig, dtype: torch.dtype) -> float:
    """sqrt(d_model) rounded to the weights' dtype, as Gemma multiplies it."""
    return float(torch.tensor(c.hidden_size**0.5, dtype=dtype))


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    return rotary_config(c, dtype, architecture="GemmaForCausalLM", d_head=head_dim(c), norm_offset=1.0,
                         norm_upcast=True, embed_scale=embed_scale(c, dtype))


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, PRE_NORMS)


SPEC = ArchSpec(
    family="gemma", label="Gemma", model_types=("gemma",), config=config, weights=weights, rotary=llama_rotary,
    sites=llama_sites("rms1p"), gradients=llama_gradients,
    tiny=("GemmaConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                              head_dim=32, intermediate_size=128, max_position_embeddings=128)),
    norm_center=0.0, notes="scaled embedding, (1 + w) RMSNorm, GeGLU",
)
