"""Where each TransformerLens hook name lives in a Hugging Face module tree, for the nnsight backend.

A `Site` is a module's input or output (optionally one operation inside its `forward`, reached through nnsight's
`.source`, or one element of a tuple output); a `View` turns the site's tensor into the TransformerLens-shaped
activation and back. Sites are listed per family in execution order, which nnsight requires inside a trace.

Shapes follow TransformerLens: q/k/v are taken before rotary embeddings, k/v keep their `n_kv_heads` heads (no
repetition for grouped-query attention), z is the input of the output projection, scores are scaled and masked
(masked entries hold the dtype's minimum, as in Hugging Face's eager attention), pattern is the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import einops
import torch
from torch import Tensor

from interp.errors import InterpError


@dataclass(frozen=True)
class Site:
    """A place nnsight can read and replace: `module`'s input/output, or that of `ops` inside its forward."""

    module: str  # dotted path below the nnsight root; "{l}" stands for the layer index
    port: Literal["input", "output"]
    ops: tuple[str, ...] = ()  # `.source` operation names, outermost first
    item: int | None = None  # element of a tuple-valued port
    norm: Literal["", "layer", "rms", "rms1p"] = ""  # a norm module: read its input, write its output (see below)


@dataclass(frozen=True)
class View:
    """How a hook's activation sits inside its site's tensor: whole, split into heads, or one part of fused q/k/v."""

    layout: str = ""  # einops layout of the last axis, "(h d)", "(three h d)", "(h three d)"; "" = as is;
    # "batch" = a [1, pos, d] tensor the model broadcasts over the batch (GPT-2's position embedding)
    part: int = 0  # which of q/k/v for fused layouts

    def get(self, value: Tensor, d_head: int, batch: int) -> Tensor:
        if self.layout == "batch":
            return value.expand(batch, -1, -1)
        if not self.layout:
            return value
        if "three" not in self.layout:
            return einops.rearrange(value, f"b p {self.layout} -> b p h d", d=d_head)
        return einops.rearrange(value, f"b p {self.layout} -> three b p h d", three=3, d=d_head)[self.part]

    def put(self, value: Tensor, new: Tensor) -> Tensor:
        """The site's tensor with this view's activation replaced by `new`."""
        if self.layout in ("", "batch"):
            return new
        if "three" not in self.layout:
            return einops.rearrange(new, f"b p h d -> b p {self.layout}")
        d_head = new.shape[-1]
        parts = list(einops.rearrange(value, f"b p {self.layout} -> three b p h d", three=3, d=d_head).unbind(0))
        parts[self.part] = new.to(value.dtype)
        return einops.rearrange(torch.stack(parts), f"three b p h d -> b p {self.layout}")


def normalise(x: Tensor, kind: str, eps: float) -> Tensor:
    """TransformerLens's `hook_normalized`: the norm's output before its weight and bias, computed in float32."""
    x = x.float()
    if kind == "layer":
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def apply_affine(normalised: Tensor, module: torch.nn.Module, kind: str, dtype: torch.dtype) -> Tensor:
    """The norm module's output from an (edited) normalised tensor; Gemma's RMSNorm scales by (1 + weight)."""
    out = normalised * ((1.0 + module.weight.float()) if kind == "rms1p" else module.weight)
    if kind == "layer" and module.bias is not None:
        out = out + module.bias
    return out.to(dtype)


Row = tuple[str, Site, View]
_Table = tuple[list[Row], list[Row], list[Row]]  # before the blocks, one block ("{l}" unfilled), after the blocks
WHOLE, HEADS = View(), View("(h d)")
_SOFTMAX = ("attention_interface_1", "nn_functional_softmax_0")


def _attention(layer: str, attn: str, qkv: dict[str, Site], fused: str, o_proj: str) -> list[Row]:
    """q/k/v, scores, pattern, z and attention output of one block; `fused` is the q/k/v layout of a fused proj."""
    if fused:
        qkv_views = [(f"attn.hook_{x}", qkv["qkv"], View(fused, i)) for i, x in enumerate("qkv")]
    else:
        qkv_views = [(f"attn.hook_{x}", qkv[x], HEADS) for x in "qkv"]
    return [
        ("hook_resid_pre", Site(layer, "input"), WHOLE),
        *qkv_views,
        ("attn.hook_attn_scores", Site(attn, "input", _SOFTMAX), WHOLE),
        ("attn.hook_pattern", Site(attn, "output", _SOFTMAX), WHOLE),
        ("attn.hook_z", Site(f"{attn}.{o_proj}", "input"), HEADS),
        ("hook_attn_out", Site(attn, "output", item=0), WHOLE),
    ]


