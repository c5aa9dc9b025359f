"""Hugging Face causal LM -> `NativeTransformer`, through the family's spec (`interp.models.arch`); a PEFT adapter
directory is read as its base with the adapter merged in by peft.

The spec names which Hugging Face tensor fills each native weight; `load_weights` refuses a missing, extra or
differently shaped one, so a layout mistake fails loudly instead of reshaping silently.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from interp.errors import InterpError
from interp.models.arch import native_model_types, spec_for
from interp.models.arch.spec import load_weights
from interp.models.native import NativeTransformer


def load_hf_causal_lm(path: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a local checkpoint directory with eager attention (the exact reference implementation); an adapter
    directory as its base with the adapter merged (`merge_adapter`).

    Refuses weights that do not match config.json exactly (never a random init) and non-finite weights."""
    from transformers import AutoModelForCausalLM

    from interp.loading import (base_of, check_finite, check_loading_info, is_adapter, quiet_transformers,
                                verify_checkpoint)

    root = verify_checkpoint(path)
    if is_adapter(root):
        return merge_adapter(root, load_hf_causal_lm(base_of(root), dtype))
    with quiet_transformers():
        model, info = AutoModelForCausalLM.from_pretrained(
            str(root), attn_implementation="eager", dtype=dtype or torch.float32, local_files_only=True,
            output_loading_info=True,
        )
    check_loading_info(root, info)
    check_finite(root, model)
    return model.eval()


def merge_adapter(root: Path, base: nn.Module) -> nn.Module:
    """`base` with the PEFT adapter at `root` merged into its weights by peft (`merge_and_unload`); refuses a merge
    that is not finite."""
    from peft import PeftModel

    from interp.loading import check_finite, quiet_transformers

    with quiet_transformers():
        merged = PeftModel.from_pretrained(base, str(root)).merge_and_unload()
    check_finite(root, merged)
    return merged.eval()


def no_native_family(model_type: str | None, where: object) -> InterpError:
    """The error for a model interp cannot run natively, naming the families it can and the hook backends."""
    families = ", ".join(f"{label} ({key})" for key, label in native_model_types().items())
    return InterpError(f"{where}: model_type {model_type!r} has no native implementation (native families: "
                       f"{families})", fix="load it with backend='transformer_lens' or backend='nnsight'")


def convert(hf: nn.Module) -> NativeTransformer:
    """The native model of an in-memory Hugging Face causal LM, in its dtype (weights copied, not shared)."""
    config = hf.config
    spec = spec_for(config.model_type)
    if spec is None:
        raise no_native_family(config.model_type, type(hf).__name__)
    dtype = next(hf.parameters()).dtype
    cfg = spec.config(config, dtype)
    model = NativeTransformer(cfg, rotary=spec.rotary(hf))
    with torch.no_grad():
        load_weights(model, spec.weights(hf, cfg), f"{type(hf).__name__} ({spec.label})")
    return model.to(dtype).eval()
