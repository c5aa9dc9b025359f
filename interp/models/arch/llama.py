"""Llama (and Llama-2/3, TinyLlama, ...): RMSNorm, SwiGLU, rotary, grouped-query attention."""

from __future__ import annotations

from interp.models.arch.spec import TINY, llama_spec

SPEC = llama_spec("llama", "Llama", "LlamaForCausalLM", ("LlamaConfig", TINY),
                  notes="RMSNorm, SwiGLU, rotary, grouped-query attention")
