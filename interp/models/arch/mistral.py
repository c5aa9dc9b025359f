"""Mistral: Llama's layout with a sliding attention window on every layer."""

from __future__ import annotations

from interp.models.arch.spec import TINY, llama_spec

SPEC = llama_spec("mistral", "Mistral", "MistralForCausalLM", ("MistralConfig", TINY | dict(sliding_window=4)),
                  notes="sliding-window attention")
