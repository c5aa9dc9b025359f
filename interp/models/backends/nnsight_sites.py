"""Where each TransformerLens hook name lives in a Hugging Face module tree, for the nnsight backend.

A `Site` is a module's input or output (optionally one operation inside its `forward`, reached through nnsight's
`.source`, or one element of a tuple output); a `View` turns the site's tensor into the TransformerLens-shaped
activation and back. Sites are listed per family in execution order, which nnsight requires inside a trace.

Shapes follow TransformerLens: q/k/v are the projections' outputs (before clipping, QK-norm and rotary), k/v keep
their `n_kv_heads` heads (no repetition for grouped-query attention), z is the input of the output projection, scores
are scaled and masked (masked entries hold the dtype's minimum, as in Hugging Face's eager attention), pattern is the
softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import einops
import torch
from torch import Tensor

from interp.errors import InterpError
from interp.models.native import normalise  # noqa: F401 (the nnsight backend reads it here)


@dataclass(frozen=True)
class ModuleSite:
    """A place nnsight can read and replace: `module`'s input/output, or that of `ops` inside its forward."""

    module: str  # dotted path below the nnsight root; "{l}" stands for the layer index
    port: Literal["input", "output"]
    ops: tuple[str, ...] = ()  # `.source` operation names, outermost first
    item: int | None = None  # element of a tuple-valued port
    norm: Literal["", "layernorm", "rms", "rms1p", "rmsf"] = ""  # a norm module: read its input, write its output


@dataclass(frozen=True)
class View:
    """How a hook's activation sits inside its site's tensor: whole, split into heads, one part of fused q/k/v, one
    of several parts of given widths along the last axis (`sizes`: Phi-3's fused projections), or head-major."""

    layout: str = ""  # einops layout of the last axis, "(h d)", "(three h d)", "(h three d)"; "" = as is;
    # "batch" = a [1, pos, d] tensor the model broadcasts over the batch (GPT-2's position embedding);
    # "transpose" = a [batch, head, pos, d] tensor (Gemma-3's QK-norm input)
    part: int = 0  # which of q/k/v for fused layouts, which of `sizes` otherwise
    sizes: tuple[int, ...] = ()  # widths of the fused parts along the last axis; the hook reads part `part`
    copy: bool = False  # read a copy: Hugging Face changes this tensor in place later (OLMo's q/k/v clamp_)

    def get(self, value: Tensor, d_head: int, batch: int) -> Tensor:
        """The hook's activation in TransformerLens's shape."""
        out = self._get(value, d_head, batch)
        return out.clone() if self.copy else out

    def _get(self, value: Tensor, d_head: int, batch: int) -> Tensor:
        if self.sizes:
            value = value.split(list(self.sizes), dim=-1)[self.part]
        if self.layout == "batch":
            return value.expand(batch, -1, -1)
        if self.layout == "transpose":
            return value.transpose(1, 2)
        if not self.layout:
            return value
        if "three" not in self.layout:
            return einops.rearrange(value, f"b p {self.layout} -> b p h d", d=d_head)
        return einops.rearrange(value, f"b p {self.layout} -> three b p h d", three=3, d=d_head)[self.part]

    def put(self, value: Tensor, new: Tensor) -> Tensor:
        """The site's tensor with this view's activation replaced by `new`."""
        if self.sizes:
            parts = list(value.split(list(self.sizes), dim=-1))
            inner = replace(self, sizes=(), part=0)
            parts[self.part] = inner.put(parts[self.part], new).to(value.dtype)
            return torch.cat(parts, dim=-1)
        if self.layout in ("", "batch"):
            return new
        if self.layout == "transpose":
            return new.transpose(1, 2)
        if "three" not in self.layout:
            return einops.rearrange(new, f"b p h d -> b p {self.layout}")
        d_head = new.shape[-1]
        parts = list(einops.rearrange(value, f"b p {self.layout} -> three b p h d", three=3, d=d_head).unbind(0))
        parts[self.part] = new.to(value.dtype)
        return einops.rearrange(torch.stack(parts), f"three b p h d -> b p {self.layout}")


def apply_affine(normalised: Tensor, module: torch.nn.Module, kind: str, dtype: torch.dtype) -> Tensor:
    """The norm module's output from an (edited) normalised tensor: Gemma's RMSNorm scales by (1 + weight) in
    float32 ("rms1p"), OLMo-2's multiplies its weight in float32 ("rmsf"), Llama's in the model's dtype ("rms");
    OLMo's LayerNorm has no weight at all."""
    weight = getattr(module, "weight", None)
    if weight is None:
        return normalised.to(dtype)
    if kind in ("rms1p", "rmsf"):
        return (normalised.float() * (weight.float() + (1.0 if kind == "rms1p" else 0.0))).to(dtype)
    out = normalised.to(dtype) * weight
    if kind == "layernorm" and module.bias is not None:
        out = out + module.bias
    return out.to(dtype)


Row = tuple[str, ModuleSite, View]
Table = tuple[list[Row], list[Row], list[Row]]  # before the blocks, one block ("{l}" unfilled), after the blocks
WHOLE, HEADS = View(), View("(h d)")
_SOFTMAX = ("attention_interface_1", "nn_functional_softmax_0")


def attention_rows(layer: str, attn: str, qkv: dict[str, Site], fused: str | tuple[int, int, int], o_proj: str,
                   copy: bool = False) -> list[Row]:
    """q/k/v, scores, pattern, z and attention output of one block; `fused` is the q/k/v layout of a fused
    projection (an einops layout, or the widths of its q, k and v parts); `copy`: q/k/v are read as copies (the
    model clamps them in place after the hook point)."""
    if isinstance(fused, tuple):
        qkv_views = [(f"attn.hook_{x}", qkv["qkv"], View("(h d)", i, fused, copy)) for i, x in enumerate("qkv")]
    elif fused:
        qkv_views = [(f"attn.hook_{x}", qkv["qkv"], View(fused, i, copy=copy)) for i, x in enumerate("qkv")]
    else:
        qkv_views = [(f"attn.hook_{x}", qkv[x], View("(h d)", copy=copy)) for x in "qkv"]
    return [
        ("hook_resid_pre", ModuleSite(layer, "input"), WHOLE),
        *qkv_views,
        ("attn.hook_attn_scores", ModuleSite(attn, "input", _SOFTMAX), WHOLE),
        ("attn.hook_pattern", ModuleSite(attn, "output", _SOFTMAX), WHOLE),
        ("attn.hook_z", ModuleSite(f"{attn}.{o_proj}", "input"), HEADS),
        ("hook_attn_out", ModuleSite(attn, "output", item=0), WHOLE),
    ]


def site_table(config: Any, n_layers: int) -> dict[str, tuple[int, ModuleSite, View]]:
    """Hook name -> (execution order, site with the layer filled in, view) for every hook of a native family's model."""
    from interp.models.arch import spec_for

    spec = spec_for(config.model_type)
    if spec is None:
        raise InterpError(f"the nnsight backend has no hook map for model_type {config.model_type!r}",
                          fix="use backend='transformer_lens'")
    before, block, after = spec.sites(config)
    rows = list(before)
    for layer in range(n_layers):
        rows += [(f"blocks.{layer}.{name}", replace(site, module=site.module.format(l=layer)), view)
                 for name, site, view in block]
    rows += after
    return {name: (order, site, view) for order, (name, site, view) in enumerate(rows)}
