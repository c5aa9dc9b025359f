"""Llama (and Llama-2/3, TinyLlama, ...): RMSNorm, SwiGLU, rotary, grouped-query attention."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.spec import (ArchSpec, Weights, head_dim, llama_gradients, llama_rotary, llama_sites,
                                     llama_weights, rotary_config)
from interp.models.native import NativeConfig

PRE_NORMS = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    return rotary_config(c, dtype, architecture="LlamaForCausalLM", d_head=head_dim(c))


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, PRE_NORMS)


SPEC = ArchSpec(
    family="llama", label="Llama", model_types=("llama",), config=config, weights=weights, rotary=llama_rotary,
    sites=llama_sites("rms"), gradients=llama_gradients,
    tiny=("LlamaConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=16, intermediate_size=128, max_position_embeddings=128)),
    notes="RMSNorm, SwiGLU, rotary, grouped-query attention",
)
