"""Qwen3: Llama's layout with an RMSNorm on each query and key head (QK-norm) before rotary."""

from __future__ import annotations

from interp.models.arch.spec import PRE_NORMS, QK_NORMS, TINY, llama_spec

SPEC = llama_spec("qwen3", "Qwen3", "Qwen3ForCausalLM",
                  ("Qwen3Config", TINY | dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
                  mechanisms=lambda c, dtype: dict(qk_norm="head"), norms=PRE_NORMS | QK_NORMS,
                  notes="QK-norm per head")
