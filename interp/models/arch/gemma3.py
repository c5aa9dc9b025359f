"""Gemma-3 (text): Gemma-2's block with QK-norm per head, local (sliding-window) and global layers, each with its
own rotary base."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedConfig

from interp.errors import InterpError
from interp.models.arch.gemma2 import SANDWICH, gemma2_mechanisms
from interp.models.arch.spec import QK_NORMS, TINY, llama_spec


def mechanisms(c: PreTrainedConfig, dtype: torch.dtype) -> dict[str, Any]:
    if getattr(c, "use_bidirectional_attention", False):
        raise InterpError("this Gemma-3 checkpoint attends bidirectionally (an embedding model), not causally",
                          fix="interp analyses causal language models; use a Gemma-3 causal LM checkpoint")
    return gemma2_mechanisms(c, dtype) | dict(qk_norm="head", rope_types=tuple(c.layer_types))


SPEC = llama_spec("gemma3", "Gemma-3 (text)", "Gemma3ForCausalLM",
                  ("Gemma3TextConfig", TINY | dict(query_pre_attn_scalar=16, sliding_window=4,
                                                   layer_types=["sliding_attention", "full_attention"])),
                  model_types=("gemma3_text",), mechanisms=mechanisms, norms=SANDWICH | QK_NORMS, norm_kind="rms1p",
                  post_norms=True, norm_center=0.0, notes="QK-norm, local/global layers with their own rotary bases")
