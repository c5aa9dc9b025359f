"""`HookedModel` over TransformerLens 4's `TransformerBridge` (raw Hugging Face weights, eager attention).

`.bridge` is the bridge itself, for anything TransformerLens offers beyond the shared interface
(`transformer_lens.patching`, `enable_compatibility_mode()`, ...).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.generalized_components import NormalizationBridge
from transformer_lens.utilities.multi_gpu import is_mixed_offload_gpu
from transformers import PreTrainedModel

from interp.errors import InterpError
from interp.models.arch import spec_for
from interp.models.backends.generic_sites import bridge_hook_names
from interp.models.hf import HFBackedModel
from interp.models.hooked import HookFn


def _reporting_name(fn: HookFn, name: str) -> Callable[..., Tensor | None]:
    """Adapt `fn(act, name)` to TransformerLens's `hook(act, hook=...)`, reporting OUR name, not the bridge's."""

    def hook(act: Tensor, hook: Any = None) -> Tensor | None:
        return fn(act, name)

    return hook


def check_placement(devices: Iterable[str | int]) -> None:
    """Refuse a device map (its `devices`) mixing CPU or disk with GPUs, which the bridge refuses after loading with
    a ValueError: `interp.load` asks before loading for an explicit map, the backend after it for a computed one."""
    if is_mixed_offload_gpu(devices):
        raise InterpError("the TransformerLens bridge refuses a device_map mixing CPU or disk with GPUs",
                          fix="use backend='nnsight' for that map, or put every module on GPUs (or give them room)")


class TransformerLensModel(HFBackedModel):
    """A checkpoint run through `TransformerBridge`; logits equal Hugging Face's eager forward."""

    backend = "transformer_lens"

    def __init__(self, path: Path, step: int | None, tokenizer: Any, hf_model: PreTrainedModel, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__(path, step, tokenizer, hf_model, device, dtype)
        check_placement((getattr(hf_model, "hf_device_map", None) or {}).values())
        self.bridge = TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype, hf_model=hf_model,
                                                          tokenizer=tokenizer)
        self._names: list[str] | None = None

    def hook_names(self) -> list[str]:
        """Our names for a native family; otherwise those the bridge fires with their TransformerLens 3 meaning."""
        if self._names is None:
            native = spec_for(self.config.model_type) is not None
            self._names = super().hook_names() if native else bridge_hook_names(self.bridge, self.summary.n_layers)
        return list(self._names)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits from token ids exactly as given (no BOS added, no attention mask)."""
        return self.bridge(tokens.to(self.device), return_type="logits")

    def to_activation_cache(self, cache_dict: Mapping[str, Tensor], tokens: Int[Tensor, "batch pos"]
                            ) -> ActivationCache:
        """An interp cache (`run_with_cache(tokens, names=...)`'s dict) as TransformerLens's `ActivationCache` on the
        bridge, so TransformerLens's own helpers (`accumulated_resid`, `decompose_resid`, ...) run on it.

        Every entry must be a hook of this model with `tokens`' batch and position axes. The norms' `hook_scale`
        entries that helpers with `apply_ln=True` read (`ln_final`, `blocks.{l}.ln1`/`ln2`), which interp's hook names
        do not include, are computed from the cached residual stream each norm reads (`norm_scales`).
        """
        self.resolve_names(list(cache_dict))
        for name, act in cache_dict.items():
            pos_dims = act.shape[2:4] if name.endswith(("hook_pattern", "hook_attn_scores")) else act.shape[1:2]
            if act.shape[0] != tokens.shape[0] or any(n != tokens.shape[1] for n in pos_dims):
                raise InterpError(f"cache entry {name} has shape {list(act.shape)}, not the batch and positions of "
                                  f"tokens {list(tokens.shape)}",
                                  fix="pass the tokens the cache was made from (`run_with_cache(tokens, ...)`)")
        return ActivationCache({**cache_dict, **self.norm_scales(cache_dict)}, self.bridge)

    def norm_inputs(self) -> dict[str, str]:
        """Each norm's `hook_scale` name -> the residual hook its input is: `ln_final` reads the last `resid_post`,
        `ln1` of block l its `resid_pre`, `ln2` its `resid_mid` (`resid_pre` with GPT-NeoX's parallel residual)."""
        n, mid = self.summary.n_layers, "resid_pre" if self.parallel_attn_mlp else "resid_mid"
        return {"ln_final.hook_scale": f"blocks.{n - 1}.hook_resid_post",
                **{f"blocks.{l}.ln1.hook_scale": f"blocks.{l}.hook_resid_pre" for l in range(n)},
                **{f"blocks.{l}.ln2.hook_scale": f"blocks.{l}.hook_{mid}" for l in range(n)}}

    def norm_scales(self, cache_dict: Mapping[str, Tensor]) -> dict[str, Float[Tensor, "batch pos 1"]]:
        """The `hook_scale` of every norm whose input residual `cache_dict` holds (no interp hook name is a scale),
        as the bridge's norm computes it (`_norm_scale`); a norm the bridge lacks (OLMo-2's pre-norms) is left out."""
        scales = {}
        for name, source in self.norm_inputs().items():
            norm = _submodule(self.bridge, name.removesuffix(".hook_scale"))
            if source in cache_dict and isinstance(norm, NormalizationBridge):
                scales[name] = _norm_scale(norm, cache_dict[source])
        return scales

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach hooks by our (TransformerLens 3-style) names; the bridge resolves them to its own hook points."""
        self.resolve_names([name for name, _ in fwd_hooks])
        named = [(name, _reporting_name(fn, name)) for name, fn in fwd_hooks]
        with self.bridge.hooks(fwd_hooks=_carry_resid_mid_edits(named)):
            yield


def _submodule(module: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """`module.get_submodule(path)`, or None when it has no such submodule."""
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _norm_eps(norm: NormalizationBridge) -> Any:
    """The eps the bridge's norm adds to the variance: the Hugging Face module's own (`eps`, `variance_epsilon`) on its
    native path, else (and when the module has none) the config's."""
    native = norm.use_native_layernorm_autograd or getattr(norm.config, "layer_norm_folding", False)
    own = [getattr(norm.original_component, key, None) for key in ("eps", "variance_epsilon")] if native else []
    return next((eps for eps in own if eps is not None), getattr(norm.config, "eps", 1e-05))


def _norm_scale(norm: NormalizationBridge, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos 1"]:
    """A norm's `hook_scale` from its input, as TransformerLens 4.3's `NormalizationBridge` records it: sqrt(mean of
    the squared (LayerNorm: centred) input + eps), in float32 for a lower-precision input."""
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    centred = x if norm.uses_rms_norm else x - x.mean(-1, keepdim=True)
    return (centred.pow(2).mean(-1, keepdim=True) + _norm_eps(norm)).sqrt()


class _ResidMidEdit:
    """One layer's `hook_resid_mid` before and after the user's hooks; adds the difference to the MLP output."""

    def __init__(self) -> None:
        self.original: Tensor | None = None
        self.edited: Tensor | None = None

    def record_original(self, act: Tensor, hook: Any = None) -> None:
        self.original = act

    def record_edited(self, act: Tensor, hook: Any = None) -> None:
        self.edited = act

    def add_to_mlp_out(self, act: Tensor, hook: Any = None) -> Tensor | None:
        return None if self.edited is self.original else act + (self.edited - self.original)


def _carry_resid_mid_edits(hooks: list[tuple[str, Callable]]) -> list[tuple[str, Callable]]:
    """Make an edit of `hook_resid_mid` reach the residual stream, not only the MLP input.

    The bridge aliases `blocks.{l}.hook_resid_mid` to `ln2.hook_in`, inside Hugging Face's block, whose residual
    variable keeps the unedited value. We record the value before and after the user's hooks and add the difference
    to `hook_mlp_out` (after any user hook there), so `resid_post = edited resid_mid + mlp_out` as in TransformerLens
    (exact up to float rounding of the subtraction and re-addition).
    """
    layers = sorted({name.split(".")[1] for name, _ in hooks if name.endswith(".hook_resid_mid")})
    before, after = [], []
    for layer in layers:
        edit = _ResidMidEdit()
        before.append((f"blocks.{layer}.hook_resid_mid", edit.record_original))
        after += [(f"blocks.{layer}.hook_resid_mid", edit.record_edited),
                  (f"blocks.{layer}.hook_mlp_out", edit.add_to_mlp_out)]
    return before + list(hooks) + after
