"""Path patching from a sender head to receiver heads' queries, keys or values, every other component frozen.

The sender's clean-minus-corrupted write (`z @ W_O` of that head) is added to each receiver head's own copy of the
residual stream before its q/k/v projection, at every position; every other reader sees the corrupted run. This is
the edge intervention of Wang et al. 2022 as used for circuit discovery by Prakash et al. 2024 (reference section
5.2), and it equals TransformerLens's `get_act_patch_direct_path`. Deviation from Prakash et al.: MLPs are frozen
too (their code lets MLPs recompute), and the sender is patched at every position, not one.
Each receiver is one variant of an exact q/k/v head patch, so the engine's batching and prefix reuse apply.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from patching.engine import Patcher
from patching.metrics import Metric
from patching.sites import get_site


@torch.no_grad()
def path_patch(model: object, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
               metric: Metric | Callable[[Tensor], Tensor], component: Literal["q", "k", "v"] = "q",
               senders: Sequence[tuple[int, int]] | None = None, source: object | None = None, noising: bool = False,
               max_memory: int | None = None) -> Float[Tensor, "sender_layer sender_head layer head"]:
    """Metric with the path sender -> receiver's `component` patched; `[sl, sh, l, h]`, NaN where l <= sl.

    `senders` limits the (layer, head) senders swept (default all); others stay NaN."""
    patcher = Patcher(model, clean_tokens, corrupted_tokens, metric, [component, "z"], source, noising, max_memory)
    cfg = patcher.nt.cfg
    if cfg.post_norms:
        raise InterpError("path patching adds a sender head's z @ W_O to the residual stream, but this family "
                          "normalises the attention output before adding it", fix="use activation patching instead")
    if component != "q" and cfg.n_kv_heads != cfg.n_heads:
        raise InterpError(f"path patching into {component} is undefined with grouped key/value heads",
                          fix='use component="q" on this model')
    site = get_site(component)
    n_pos = patcher.base.acts["blocks.0.hook_resid_pre"].shape[1]
    L, H = cfg.n_layers, cfg.n_heads
    out = torch.full((L, H, L, H), float("nan"))
    for s_layer, s_head in senders if senders is not None else [(l, h) for l in range(L) for h in range(H)]:
        z_name = f"blocks.{s_layer}.attn.hook_z"
        W_O = patcher.nt.blocks[s_layer].attn.W_O[s_head]
        delta = (patcher.donor.acts[z_name][:, :, s_head] - patcher.base.acts[z_name][:, :, s_head]) @ W_O
        for r_layer in range(s_layer + 1, L):
            resid = patcher.base.acts[f"blocks.{r_layer}.hook_resid_pre"] + delta
            donor = patcher.nt.blocks[r_layer].qkv(resid[None])["qkv".index(component)][0]
            values, _, _ = patcher.sweep_layer(site, r_layer, n_pos, H, donor_act=donor)
            out[s_layer, s_head, r_layer] = values
    return out
