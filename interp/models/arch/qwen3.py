"""Qwen3: Llama's layout with an RMSNorm on each query and key head (QK-norm) before rotary."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.llama import PRE_NORMS
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, layer_windows, llama_gradients, llama_rotary,
                                     llama_sites, llama_weights, rotary_config)
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    return rotary_config(c, dtype, architecture="Qwen3ForCausalLM", d_head=head_dim(c), windows=layer_windows(c),
                         qk_norm="head")


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, PRE_NORMS | {"q_norm": "q_norm", "k_norm": "k_norm"})


SPEC = ArchSpec(
    family="qwen3", label="Qwen3", model_types=("qwen3",), config=config, weights=weights, rotary=llama_rotary,
    sites=llama_sites("rms"), gradients=llama_gradients,
    tiny=("Qwen3Config", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=16, intermediate_size=128, max_position_embeddings=128,
                              use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    notes="QK-norm per head",
)
