"""Mistral: Llama's layout with a sliding attention window on every layer."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.llama import PRE_NORMS
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, llama_gradients, llama_rotary, llama_sites,
                                     llama_weights, rotary_config)
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    window = getattr(c, "sliding_window", None)
    return rotary_config(c, dtype, architecture="MistralForCausalLM", d_head=head_dim(c),
                         windows=(window,) * c.num_hidden_layers if window else ())


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, PRE_NORMS)


SPEC = ArchSpec(
    family="mistral", label="Mistral", model_types=("mistral",), config=config, weights=weights,
    rotary=llama_rotary, sites=llama_sites("rms"), gradients=llama_gradients,
    tiny=("MistralConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=16, intermediate_size=128, max_position_embeddings=128, sliding_window=4)),
    notes="sliding-window attention",
)
