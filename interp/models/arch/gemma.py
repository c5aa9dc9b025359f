"""Gemma: Llama's layout with a scaled embedding, RMSNorm scaling by (1 + w) in float32, and GeGLU."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedConfig

from interp.models.arch.spec import TINY, llama_spec


def gemma_norms(c: PreTrainedConfig, dtype: torch.dtype) -> dict[str, Any]:
    """Every Gemma: norms scale by (1 + w) multiplied in float32, the embedding by sqrt(d_model) rounded to the
    weights' dtype (as Gemma multiplies it)."""
    return dict(norm_offset=1.0, norm_upcast=True, embed_scale=float(torch.tensor(c.hidden_size**0.5, dtype=dtype)))


SPEC = llama_spec("gemma", "Gemma", "GemmaForCausalLM",
                  ("GemmaConfig", TINY | dict(num_key_value_heads=1, head_dim=32)), mechanisms=gemma_norms,
                  norm_kind="rms1p", norm_center=0.0, notes="scaled embedding, (1 + w) RMSNorm, GeGLU")