def _llama_like(norm: Literal["rms", "rms1p"]) -> _Table:
    layer, attn, mlp = "model.layers.{l}", "model.layers.{l}.self_attn", "model.layers.{l}.mlp"
    qkv = {x: Site(f"{attn}.{x}_proj", "output") for x in "qkv"}
    block = _attention(layer, attn, qkv, "", "o_proj")
    block.insert(1, ("ln1.hook_normalized", Site(f"{layer}.input_layernorm", "input", norm=norm), WHOLE))
    block += [
        ("hook_resid_mid", Site(layer, "output", ("hidden_states_1",)), WHOLE),
        ("ln2.hook_normalized", Site(f"{layer}.post_attention_layernorm", "input", norm=norm), WHOLE),
        ("mlp.hook_pre", Site(f"{mlp}.gate_proj", "output"), WHOLE),
        ("mlp.hook_post", Site(f"{mlp}.down_proj", "input"), WHOLE),
        ("hook_mlp_out", Site(mlp, "output"), WHOLE),
        ("hook_resid_post", Site(layer, "output"), WHOLE),
    ]
    return ([("hook_embed", Site("model.embed_tokens", "output"), WHOLE)], block,
            [("ln_final.hook_normalized", Site("model.norm", "input", norm=norm), WHOLE)])


def _gpt2() -> _Table:
    layer, attn, mlp = "transformer.h.{l}", "transformer.h.{l}.attn", "transformer.h.{l}.mlp"
    block = _attention(layer, attn, {"qkv": Site(f"{attn}.c_attn", "output")}, "(three h d)", "c_proj")
    block.insert(1, ("ln1.hook_normalized", Site(f"{layer}.ln_1", "input", norm="layer"), WHOLE))
    block += [
        ("hook_resid_mid", Site(layer, "output", ("hidden_states_1",)), WHOLE),
        ("ln2.hook_normalized", Site(f"{layer}.ln_2", "input", norm="layer"), WHOLE),
        ("mlp.hook_pre", Site(f"{mlp}.c_fc", "output"), WHOLE),
        ("mlp.hook_post", Site(f"{mlp}.c_proj", "input"), WHOLE),
        ("hook_mlp_out", Site(mlp, "output"), WHOLE),
        ("hook_resid_post", Site(layer, "output"), WHOLE),
    ]
    return ([("hook_embed", Site("transformer.wte", "output"), WHOLE),
             ("hook_pos_embed", Site("transformer.wpe", "output"), View("batch"))], block,
            [("ln_final.hook_normalized", Site("transformer.ln_f", "input", norm="layer"), WHOLE)])


def _gpt_neox() -> _Table:
    layer, attn, mlp = "gpt_neox.layers.{l}", "gpt_neox.layers.{l}.attention", "gpt_neox.layers.{l}.mlp"
    block = _attention(layer, attn, {"qkv": Site(f"{attn}.query_key_value", "output")}, "(h three d)", "dense")
    block.insert(1, ("ln1.hook_normalized", Site(f"{layer}.input_layernorm", "input", norm="layer"), WHOLE))
    block += [
        # only reached when use_parallel_residual is False (the hook name does not exist otherwise)
        ("hook_resid_mid", Site(layer, "output", ("attn_output_1",)), WHOLE),
        ("ln2.hook_normalized", Site(f"{layer}.post_attention_layernorm", "input", norm="layer"), WHOLE),
        ("mlp.hook_pre", Site(f"{mlp}.dense_h_to_4h", "output"), WHOLE),
        ("mlp.hook_post", Site(f"{mlp}.dense_4h_to_h", "input"), WHOLE),
        ("hook_mlp_out", Site(mlp, "output"), WHOLE),
        ("hook_resid_post", Site(layer, "output"), WHOLE),
    ]
    return ([("hook_embed", Site("gpt_neox.embed_in", "output"), WHOLE)], block,
            [("ln_final.hook_normalized", Site("gpt_neox.final_layer_norm", "input", norm="layer"), WHOLE)])


_FAMILIES = {"gpt2": _gpt2, "gpt_neox": _gpt_neox, "llama": partial(_llama_like, "rms"),
             "qwen2": partial(_llama_like, "rms"), "gemma": partial(_llama_like, "rms1p")}


def site_table(model_type: str, n_layers: int) -> dict[str, tuple[int, Site, View]]:
    """Hook name -> (execution order, site with the layer filled in, view) for every hook of the model."""
    if model_type not in _FAMILIES:
        raise InterpError(f"the nnsight backend has no hook map for model_type {model_type!r}",
                          fix=f"use one of {sorted(_FAMILIES)} or backend='transformer_lens'")
    before, block, after = _FAMILIES[model_type]()
    rows = list(before)
    for layer in range(n_layers):
        rows += [(f"blocks.{layer}.{name}", replace(site, module=site.module.format(l=layer)), view)
                 for name, site, view in block]
    rows += after
    return {name: (order, site, view) for order, (name, site, view) in enumerate(rows)}
