"""`NativeTransformer`: one explicit torch implementation of every native architecture family.

Weights live in TransformerLens shapes (`W_Q [head, d_model, d_head]`, `W_O [head, d_head, d_model]`, ...), every
activation passes through a hook point with its TransformerLens name, and a block can be run on its own, from any
position, against cached keys and values, on a stack of variants (a leading axis), resuming at any of its hook
points. That is what the patching engine (prefix reuse, many patched variants per forward), TuCo (one model's block
on another's residual stream) and the induction scores need; Hugging Face modules hide all of it. The mechanisms
each family uses (QK-norm, norms after attention and MLP, soft-capping, sliding windows, per-layer rotary bases) are
switched on by `NativeConfig`; `interp.models.arch` maps each Hugging Face family onto it.
Logits equal Hugging Face's eager attention to ~1e-6 in fp32 (tests/test_native.py, tests/test_arch_families.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.errors import InterpError

HookFn = Callable[[Tensor, str], "Tensor | None"]
KV = tuple[Float[Tensor, "batch kv_head key d_head"], Float[Tensor, "batch kv_head key d_head"]]  # every key so far
PastKV = tuple[Float[Tensor, "batch kv_head past d_head"], Float[Tensor, "batch kv_head past d_head"]]  # earlier keys
# a pass's own keys/values per variant, when several variants ran at once (no past: it is shared, not repeated)
VariantKV = tuple[Float[Tensor, "#variant batch kv_head pos d_head"],
                  Float[Tensor, "#variant batch kv_head pos d_head"]]
Rope = dict[str | None, tuple[Tensor, Tensor]]  # rotary type -> (cos, sin), each [batch, pos, rotary_dim]
Entry = Literal["resid_pre", "q", "k", "v", "pattern", "z", "attn_out", "resid_mid", "mlp_out"]
ENTRIES: tuple[str, ...] = ("resid_pre", "q", "k", "v", "pattern", "z", "attn_out", "resid_mid", "mlp_out")
_ATTENTION_ENTRIES = ("resid_pre", "q", "k", "v")
_HEAD_ENTRIES = ("resid_pre", "q", "k", "v", "pattern", "z")


@dataclass(frozen=True)
class NativeConfig:
    """The architecture facts the forward pass depends on (one per layer where layers differ)."""

    architecture: str  # Hugging Face class name
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    norm: Literal["layernorm", "rmsnorm"]
    norm_eps: float
    act: str  # a key of transformers.activations.ACT2FN
    gated_mlp: bool
    parallel_attn_mlp: bool
    positional: Literal["learned", "rotary"]
    rotary_dim: int
    embed_scale: float
    attn_scales: tuple[float, ...]  # one per layer: scores are divided by this
    norm_offset: float = 0.0  # Gemma: a norm scales by (offset + weight)
    norm_upcast: bool = False  # Gemma, OLMo-2: the weight multiplies in float32, then the result is cast
    pre_norms: bool = True  # ln1 before attention, ln2 before the MLP
    post_norms: bool = False  # ln1_post on the attention output, ln2_post on the MLP output (Gemma-2/3, OLMo-2)
    qk_norm: Literal["", "head", "all"] = ""  # RMSNorm of queries and keys per head (Qwen3, Gemma-3) or over all heads
    attn_softcap: float | None = None  # scores -> cap * tanh(scores / cap) (Gemma-2)
    final_softcap: float | None = None  # the same on the logits
    windows: tuple[int | None, ...] = ()  # per layer: sliding-window length (a query sees keys q - w < k <= q)
    rope_types: tuple[str | None, ...] = ()  # per layer: the rotary table it uses (Gemma-3/OLMo-3 local vs global)
    clip_qkv: float | None = None  # OLMo: q, k, v clamped to [-clip, clip]
    model_type: str = ""  # Hugging Face `model_type` (empty for hand-built models)

    def window(self, layer: int) -> int | None:
        return self.windows[layer] if self.windows else None

    def rope_type(self, layer: int) -> str | None:
        return self.rope_types[layer] if self.rope_types else None

    @property
    def n_params_per_layer(self) -> int:
        attn = self.d_model * self.d_head * (2 * self.n_heads + 2 * self.n_kv_heads)
        return attn + self.d_model * self.d_mlp * (3 if self.gated_mlp else 2)


class HookRegistry:
    """Forward hooks by TransformerLens name, shared by a model and its blocks; knows every name the model fires."""

    def __init__(self) -> None:
        self.fns: dict[str, list[HookFn]] = {}
        self.fired: list[str] | None = None  # set while `record_names` runs

    def __call__(self, name: str, x: Tensor) -> Tensor:
        if self.fired is not None:
            self.fired.append(name)
        for fn in self.fns.get(name, ()):
            out = fn(x, name)
            if out is not None:
                x = out
        return x

    def variant(self, name: str, x: Tensor) -> Tensor:
        """A hook on a tensor with a leading variant axis; hooks see (and return) it without that axis (size 1)."""
        if name not in self.fns:
            if self.fired is not None:
                self.fired.append(name)
            return x
        if x.shape[0] != 1:
            raise InterpError(f"hook {name} is attached while {x.shape[0]} variants run at once",
                              fix="run hooks on a plain forward, not inside the patching engine")
        return self(name, x[0])[None]

    def active(self, name: str) -> bool:
        return name in self.fns or self.fired is not None

    @contextmanager
    def attached(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        for name, fn in hooks:
            self.fns.setdefault(name, []).append(fn)
        try:
            yield
        finally:
            for name, fn in hooks:
                self.fns[name].remove(fn)
                if not self.fns[name]:
                    del self.fns[name]


def normalise(x: Tensor, kind: str, eps: float) -> Float[Tensor, "... d"]:
    """LayerNorm/RMSNorm without weight or bias, in float32: TransformerLens's `hook_normalized` (the one norm)."""
    x = x.float()
    if kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class Norm(nn.Module):
    """LayerNorm or RMSNorm, with the family's weight convention (`offset + w`, multiplied in float32 or not)."""

    def __init__(self, kind: str, dim: int, eps: float, name: str, hooks: HookRegistry, offset: float = 0.0,
                 upcast: bool = False, variant: bool = True) -> None:
        super().__init__()
        self.kind, self.eps, self.name, self.hooks = kind, eps, name, hooks
        self.offset, self.upcast, self.variant = offset, upcast, variant
        self.w = nn.Parameter(torch.ones(dim))
        self.b = nn.Parameter(torch.zeros(dim)) if kind == "layernorm" else None

    @property
    def plain(self) -> bool:
        """Whether the output is `normalised.to(dtype) * w (+ b)`, the layout the fused readout kernels assume."""
        return self.offset == 0.0 and not self.upcast

    def scale(self) -> Float[Tensor, "d"]:
        """The effective multiplier of the normalised input (Gemma's `1 + w`), in float32."""
        return self.w.float() + self.offset

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        dtype, name = x.dtype, f"{self.name}.hook_normalized"
        normed = normalise(x, self.kind, self.eps)
        if not self.name:  # a norm without a hook point (QK-norm)
            return _affine(normed, self, dtype)
        hook = self.hooks.variant if self.variant else self.hooks
        if self.hooks.active(name):
            normed = hook(name, normed.to(dtype))
        return _affine(normed, self, dtype)


