"""OLMo-3: OLMo-2's block (post-norms only, QK-norm over all heads) with sliding-window layers, each layer type with
its own rotary table."""

from __future__ import annotations

from interp.models.arch import olmo2
from interp.models.arch.spec import ArchSpec, llama_gradients, llama_rotary

SPEC = ArchSpec(
    family="olmo3", label="OLMo-3", model_types=("olmo3",), config=olmo2.config, weights=olmo2.weights,
    rotary=llama_rotary, sites=olmo2.SPEC.sites, gradients=llama_gradients,
    tiny=("Olmo3Config", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=128, max_position_embeddings=128, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"],
                              rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                               "full_attention": {"rope_type": "default", "rope_theta": 500000.0}})),
    notes="OLMo-2's block, sliding-window layers with their own rotary table",
)
