"""`NativeTransformer`: one explicit torch implementation of GPT-2, GPT-NeoX, Llama, Qwen2 and Gemma.

Weights live in TransformerLens shapes (`W_Q [head, d_model, d_head]`, `W_O [head, d_head, d_model]`, ...), every
activation passes through a hook point with its TransformerLens name, and a block can be run on its own, from any
position, against cached keys and values. That is what the patching engine (prefix reuse), TuCo (one model's block
on another's residual stream) and the induction scores need; Hugging Face modules hide all three.
Logits equal Hugging Face's eager attention to ~1e-6 in fp32 (tests/test_native.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

HookFn = Callable[[Tensor, str], "Tensor | None"]
KV = tuple[Float[Tensor, "batch kv_head key d_head"], Float[Tensor, "batch kv_head key d_head"]]


@dataclass(frozen=True)
class NativeConfig:
    """The architecture facts the forward pass depends on."""

    architecture: str
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

    @property
    def n_params_per_layer(self) -> int:
        attn = self.d_model * self.d_head * (2 * self.n_heads + 2 * self.n_kv_heads)
        return attn + self.d_model * self.d_mlp * (3 if self.gated_mlp else 2)


class HookRegistry:
    """Forward hooks by TransformerLens name, shared by a model and its blocks."""

    def __init__(self) -> None:
        self.fns: dict[str, list[HookFn]] = {}

    def __call__(self, name: str, x: Tensor) -> Tensor:
        for fn in self.fns.get(name, ()):
            out = fn(x, name)
            if out is not None:
                x = out
        return x

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


class Norm(nn.Module):
    """LayerNorm or RMSNorm (Gemma's `1 + w` is folded into `w` at conversion)."""

    def __init__(self, cfg: NativeConfig, name: str, hooks: HookRegistry) -> None:
        super().__init__()
        self.kind, self.eps, self.name, self.hooks = cfg.norm, cfg.norm_eps, name, hooks
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.norm == "layernorm" else None

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        dtype = x.dtype
        x = x.float()
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = self.hooks(f"{self.name}.hook_normalized", x.to(dtype))
        return x * self.w + self.b if self.b is not None else x * self.w


def rotate(x: Float[Tensor, "batch pos head d_head"], cos: Tensor, sin: Tensor, rotary_dim: int) -> Tensor:
    """Rotary position embedding (rotate-half convention) on the first `rotary_dim` features of each head."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    return torch.cat((rot * cos + rotated * sin, rest), dim=-1)


class Attention(nn.Module):
    """Multi-head (grouped-query) causal self-attention in TransformerLens weight shapes."""

    def __init__(self, cfg: NativeConfig, layer: int, hooks: HookRegistry) -> None:
        super().__init__()
        self.cfg, self.layer, self.hooks, self.prefix = cfg, layer, hooks, f"blocks.{layer}.attn"
        h, kv, d, dh = cfg.n_heads, cfg.n_kv_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.b_Q = nn.Parameter(torch.zeros(h, d, dh)), nn.Parameter(torch.zeros(h, dh))
        self.W_K, self.b_K = nn.Parameter(torch.zeros(kv, d, dh)), nn.Parameter(torch.zeros(kv, dh))
        self.W_V, self.b_V = nn.Parameter(torch.zeros(kv, d, dh)), nn.Parameter(torch.zeros(kv, dh))
        self.W_O, self.b_O = nn.Parameter(torch.zeros(h, dh, d)), nn.Parameter(torch.zeros(d))

    def project(self, x: Float[Tensor, "batch pos d_model"], W: Tensor, b: Tensor, name: str) -> Tensor:
        out = einops.einsum(x, W, "b p d, h d e -> b p h e") + b
        return self.hooks(f"{self.prefix}.hook_{name}", out)

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        positions: Int[Tensor, "batch pos"],
        rope: tuple[Tensor, Tensor] | None,
        past_kv: KV | None = None,
        key_mask: Int[Tensor, "batch key"] | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], KV]:
        """Attend from `x` (at absolute `positions`) to `past_kv` followed by `x` itself."""
        cfg, hook = self.cfg, self.hooks
        q = self.project(x, self.W_Q, self.b_Q, "q")
        k = self.project(x, self.W_K, self.b_K, "k")
        v = self.project(x, self.W_V, self.b_V, "v")
        if rope is not None:
            cos, sin = (t.unsqueeze(2) for t in rope)
            q = hook(f"{self.prefix}.hook_rot_q", rotate(q, cos, sin, cfg.rotary_dim))
            k = hook(f"{self.prefix}.hook_rot_k", rotate(k, cos, sin, cfg.rotary_dim))
        k, v = (einops.rearrange(t, "b p h e -> b h p e") for t in (k, v))
        if past_kv is not None:
            k = torch.cat((past_kv[0].expand(k.shape[0], -1, -1, -1), k), dim=2)
            v = torch.cat((past_kv[1].expand(v.shape[0], -1, -1, -1), v), dim=2)
        group = cfg.n_heads // cfg.n_kv_heads
        k_all = k.repeat_interleave(group, dim=1) if group > 1 else k
        v_all = v.repeat_interleave(group, dim=1) if group > 1 else v
        scores = einops.einsum(q, k_all, "b q h e, b h k e -> b h q k") / cfg.attn_scales[self.layer]
        n_past = k.shape[2] - x.shape[1]
        key_pos = torch.arange(k.shape[2], device=x.device)
        query_pos = torch.arange(n_past, k.shape[2], device=x.device)
        allowed = key_pos[None, :] <= query_pos[:, None]
        if key_mask is not None:
            # padding queries attend to themselves only, so no row is empty and no NaN reaches real tokens
            allowed = allowed & key_mask[:, None, None, :].bool() | (key_pos[None, :] == query_pos[:, None])
        scores = hook(f"{self.prefix}.hook_attn_scores", scores.masked_fill(~allowed, float("-inf")))
        pattern = hook(f"{self.prefix}.hook_pattern", torch.softmax(scores.float(), dim=-1).to(x.dtype))
        z = hook(f"{self.prefix}.hook_z", einops.einsum(pattern, v_all, "b h q k, b h k e -> b q h e"))
        out = einops.einsum(z, self.W_O, "b q h e, h e d -> b q d") + self.b_O
        return out, (k, v)


class MLP(nn.Module):
    """Feed-forward block, gated (SwiGLU/GeGLU) or plain."""

    def __init__(self, cfg: NativeConfig, layer: int, hooks: HookRegistry) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.hooks, self.prefix, self.act = hooks, f"blocks.{layer}.mlp", ACT2FN[cfg.act]
        self.W_in, self.b_in = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp)), nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_gate = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp)) if cfg.gated_mlp else None
        self.W_out, self.b_out = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.d_model)), nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.W_gate is not None:  # TransformerLens: hook_pre is the gate, hook_pre_linear the up projection
            pre = self.hooks(f"{self.prefix}.hook_pre", x @ self.W_gate)
            linear = self.hooks(f"{self.prefix}.hook_pre_linear", x @ self.W_in + self.b_in)
            post = self.act(pre) * linear
        else:
            post = self.act(self.hooks(f"{self.prefix}.hook_pre", x @ self.W_in + self.b_in))
        post = self.hooks(f"{self.prefix}.hook_post", post)
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    """One transformer block: x + attn(ln1(x)), then + mlp(ln2(.)); GPT-NeoX runs both on x in parallel."""

    def __init__(self, cfg: NativeConfig, layer: int, hooks: HookRegistry) -> None:
        super().__init__()
        self.cfg, self.hooks, self.prefix = cfg, hooks, f"blocks.{layer}"
        self.ln1, self.ln2 = Norm(cfg, f"{self.prefix}.ln1", hooks), Norm(cfg, f"{self.prefix}.ln2", hooks)
        self.attn, self.mlp = Attention(cfg, layer, hooks), MLP(cfg, layer, hooks)

    def forward(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        positions: Int[Tensor, "batch pos"],
        rope: tuple[Tensor, Tensor] | None,
        past_kv: KV | None = None,
        key_mask: Int[Tensor, "batch key"] | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], KV]:
        """The residual stream after this block, and the block's keys and values (past ones included)."""
        p, hook = self.prefix, self.hooks
        resid = hook(f"{p}.hook_resid_pre", resid)
        attn_out, kv = self.attn(self.ln1(resid), positions, rope, past_kv, key_mask)
        attn_out = hook(f"{p}.hook_attn_out", attn_out)
        if self.cfg.parallel_attn_mlp:
            mlp_out = hook(f"{p}.hook_mlp_out", self.mlp(self.ln2(resid)))
            return hook(f"{p}.hook_resid_post", resid + attn_out + mlp_out), kv
        mid = hook(f"{p}.hook_resid_mid", resid + attn_out)
        mlp_out = hook(f"{p}.hook_mlp_out", self.mlp(self.ln2(mid)))
        return hook(f"{p}.hook_resid_post", mid + mlp_out), kv


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
        self.ln_final = Norm(cfg, "ln_final", self.hook_registry)
        self.W_U = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))

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

    # --- pieces -------------------------------------------------------------------------------------------
    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach hooks `fn(activation, name) -> Tensor | None` by TransformerLens name."""
        with self.hook_registry.attached(fwd_hooks):
            yield

    def positions(self, tokens: Int[Tensor, "batch pos"], start_pos: int = 0,
                  attention_mask: Int[Tensor, "batch pos"] | None = None) -> Int[Tensor, "batch pos"]:
        """Absolute positions; with a (left-)padding mask, each row counts from its first real token."""
        if attention_mask is not None:
            return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
        pos = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)
        return einops.repeat(pos, "p -> b p", b=tokens.shape[0])

    def rope(self, x: Tensor, positions: Int[Tensor, "batch pos"]) -> tuple[Tensor, Tensor] | None:
        """(cos, sin) for these positions, or None for learned positions."""
        if self.rotary is None:
            return None
        cos, sin = self.rotary(x, positions)
        return cos.to(x.dtype), sin.to(x.dtype)

    def embed(self, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, "batch pos"]
              ) -> Float[Tensor, "batch pos d_model"]:
        """Token (and learned position) embedding: the residual stream entering block 0."""
        x = self.hook_registry("hook_embed", self.W_E[tokens] * self.cfg.embed_scale)
        if self.W_pos is not None:
            x = x + self.hook_registry("hook_pos_embed", self.W_pos[positions])
        return x

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm and unembedding."""
        return self.ln_final(resid) @ self.W_U + self.b_U

    def run_blocks(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        positions: Int[Tensor, "batch pos"],
        start_layer: int = 0,
        past_kvs: Sequence[KV | None] | None = None,
        key_mask: Int[Tensor, "batch key"] | None = None,
    ) -> tuple[Float[Tensor, "batch pos d_model"], list[KV]]:
        """Run blocks `start_layer..` on `resid`; `past_kvs[l]` holds cached keys/values of earlier positions."""
        rope = self.rope(resid, positions)
        kvs: list[KV] = []
        for layer in range(start_layer, self.cfg.n_layers):
            past = past_kvs[layer] if past_kvs is not None else None
            resid, kv = self.blocks[layer](resid, positions, rope, past, key_mask)
            kvs.append(kv)
        return resid, kvs

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
