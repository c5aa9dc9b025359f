"""Phi-3 / Phi-4-mini: Llama's block with fused `qkv_proj` and `gate_up_proj`, partial rotary, sliding window."""

from __future__ import annotations

from interp.models.arch.spec import TINY, llama_spec

PARTIAL_ROTARY = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
SPEC = llama_spec("phi3", "Phi-3", "Phi3ForCausalLM",
                  ("Phi3Config", TINY | dict(sliding_window=4, rope_parameters=PARTIAL_ROTARY)), fused=True,
                  notes="fused q/k/v and gate/up projections, partial rotary, sliding window")
