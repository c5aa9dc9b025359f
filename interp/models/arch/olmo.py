"""OLMo (v1, Allen AI): LayerNorm without weights or bias, SwiGLU, optional clipping of q/k/v."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.llama import PRE_NORMS
from interp.models.arch.spec import (ArchSpec, Weights, head_dim, llama_gradients, llama_rotary, llama_sites,
                                     llama_weights, rotary_config)
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    return rotary_config(c, dtype, architecture="OlmoForCausalLM", d_head=head_dim(c), norm="layernorm",
                         norm_eps=1e-5, clip_qkv=c.clip_qkv)


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, PRE_NORMS)


SPEC = ArchSpec(
    family="olmo", label="OLMo", model_types=("olmo",), config=config, weights=weights, rotary=llama_rotary,
    sites=llama_sites("weightless"), gradients=llama_gradients,
    tiny=("OlmoConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, max_position_embeddings=128, clip_qkv=0.5)),
    notes="non-parametric LayerNorm, q/k/v clipping",
    # TransformerLens 4.3's NormalizationBridge applies a weight these norms do not have: an edit raises AttributeError
    bridge_missing=("ln1.hook_normalized", "ln2.hook_normalized", "ln_final.hook_normalized"),
)
