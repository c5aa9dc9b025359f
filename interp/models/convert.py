"""Hugging Face causal LM -> `NativeTransformer`, through the family's spec (`interp.models.arch`); a PEFT adapter
directory is read as its base with the adapter merged in by peft.

The spec names which Hugging Face tensor fills each native weight; `load_weights` refuses a missing, extra or
differently shaped one, so a layout mistake fails loudly instead of reshaping silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from interp.errors import InterpError
from interp.loading import DeviceMap
from interp.models.arch import native_model_types, spec_for
from interp.models.arch.spec import load_weights
from interp.models.native import NativeTransformer


def load_hf_causal_lm(path: str | Path, dtype: torch.dtype | None = None, device_map: DeviceMap | None = None,
                      offload_folder: str | Path | None = None) -> nn.Module:
    """Load a local checkpoint directory with eager attention (the exact reference implementation); an adapter
    directory as its base with the adapter merged (`merge_adapter`). `device_map` (checked by `interp.load`) has
    accelerate place the modules across devices (`offload_folder` holds those put on "disk").

    Refuses weights that do not match config.json exactly (never a random init) and non-finite weights."""
    from transformers import AutoModelForCausalLM

    from interp.loading import (base_of, check_finite_tensors, check_loading_info, is_adapter, quiet_transformers,
                                verify_checkpoint)

    root = verify_checkpoint(path)
    if is_adapter(root):
        if device_map is not None:
            raise InterpError(f"{root} is an adapter; peft cannot merge it into a model spread by device_map",
                              fix="merge it once (peft's `merge_and_unload`, then `save_pretrained`) and load that "
                                  "directory with device_map")
        return merge_adapter(root, load_hf_causal_lm(base_of(root), dtype))
    if isinstance(device_map, dict):
        check_map_covers(root, device_map)
    placement = {} if device_map is None else {"device_map": device_map, "offload_folder": offload_folder}
    with quiet_transformers():
        model, info = AutoModelForCausalLM.from_pretrained(
            str(root), attn_implementation="eager", dtype=dtype or torch.float32, local_files_only=True,
            output_loading_info=True, **placement,
        )
    check_loading_info(root, info)
    check_finite_tensors(root, placed_tensors(model))
    return model.eval()


def check_map_covers(root: Path, device_map: dict[str, object]) -> None:
    """Refuse a device map naming a module the model lacks, or leaving a weight unplaced (transformers would
    silently ignore either); checked on the meta device, before any weights load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from interp.loading import quiet_transformers

    with torch.device("meta"), quiet_transformers():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(root), local_files_only=True))
    modules = dict(model.named_modules())
    unknown = sorted(set(device_map) - set(modules))
    if unknown:
        top = ", ".join(name for name, _ in model.named_children())
        raise InterpError(f"device_map names {unknown[0]!r}, which is no module of {root}",
                          fix=f"use module names of the model (top level: {top}; or '' for all of it)")
    unplaced = [name for name, _ in model.named_parameters(remove_duplicate=False)
                if not any(name.startswith(f"{key}.") or not key for key in device_map)]
    if unplaced:
        raise InterpError(f"device_map places no module holding {unplaced[0]} ({len(unplaced)} weight(s) unplaced)",
                          fix="add an entry for it (or for a module containing it) to device_map")


def placed_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer by name, those offloaded by accelerate materialised one module at a time."""
    from accelerate.utils import align_module_device

    for prefix, module in model.named_modules():
        with align_module_device(module):
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                yield f"{prefix}.{name}" if prefix else name, tensor


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
