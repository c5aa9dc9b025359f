"""OLMo-2: norms after attention and MLP only (no pre-norms), QK-norm over all heads at once, weights multiplied in
float32. `config` also serves OLMo-3 (`interp/models/arch/olmo3.py`), which adds sliding-window layers."""

from __future__ import annotations

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.spec import (ArchSpec, Weights, head_dim, layer_windows, llama_gradients, llama_rotary,
                                     llama_sites, llama_weights, rotary_config)
from interp.models.native import NativeConfig

POST_NORMS = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm", "q_norm": "q_norm",
              "k_norm": "k_norm"}


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    olmo3 = c.model_type == "olmo3"
    return rotary_config(c, dtype, architecture="Olmo3ForCausalLM" if olmo3 else "Olmo2ForCausalLM",
                         d_head=head_dim(c), norm_upcast=True, pre_norms=False, post_norms=True, qk_norm="all",
                         windows=layer_windows(c) if olmo3 else (),
                         rope_types=tuple(c.layer_types) if olmo3 else ())


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    return llama_weights(hf, cfg, POST_NORMS)


SPEC = ArchSpec(
    family="olmo2", label="OLMo-2", model_types=("olmo2",), config=config, weights=weights,
    rotary=llama_rotary, sites=llama_sites("rmsf", post_norms=True, pre_norms=False),
    gradients=llama_gradients,
    tiny=("Olmo2Config", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=128, max_position_embeddings=128)),
    notes="post-norms only, QK-norm over all heads",
)
