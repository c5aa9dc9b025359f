"""`NativeTransformer` -> Hugging Face GPT-2 weights: the inverse of `interp.models.convert._gpt2`.

Clamped training runs through the native forward (its hook points can replace attention patterns) but saves
ordinary GPT-2 checkpoint directories, so every backend reads them.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor, nn

from interp.errors import InterpError
from interp.models.native import NativeTransformer


def _put(param: Tensor, value: Tensor) -> None:
    param.copy_(value.detach().to(param.dtype).reshape(param.shape))


@torch.no_grad()
def native_to_gpt2(nt: NativeTransformer, hf: nn.Module) -> nn.Module:
    """Copy `nt`'s weights into the GPT2LMHeadModel `hf` (same config) and return it."""
    if nt.cfg.architecture != "GPT2LMHeadModel" or type(hf).__name__ != "GPT2LMHeadModel":
        raise InterpError(f"can only export GPT-2 weights, got {nt.cfg.architecture} -> {type(hf).__name__}",
                          fix="train a GPT-2-configured model")
    tr = hf.transformer
    _put(tr.wte.weight, nt.W_E)
    _put(tr.wpe.weight, nt.W_pos)
    for block, layer in zip(nt.blocks, tr.h):
        a = block.attn
        _put(layer.ln_1.weight, block.ln1.w)
        _put(layer.ln_1.bias, block.ln1.b)
        _put(layer.ln_2.weight, block.ln2.w)
        _put(layer.ln_2.bias, block.ln2.b)
        _put(layer.attn.c_attn.weight, einops.rearrange(torch.stack((a.W_Q, a.W_K, a.W_V)), "i h d e -> d (i h e)"))
        _put(layer.attn.c_attn.bias, einops.rearrange(torch.stack((a.b_Q, a.b_K, a.b_V)), "i h e -> (i h e)"))
        _put(layer.attn.c_proj.weight, einops.rearrange(a.W_O, "h e d -> (h e) d"))
        _put(layer.attn.c_proj.bias, a.b_O)
        _put(layer.mlp.c_fc.weight, block.mlp.W_in)
        _put(layer.mlp.c_fc.bias, block.mlp.b_in)
        _put(layer.mlp.c_proj.weight, block.mlp.W_out)
        _put(layer.mlp.c_proj.bias, block.mlp.b_out)
    _put(tr.ln_f.weight, nt.ln_final.w)
    _put(tr.ln_f.bias, nt.ln_final.b)
    _put(hf.lm_head.weight, nt.W_U.T)
    return hf
