"""Qwen2 / Qwen2.5: Llama's layout with q/k/v biases; sliding windows on the layers `layer_types` marks."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.llama import PRE_NORMS
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, layer_windows, llama_gradients, llama_rotary,
                                     llama_sites, llama_weights, rotary_config)
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    return rotary_config(c, dtype, architecture="Qwen2ForCausalLM", d_head=head_dim(c), windows=layer_windows(c))


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, PRE_NORMS)


SPEC = ArchSpec(
    family="qwen2", label="Qwen2 / Qwen2.5", model_types=("qwen2",), config=config, weights=weights,
    rotary=llama_rotary, sites=llama_sites("rms"), gradients=llama_gradients,
    tiny=("Qwen2Config", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=128, max_position_embeddings=128)),
    notes="q/k/v biases",
)