def _affine(normed: Tensor, norm: Norm, dtype: torch.dtype) -> Tensor:
    """A norm's weight (and bias) applied to its normalised input: in float32 then cast (Gemma, OLMo-2), or in the
    model's dtype (Llama, GPT-2 and the rest)."""
    if norm.upcast:
        out = normed.float() * norm.scale()
        return (out + norm.b.float() if norm.b is not None else out).to(dtype)
    out = normed.to(dtype) * norm.w
    return out + norm.b if norm.b is not None else out


def rotate(x: Float[Tensor, "... pos head d_head"], cos: Tensor, sin: Tensor, rotary_dim: int) -> Tensor:
    """Rotary position embedding (rotate-half convention) on the first `rotary_dim` features of each head."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    return torch.cat((rot * cos + rotated * sin, rest), dim=-1)


@dataclass
class Step:
    """What the blocks of one pass share: rotary tables of the positions computed, padding, and the engine's options.

    `past[layer]` holds keys/values `[batch, kv_head, past, d_head]` of earlier positions (a cache, or the base run's
    of every position: only the first `start` are attended to). `last` computes only the final position's output
    (the patching engine's last layer, whose metric reads nothing else)."""

    rope: Rope | None
    past: Sequence[PastKV | None] | None = None
    start: int | None = None  # number of earlier positions; None = every key in `past`
    key_mask: Int[Tensor, "batch key"] | None = None  # 1 = token, 0 = padding, over past and new keys
    last: bool = False
    base: Callable[[str], Tensor] | None = field(default=None, repr=False)  # block-relative hook -> base activation

    def past_kv(self, layer: int) -> PastKV | None:
        if self.past is None or self.past[layer] is None:
            return None
        k, v = self.past[layer]
        return (k, v) if self.start is None else (k[:, :, : self.start], v[:, :, : self.start])


def _cut(t: Tensor, dim: int, last: bool) -> Tensor:
    return t.narrow(dim, t.shape[dim] - 1, 1) if last else t


class Attention(nn.Module):
    """Multi-head (grouped-query) causal self-attention in TransformerLens weight shapes, over a variant axis."""

    def __init__(self, cfg: NativeConfig, layer: int, hooks: HookRegistry) -> None:
        super().__init__()
        self.cfg, self.layer, self.hooks, self.prefix = cfg, layer, hooks, f"blocks.{layer}.attn"
        h, kv, d, dh = cfg.n_heads, cfg.n_kv_heads, cfg.d_model, cfg.d_head
        self.group = h // kv
        self.W_Q, self.b_Q = nn.Parameter(torch.zeros(h, d, dh)), nn.Parameter(torch.zeros(h, dh))
        self.W_K, self.b_K = nn.Parameter(torch.zeros(kv, d, dh)), nn.Parameter(torch.zeros(kv, dh))
        self.W_V, self.b_V = nn.Parameter(torch.zeros(kv, d, dh)), nn.Parameter(torch.zeros(kv, dh))
        self.W_O, self.b_O = nn.Parameter(torch.zeros(h, dh, d)), nn.Parameter(torch.zeros(d))
        if cfg.qk_norm:
            q_dim, k_dim = (dh, dh) if cfg.qk_norm == "head" else (h * dh, kv * dh)
            norm = dict(eps=cfg.norm_eps, hooks=hooks, offset=cfg.norm_offset, upcast=cfg.norm_upcast)
            self.q_norm, self.k_norm = (Norm("rmsnorm", dim, name="", **norm) for dim in (q_dim, k_dim))
        self._fused: tuple[tuple[int, ...], tuple[Tensor, ...]] | None = None
        self.keep_fused = False

    def fused(self) -> tuple[Tensor, ...]:
        """W_Q, W_K, W_V as `[d_model, heads*d_head]`, their biases flat, W_O as `[heads*d_head, d_model]`.

        Inside `NativeTransformer.fused_weights()` they are kept until a weight changes (an in-place edit bumps a
        tensor's version); otherwise rebuilt per call, so a model holds no second copy of its attention weights."""
        params = (self.W_Q, self.W_K, self.W_V, self.b_Q, self.b_K, self.b_V, self.W_O)
        key = tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)
        if self._fused is not None and self._fused[0] == key:
            return self._fused[1]
        qkv = [einops.rearrange(W, "h d e -> d (h e)") for W in params[:3]]
        biases = [einops.rearrange(b, "h e -> (h e)") for b in params[3:6]]
        fused = (*qkv, *biases, einops.rearrange(self.W_O, "h e d -> (h e) d"))
        if self.keep_fused:
            self._fused = key, fused
        return fused

    def qkv(self, x: Float[Tensor, "variant batch pos d_model"]) -> tuple[
            Float[Tensor, "variant batch pos head d_head"], Float[Tensor, "variant batch pos kv_head d_head"],
            Float[Tensor, "variant batch pos kv_head d_head"]]:
        """Queries, keys and values: the projections' outputs (before clipping, QK-norm and rotary)."""
        W_Q, W_K, W_V, b_Q, b_K, b_V, _ = self.fused()
        out = [self.hooks.variant(f"{self.prefix}.hook_{name}", (x @ W + b).unflatten(-1, (-1, self.cfg.d_head)))
               for name, W, b in (("q", W_Q, b_Q), ("k", W_K, b_K), ("v", W_V, b_V))]
        return out[0], out[1], out[2]

    def clip(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """OLMo's clamp of q, k and v to [-clip_qkv, clip_qkv], after their hooks (Hugging Face and TransformerLens
        clamp the projections' outputs, so an edited q is clamped too); the identity for other families."""
        c = self.cfg.clip_qkv
        return (q, k, v) if c is None else (q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c))

    def position(self, q: Tensor, k: Tensor, rope: Rope | None) -> tuple[Tensor, Tensor]:
        """QK-norm (where the family has it), then rotary embedding with this layer's table."""
        if self.cfg.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        elif self.cfg.qk_norm == "all":
            q, k = (norm(t.flatten(-2)).unflatten(-1, t.shape[-2:]) for norm, t in ((self.q_norm, q), (self.k_norm, k)))
        if rope is None:
            return q, k
        cos, sin = (t[:, :, None, :] for t in rope[self.cfg.rope_type(self.layer)])
        return rotate(q, cos, sin, self.cfg.rotary_dim), rotate(k, cos, sin, self.cfg.rotary_dim)

    def allowed(self, n_past: int, n_q: int, n_new: int, key_mask: Tensor | None, device: torch.device) -> Tensor:
        """Which keys each query may attend to: causal, within the window, not padding (`[.., query, key]`)."""
        key_pos = torch.arange(n_past + n_new, device=device)
        query_pos = torch.arange(n_past + n_new - n_q, n_past + n_new, device=device)
        allowed = key_pos[None, :] <= query_pos[:, None]
        window = self.cfg.window(self.layer)
        if window is not None:
            allowed &= key_pos[None, :] > query_pos[:, None] - window
        if key_mask is not None:
            # padding queries attend to themselves only, so no row is empty and no NaN reaches real tokens
            allowed = allowed & key_mask[:, None, :].bool() | (key_pos[None, :] == query_pos[:, None])
        return allowed

    def attend(self, q: Float[Tensor, "#variant batch pos head d_head"],
               k: Float[Tensor, "#variant batch pos kv_head d_head"],
               v: Float[Tensor, "#variant batch pos kv_head d_head"],
               step: Step) -> tuple[Float[Tensor, "variant batch query head d_head"], KV | VariantKV]:
        """z of (rotated) queries attending to earlier keys/values then the new ones (`query` is `pos`, or 1 with
        `step.last`), and the keys/values of this pass: past included when k and v have one variant (the axis is
        dropped), else this pass's own, with the variant axis.

        Earlier keys are shared by every variant: the variant axis is folded into the query axis for them."""
        past = step.past_kv(self.layer)
        if step.last:
            q = q[..., -1:, :, :]
        n_var, g = max(q.shape[0], k.shape[0], v.shape[0]), self.group
        n_q, n_new, n_past = q.shape[-3], k.shape[-3], 0 if past is None else past[0].shape[2]
        q = einops.rearrange(q.expand(n_var, *q.shape[1:]), "V b n (kv g) e -> b kv (V g n) e", g=g)
        k, v = (einops.rearrange(t, "V b n kv e -> V b kv n e") for t in (k, v))
        scale, window = self.cfg.attn_scales[self.layer], self.cfg.window(self.layer)
        q_var = einops.rearrange(q, "b kv (V g n) e -> V b kv (g n) e", V=n_var, g=g)
        scores = self._cap(q_var @ k.transpose(-1, -2) / scale)  # [V, b, kv, (g n), n_new]
        allowed = self.allowed(n_past, n_q, n_new, step.key_mask, q.device)
        allowed = allowed.repeat(*([1] * (allowed.ndim - 2)), g, 1)  # query rows are (g n)
        if allowed.ndim == 3:
            allowed = allowed[:, None]  # [b, 1, (g n), key]
        mask_all = past is not None and (step.key_mask is not None or window is not None)
        if not mask_all:  # earlier keys are all visible: mask the new ones only
            scores = scores.masked_fill(~allowed[..., n_past:], float("-inf"))
        if past is not None:
            scores_past = self._cap(q @ past[0].transpose(-1, -2) / scale)  # [b, kv, (V g n), n_past]
            scores = torch.cat((einops.rearrange(scores_past, "b kv (V m) s -> V b kv m s", V=n_var), scores), dim=-1)
        if mask_all:
            scores = scores.masked_fill(~allowed, float("-inf"))
        scores = self._head_hook("hook_attn_scores", scores)
        pattern = self._head_hook("hook_pattern", torch.softmax(scores.float(), dim=-1).to(q.dtype))
        z = pattern[..., n_past:] @ v
        if past is not None:
            z_past = einops.rearrange(pattern[..., :n_past], "V b kv m s -> b kv (V m) s") @ past[1]
            z = einops.rearrange(z_past, "b kv (V m) e -> V b kv m e", V=n_var) + z
        z = einops.rearrange(z, "V b kv (g n) e -> V b n (kv g) e", g=g)
        single = k.shape[0] == v.shape[0] == 1  # a patched k or v: both keep the variant axis
        if past is not None and single:
            k, v = (torch.cat((p.expand(t.shape[1], -1, -1, -1), t[0]), dim=2) for p, t in zip(past, (k, v)))
        elif single:
            k, v = k[0], v[0]
        return z, (k, v)

    def _cap(self, scores: Tensor) -> Tensor:
        """Gemma-2's attention soft-capping, cap * tanh(scores / cap), before the mask; the identity elsewhere."""
        cap = self.cfg.attn_softcap
        return scores if cap is None else torch.tanh(scores / cap) * cap

    def _head_hook(self, hook: str, t: Float[Tensor, "variant batch kv gn key"]) -> Tensor:
        """Scores/pattern hooks see TransformerLens's `[batch, head, query, key]`."""
        name = f"{self.prefix}.{hook}"
        if not self.hooks.active(name):
            return t
        g = self.group
        flat = einops.rearrange(t, "V b kv (g n) s -> V b (kv g) n s", g=g)
        return einops.rearrange(self.hooks.variant(name, flat), "V b (kv g) n s -> V b kv (g n) s", g=g)

    def mix(self, pattern: Float[Tensor, "variant batch head query key"],
            values: Float[Tensor, "batch kv_head key d_head"]) -> Float[Tensor, "variant batch query head d_head"]:
        """z from a (patched) attention pattern and given values."""
        n_var, g = pattern.shape[0], self.group
        p = einops.rearrange(pattern, "V b (kv g) n s -> b kv (V g n) s", g=g)
        return einops.rearrange(p @ values, "b kv (V g n) e -> V b n (kv g) e", V=n_var, g=g)

    def out(self, z: Float[Tensor, "variant batch pos head d_head"]) -> Float[Tensor, "variant batch pos d_model"]:
        """The output projection of z (after the `hook_z` point)."""
        z = self.hooks.variant(f"{self.prefix}.hook_z", z)
        return z.flatten(-2) @ self.fused()[-1] + self.b_O


