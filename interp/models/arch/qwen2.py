"""Qwen2 / Qwen2.5: Llama's layout with q/k/v biases; sliding windows on the layers `layer_types` marks."""

from __future__ import annotations

from interp.models.arch.spec import TINY, llama_spec

SPEC = llama_spec("qwen2", "Qwen2 / Qwen2.5", "Qwen2ForCausalLM",
                  ("Qwen2Config", {k: v for k, v in TINY.items() if k != "head_dim"}), notes="q/k/v biases")
