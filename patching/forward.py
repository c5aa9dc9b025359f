"""Suffix forward passes for many patch variants at once, resuming a block at the patched activation.

Every tensor carries a leading variant axis (size V, or 1 when it is the base run's and shared). A patch at
layer l and position s leaves layers below l and positions before s untouched, so only positions s.. of layers
l.. are recomputed, attending to the base run's cached keys and values for earlier positions. In the last layer
only the keys/values of the suffix and the final position's output are computed, since the metric reads nothing
else. The math mirrors `interp.models.native` (and so Hugging Face eager attention) op for op.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from interp.models.native import NativeTransformer, rotate
from patching.sites import Entry

_ATTENTION_ENTRIES = ("resid_pre", "q", "k", "v")
_HEAD_ENTRIES = ("resid_pre", "q", "k", "v", "pattern", "z")


@dataclass
class Run:
    """A model's forward on some tokens: hooked activations, rotated keys/values per layer, final-position logits."""

    acts: dict[str, Tensor]
    kvs: list[tuple[Tensor, Tensor]]
    final_logits: Float[Tensor, "batch d_vocab"]
    rope: tuple[Tensor, Tensor] | None  # cos, sin for every position, [batch, pos, rotary_dim]


class SuffixForward:
    """Runs patched suffixes of one model against one base run."""

    def __init__(self, nt: NativeTransformer, base: Run) -> None:
        self.nt, self.cfg, self.base = nt, nt.cfg, base
        self.group = self.cfg.n_heads // self.cfg.n_kv_heads
        self.fused = [self._fuse(b.attn) for b in nt.blocks]

    @staticmethod
    def _fuse(attn: torch.nn.Module) -> tuple[Tensor, ...]:
        """Projection weights as single matrices: `[d_model, heads*d_head]` in, `[heads*d_head, d_model]` out."""
        qkv = [einops.rearrange(W, "h d e -> d (h e)") for W in (attn.W_Q, attn.W_K, attn.W_V)]
        biases = [einops.rearrange(b, "h e -> (h e)") for b in (attn.b_Q, attn.b_K, attn.b_V)]
        return (*qkv, *biases, einops.rearrange(attn.W_O, "h e d -> (h e) d"))

    def act(self, layer: int, hook: str, start: int) -> Tensor:
        """A base activation for positions `start..`, with a variant axis of size 1."""
        return self.base.acts[f"blocks.{layer}.{hook}"][:, start:][None]

    def run(self, layer: int, start: int, entry: Entry, patched: Tensor) -> Float[Tensor, "variant batch d_model"]:
        """The final position's residual stream after patching `entry` of `layer` (positions `start..`)."""
        if entry == "resid_post":
            x, first = patched, layer + 1
        else:
            x, first = self.block(layer, start, entry, patched), layer + 1
        for later in range(first, self.cfg.n_layers):
            x = self.block(later, start, "resid_pre", x)
        return x[..., -1, :]

    def block(self, layer: int, start: int, entry: Entry, patched: Tensor
              ) -> Float[Tensor, "variant batch pos d_model"]:
        """Block `layer` on positions `start..` resumed at `entry` (only the final position in the last layer)."""
        last = layer == self.cfg.n_layers - 1
        cut = (lambda t, dim: t.narrow(dim, t.shape[dim] - 1, 1)) if last else (lambda t, dim: t)
        blk = self.nt.blocks[layer]
        resid = patched if entry == "resid_pre" else self.act(layer, "hook_resid_pre", start)
        if entry in _ATTENTION_ENTRIES:
            q, k, v = (self.qkv(layer, resid) if entry == "resid_pre" else
                       [patched if entry == n else self.act(layer, f"attn.hook_{n}", start) for n in "qkv"])
            z = self.attend(layer, start, q, k, v, last)
        elif entry == "pattern":
            z = self.mix(layer, cut(patched, -2))
        elif entry == "z":
            z = cut(patched, -3)
        if entry in _HEAD_ENTRIES:
            attn_out = self.out(layer, z)
        else:
            attn_out = cut(patched if entry == "attn_out" else self.act(layer, "hook_attn_out", start), -2)
        resid = cut(resid, -2)
        if self.cfg.parallel_attn_mlp:
            if entry == "mlp_out":
                mlp_out = cut(patched, -2)
            elif entry == "resid_pre":
                mlp_out = blk.mlp(blk.ln2(resid))
            else:
                mlp_out = cut(self.act(layer, "hook_mlp_out", start), -2)
            return resid + attn_out + mlp_out
        if entry == "resid_mid":
            mid = cut(patched, -2)
        elif entry == "mlp_out":
            mid = cut(self.act(layer, "hook_resid_mid", start), -2)
        else:
            mid = resid + attn_out
        mlp_out = cut(patched, -2) if entry == "mlp_out" else blk.mlp(blk.ln2(mid))
        return mid + mlp_out

    def qkv(self, layer: int, resid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pre-rotary queries, keys and values `[V, batch, pos, head, d_head]` of a residual stream."""
        W_Q, W_K, W_V, b_Q, b_K, b_V, _ = self.fused[layer]
        x = self.nt.blocks[layer].ln1(resid)
        dh = self.cfg.d_head
        return tuple((x @ W + b).unflatten(-1, (-1, dh)) for W, b in ((W_Q, b_Q), (W_K, b_K), (W_V, b_V)))

    def out(self, layer: int, z: Float[Tensor, "variant batch pos head d_head"]) -> Tensor:
        return z.flatten(-2) @ self.fused[layer][-1] + self.nt.blocks[layer].attn.b_O

    def _rotate(self, t: Tensor, start: int) -> Tensor:
        if self.base.rope is None:
            return t
        cos, sin = (r[:, start:, None, :] for r in self.base.rope)
        return rotate(t, cos, sin, self.cfg.rotary_dim)

    def attend(self, layer: int, start: int, q: Tensor, k: Tensor, v: Tensor, last: bool
               ) -> Float[Tensor, "variant batch pos head d_head"]:
        """Causal attention of suffix queries to cached keys/values of positions < start plus the suffix's own."""
        q, k = self._rotate(q, start), self._rotate(k, start)
        if last:
            q = q[..., -1:, :, :]
        n_var = max(q.shape[0], k.shape[0], v.shape[0])
        n_q, n_new = q.shape[-3], k.shape[-3]
        q = einops.rearrange(q.expand(n_var, *q.shape[1:]), "V b n (kv g) e -> b kv (V g n) e", g=self.group)
        k, v = (einops.rearrange(t, "V b n kv e -> V b kv n e") for t in (k, v))
        k_past, v_past = (t[:, :, :start] for t in self.base.kvs[layer])
        scale = self.cfg.attn_scales[layer]
        scores_past = q @ k_past.transpose(-1, -2) / scale  # [b, kv, (V g n), start]
        q_var = einops.rearrange(q, "b kv (V g n) e -> V b kv (g n) e", V=n_var, g=self.group)
        scores_new = q_var @ k.transpose(-1, -2) / scale  # [V, b, kv, (g n), n_new]
        query_pos = torch.arange(n_new - n_q, n_new, device=q.device).repeat(self.group)
        allowed = torch.arange(n_new, device=q.device)[None, :] <= query_pos[:, None]
        scores_new = scores_new.masked_fill(~allowed, float("-inf"))
        scores_past = einops.rearrange(scores_past, "b kv (V m) s -> V b kv m s", V=n_var)
        pattern = torch.softmax(torch.cat((scores_past, scores_new), dim=-1).float(), dim=-1).to(q.dtype)
        p_past, p_new = pattern[..., :start], pattern[..., start:]
        z = einops.rearrange(p_past, "V b kv m s -> b kv (V m) s") @ v_past
        z = einops.rearrange(z, "b kv (V m) e -> V b kv m e", V=n_var) + p_new @ v
        return einops.rearrange(z, "V b kv (g n) e -> V b n (kv g) e", g=self.group)

    def mix(self, layer: int, pattern: Float[Tensor, "variant batch head q key"]) -> Tensor:
        """z from a (patched) attention pattern and the base run's values."""
        n_var = pattern.shape[0]
        p = einops.rearrange(pattern, "V b (kv g) n s -> b kv (V g n) s", g=self.group)
        z = p @ self.base.kvs[layer][1]
        return einops.rearrange(z, "b kv (V g n) e -> V b n (kv g) e", V=n_var, g=self.group)