class MLP(nn.Module):
    """Feed-forward block, gated (SwiGLU/GeGLU) or plain."""

    def __init__(self, cfg: NativeConfig, layer: int, hooks: HookRegistry) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.hooks, self.prefix, self.act = hooks, f"blocks.{layer}.mlp", ACT2FN[cfg.act]
        self.W_in, self.b_in = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp)), nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_gate = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp)) if cfg.gated_mlp else None
        self.W_out, self.b_out = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.d_model)), nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        hook = self.hooks.variant
        if self.W_gate is not None:  # TransformerLens: hook_pre is the gate, hook_pre_linear the up projection
            pre = hook(f"{self.prefix}.hook_pre", x @ self.W_gate)
            linear = hook(f"{self.prefix}.hook_pre_linear", x @ self.W_in + self.b_in)
            post = self.act(pre) * linear
        else:
            post = self.act(hook(f"{self.prefix}.hook_pre", x @ self.W_in + self.b_in))
        post = hook(f"{self.prefix}.hook_post", post)
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    """One transformer block: x + attn(ln1(x)), then + mlp(ln2(.)); GPT-NeoX runs both on x in parallel; Gemma-2/3
    and OLMo-2 also normalise each output (ln1_post, ln2_post) before adding it (OLMo-2 without ln1/ln2)."""

    def __init__(self, cfg: NativeConfig, layer: int, hooks: HookRegistry) -> None:
        super().__init__()
        self.cfg, self.hooks, self.prefix = cfg, hooks, f"blocks.{layer}"
        norm = dict(eps=cfg.norm_eps, hooks=hooks, offset=cfg.norm_offset, upcast=cfg.norm_upcast)
        names = (["ln1", "ln2"] if cfg.pre_norms else []) + (["ln1_post", "ln2_post"] if cfg.post_norms else [])
        for name in names:
            self.add_module(name, Norm(cfg.norm, cfg.d_model, name=f"{self.prefix}.{name}", **norm))
        self.attn, self.mlp = Attention(cfg, layer, hooks), MLP(cfg, layer, hooks)

    def qkv(self, resid: Float[Tensor, "variant batch pos d_model"]) -> tuple[
            Float[Tensor, "variant batch pos head d_head"], Float[Tensor, "variant batch pos kv_head d_head"],
            Float[Tensor, "variant batch pos kv_head d_head"]]:
        """The queries, keys and values this block computes from a residual stream (the projections' outputs)."""
        return self.attn.qkv(self._norm("ln1", resid))

    def _norm(self, name: str, x: Tensor) -> Tensor:
        return getattr(self, name)(x) if hasattr(self, name) else x

    def forward(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        positions: Int[Tensor, "batch pos"],
        rope: Rope | None,
        past_kv: PastKV | None = None,
        key_mask: Int[Tensor, "batch key"] | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], KV]:
        """The residual stream after this block, and the block's keys and values (past ones included)."""
        past = [None] * self.attn.layer + [past_kv]
        out, kv = self.resume(resid[None], Step(rope, past, key_mask=key_mask))
        return out[0], kv

    def resume(self, x: Float[Tensor, "variant batch *activation"], step: Step, entry: Entry = "resid_pre"
               ) -> tuple[Float[Tensor, "variant batch query d_model"], KV | VariantKV | None]:
        """The block on positions `step.start..`, resumed at `entry` with `x` (a stack of variants of that
        activation, in its hook's shape); what lies upstream of `entry` and is still needed comes from `step.base`.
        Returns the residual stream after the block (`query` is the final position only with `step.last`) and its
        keys/values as `Attention.attend` gives them (None unless attention was recomputed)."""
        p, hook, last, attn = self.prefix, self.hooks.variant, step.last, self.attn
        base = step.base
        resid = hook(f"{p}.hook_resid_pre", x if entry == "resid_pre" else base("hook_resid_pre"))
        kv = None
        if entry in _HEAD_ENTRIES:
            if entry in _ATTENTION_ENTRIES:
                if entry == "resid_pre":
                    q, k, v = self.qkv(resid)
                else:
                    q, k, v = (x if entry == n else base(f"attn.hook_{n}") for n in "qkv")
                q, k, v = attn.clip(q, k, v)
                q, k = attn.position(q, k, step.rope)
                z, kv = attn.attend(q, k, v, step)
            elif entry == "pattern":
                z = attn.mix(_cut(x, -2, last), step.past[attn.layer][1])
            else:
                z = _cut(x, -3, last)
            attn_out = self._norm("ln1_post", attn.out(z))
        else:
            attn_out = _cut(x if entry == "attn_out" else base("hook_attn_out"), -2, last)
        attn_out = hook(f"{p}.hook_attn_out", attn_out)
        resid = _cut(resid, -2, last)
        if self.cfg.parallel_attn_mlp:
            if entry in ("resid_pre", "mlp_out"):
                mlp_out = _cut(x, -2, last) if entry == "mlp_out" else self._mlp(resid)
            else:
                mlp_out = _cut(base("hook_mlp_out"), -2, last)
            return hook(f"{p}.hook_resid_post", resid + attn_out + hook(f"{p}.hook_mlp_out", mlp_out)), kv
        if entry in ("resid_mid", "mlp_out"):
            mid = _cut(x if entry == "resid_mid" else base("hook_resid_mid"), -2, last)
        else:
            mid = resid + attn_out
        mid = hook(f"{p}.hook_resid_mid", mid)
        mlp_out = hook(f"{p}.hook_mlp_out", _cut(x, -2, last) if entry == "mlp_out" else self._mlp(mid))
        return hook(f"{p}.hook_resid_post", mid + mlp_out), kv

    def _mlp(self, x: Tensor) -> Tensor:
        return self._norm("ln2_post", self.mlp(self._norm("ln2", x)))


