"""OLMo-2: norms after attention and MLP only (no pre-norms), QK-norm over all heads at once, weights multiplied in
float32. OLMo-3 (`olmo3.py`) adds sliding-window layers."""

from __future__ import annotations

from interp.models.arch.spec import QK_NORMS, TINY, llama_spec

POST_NORMS = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"} | QK_NORMS
MECHANISMS = dict(norm_upcast=True, pre_norms=False, post_norms=True, qk_norm="all")

SPEC = llama_spec("olmo2", "OLMo-2", "Olmo2ForCausalLM", ("Olmo2Config", TINY),
                  mechanisms=lambda c, dtype: MECHANISMS, norms=POST_NORMS, norm_kind="rmsf", post_norms=True,
                  pre_norms=False, notes="post-norms only, QK-norm over all heads")
