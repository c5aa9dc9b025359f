"""OLMo (v1, Allen AI): LayerNorm without weights or bias, SwiGLU, optional clipping of q/k/v."""

from __future__ import annotations

from interp.models.arch.spec import TINY, llama_spec

SPEC = llama_spec(
    "olmo", "OLMo", "OlmoForCausalLM", ("OlmoConfig", TINY | dict(clip_qkv=0.5)),
    mechanisms=lambda c, dtype: dict(norm="layernorm", norm_eps=1e-5, clip_qkv=c.clip_qkv), norm_kind="weightless",
    notes="non-parametric LayerNorm, q/k/v clipping",
    # TransformerLens 4.3's NormalizationBridge applies a weight these norms do not have: an edit raises AttributeError
    bridge_missing=("ln1.hook_normalized", "ln2.hook_normalized", "ln_final.hook_normalized"),
)