class NativeTransformer(nn.Module):
    """A decoder-only transformer with explicit weights and TransformerLens hook points."""

    def __init__(self, cfg: NativeConfig, rotary: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.hook_registry = HookRegistry()
        self.W_E = nn.Parameter(torch.zeros(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.zeros(cfg.n_ctx, cfg.d_model)) if cfg.positional == "learned" else None
        self.rotary = rotary  # the Hugging Face rotary module: exact for every rope scaling type
        self.blocks = nn.ModuleList(Block(cfg, layer, self.hook_registry) for layer in range(cfg.n_layers))
        self.ln_final = Norm(cfg.norm, cfg.d_model, cfg.norm_eps, "ln_final", self.hook_registry, cfg.norm_offset,
                             cfg.norm_upcast, variant=False)
        self.W_U = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        self._hook_names: list[str] | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> "NativeTransformer":
        """Load a Hugging Face checkpoint directory and convert it."""
        from interp.models.convert import load_hf_causal_lm

        return cls.from_hf(load_hf_causal_lm(path, dtype=dtype), device=device)

    @classmethod
    def from_hf(cls, hf_model: nn.Module, device: str | torch.device | None = None) -> "NativeTransformer":
        """Convert an in-memory Hugging Face causal LM (its weights are copied, not shared)."""
        from interp.models.convert import convert

        model = convert(hf_model)
        return model.to(device) if device is not None else model

    # --- hooks ------------------------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every hook name this model fires, in forward order (recorded from a one-token forward, once)."""
        if self._hook_names is None:
            registry = self.hook_registry
            attached, registry.fns, registry.fired = registry.fns, {}, []  # attached hooks do not see this forward
            try:
                with torch.no_grad():
                    self(torch.zeros(1, 1, dtype=torch.long, device=self.W_E.device))
                self._hook_names = list(dict.fromkeys(registry.fired))
            finally:
                registry.fns, registry.fired = attached, None
        return list(self._hook_names)

    def check_hook_names(self, names: Sequence[str]) -> None:
        """Refuse a name this model never fires, suggesting the closest one."""
        check_hook_names(names, self.hook_names())

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach hooks `fn(activation, name) -> Tensor | None` by TransformerLens name."""
        self.check_hook_names([name for name, _ in fwd_hooks])
        with self.hook_registry.attached(fwd_hooks):
            yield

    @contextmanager
    def fused_weights(self) -> Iterator[None]:
        """Keep each layer's fused projection matrices between forwards (the patching engine runs thousands)."""
        attns = [block.attn for block in self.blocks]
        for attn in attns:
            attn.keep_fused = True
        try:
            yield
        finally:
            for attn in attns:
                attn.keep_fused, attn._fused = False, None

    def list_hooks(self) -> dict[str, int]:
        """Hook names with functions attached now, and how many each (to see what an intervention changes)."""
        return {name: len(fns) for name, fns in self.hook_registry.fns.items()}

    # --- pieces -------------------------------------------------------------------------------------------
    def positions(self, tokens: Int[Tensor, "batch pos"], start_pos: int = 0,
                  attention_mask: Int[Tensor, "batch pos"] | None = None) -> Int[Tensor, "batch pos"]:
        """Absolute positions; with a (left-)padding mask, each row counts from its first real token."""
        if attention_mask is not None:
            return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
        pos = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)
        return einops.repeat(pos, "p -> b p", b=tokens.shape[0])

    def rope(self, x: Tensor, positions: Int[Tensor, "batch pos"]) -> Rope | None:
        """(cos, sin) per rotary table for these positions, or None for learned positions."""
        if self.rotary is None:
            return None
        tables: Rope = {}
        for kind in dict.fromkeys(self.cfg.rope_types or (None,)):
            cos, sin = self.rotary(x, positions) if kind is None else self.rotary(x, positions, kind)
            tables[kind] = (cos.to(x.dtype), sin.to(x.dtype))
        return tables

    def embed(self, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "batch pos"]
              ) -> Float[Tensor, "batch pos d_model"]:
        """Token (and learned position) embedding: the residual stream entering block 0."""
        x = self.hook_registry("hook_embed", self.W_E[tokens] * self.cfg.embed_scale)
        if self.W_pos is not None:
            x = x + self.hook_registry("hook_pos_embed", self.W_pos[positions])
        return x

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm and unembedding (and the family's final soft-capping)."""
        return self.softcap(self.ln_final(resid) @ self.W_U + self.b_U)

    def softcap(self, logits: Tensor) -> Tensor:
        """Gemma-2's final logit soft-capping, cap * tanh(logits / cap); the identity for other families."""
        cap = self.cfg.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def run_blocks(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        positions: Int[Tensor, "batch pos"],
        start_layer: int = 0,
        past_kvs: Sequence[PastKV | None] | None = None,
        key_mask: Int[Tensor, "batch key"] | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], list[KV]]:
        """Run blocks `start_layer..` on `resid`; `past_kvs[l]` holds cached keys/values of earlier positions."""
        step = Step(self.rope(resid, positions), past_kvs, key_mask=key_mask)
        x, kvs = resid[None], []
        for layer in range(start_layer, self.cfg.n_layers):
            x, kv = self.blocks[layer].resume(x, step)
            kvs.append(kv)
        return x[0], kvs

    def forward(self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None = None
                ) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits at every position; `attention_mask` (1 = token, 0 = padding) supports left padding."""
        positions = self.positions(tokens, attention_mask=attention_mask)
        resid, _ = self.run_blocks(self.embed(tokens, positions), positions, key_mask=attention_mask)
        return self.unembed(resid)

    @torch.no_grad()
    def generate(self, tokens: Int[Tensor, "batch pos"], max_new_tokens: int,
                 attention_mask: Int[Tensor, "batch pos"] | None = None,
                 eos_token_id: int | None = None) -> Int[Tensor, "batch new"]:
        """Greedy decoding with a key/value cache; hooks stay active on every step. Returns the new tokens."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(tokens)
        positions = self.positions(tokens, attention_mask=mask)
        resid, kvs = self.run_blocks(self.embed(tokens, positions), positions, key_mask=mask)
        out: list[Tensor] = []
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            nxt = self.unembed(resid[:, -1]).argmax(-1)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            out.append(nxt)
            if bool(done.all()):
                break
            mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
            positions = positions[:, -1:] + 1
            resid, kvs = self.run_blocks(self.embed(nxt[:, None], positions), positions, past_kvs=kvs, key_mask=mask)
        return torch.stack(out, dim=1)


def check_hook_names(names: Sequence[str], available: Sequence[str]) -> None:
    """Refuse hook names outside `available`, suggesting the closest valid one (every backend calls this)."""
    known = set(available)
    for name in names:
        if name not in known:
            close = get_close_matches(name, available, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"valid names look like {available[1]!r}"
            raise InterpError(f"no hook named {name!r} in this model",
                              fix=f"{hint} (`model.hook_names()` lists all {len(available)})")


__all__ = ["ENTRIES", "Block", "NativeConfig", "NativeTransformer", "Step", "check_hook_names", "normalise", "rotate"]
