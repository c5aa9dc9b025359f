"""OLMo-3: OLMo-2's block (post-norms only, QK-norm over all heads) with sliding-window layers, each layer type with
its own rotary table."""

from __future__ import annotations

from interp.models.arch.olmo2 import MECHANISMS, POST_NORMS
from interp.models.arch.spec import TINY, llama_spec

ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "default", "rope_theta": 500000.0}}
SPEC = llama_spec("olmo3", "OLMo-3", "Olmo3ForCausalLM",
                  ("Olmo3Config", TINY | dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                              rope_parameters=ROPE)),
                  mechanisms=lambda c, dtype: MECHANISMS | dict(rope_types=tuple(c.layer_types)), norms=POST_NORMS,
                  norm_kind="rmsf", post_norms=True, pre_norms=False,
                  notes="OLMo-2's block, sliding-window layers with their own rotary table")
