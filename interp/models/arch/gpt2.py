"""GPT-2: learned positions, LayerNorm, fused `c_attn` (a Conv1D, weights stored [in, out])."""

from __future__ import annotations

import math

import einops
import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.spec import ArchSpec, Layout, Matrix, Weights, bias, norm, unembed
from interp.models.backends.nnsight_sites import WHOLE, ModuleSite, Table, View, attention_rows
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    d_head = c.n_embd // c.n_head
    scales = tuple(
        (math.sqrt(d_head) if c.scale_attn_weights else 1.0) * ((layer + 1) if c.scale_attn_by_inverse_layer_idx else 1)
        for layer in range(c.n_layer)
    )
    return NativeConfig(
        architecture="GPT2LMHeadModel", model_type=c.model_type, n_layers=c.n_layer, d_model=c.n_embd,
        n_heads=c.n_head, n_kv_heads=c.n_head, d_head=d_head, d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size,
        n_ctx=c.n_positions, norm="layernorm", norm_eps=c.layer_norm_epsilon, act=c.activation_function,
        gated_mlp=False, parallel_attn_mlp=False, positional="learned", rotary_dim=0, embed_scale=1.0,
        attn_scales=scales,
    )


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    tr, h = hf.transformer, cfg.n_heads
    out: Weights = {"W_E": tr.wte.weight, "W_pos": tr.wpe.weight}
    for layer, block in enumerate(tr.h):
        p, attn, mlp = f"blocks.{layer}", block.attn, block.mlp
        out |= norm(f"{p}.ln1", block.ln_1, cfg.d_model) | norm(f"{p}.ln2", block.ln_2, cfg.d_model)
        w = einops.rearrange(attn.c_attn.weight, "d (i h e) -> i h d e", i=3, h=h)
        b = einops.rearrange(attn.c_attn.bias, "(i h e) -> i h e", i=3, h=h)
        for i, x in enumerate("QKV"):
            out[f"{p}.attn.W_{x}"], out[f"{p}.attn.b_{x}"] = w[i], b[i]
        out[f"{p}.attn.W_O"] = einops.rearrange(attn.c_proj.weight, "(h e) d -> h e d", h=h)
        out[f"{p}.attn.b_O"] = attn.c_proj.bias
        out |= {f"{p}.mlp.W_in": mlp.c_fc.weight, f"{p}.mlp.b_in": mlp.c_fc.bias,
                f"{p}.mlp.W_out": mlp.c_proj.weight, f"{p}.mlp.b_out": bias(mlp.c_proj.bias, cfg.d_model)}
    return out | norm("ln_final", tr.ln_f, cfg.d_model) | unembed(hf, cfg)


def sites(c: PreTrainedConfig) -> Table:
    layer, attn, mlp = "transformer.h.{l}", "transformer.h.{l}.attn", "transformer.h.{l}.mlp"
    block = attention_rows(layer, attn, {"qkv": ModuleSite(f"{attn}.c_attn", "output")}, "(three h d)", "c_proj")
    block.insert(1, ("ln1.hook_normalized", ModuleSite(f"{layer}.ln_1", "input", norm="layernorm"), WHOLE))
    block += [
        ("hook_resid_mid", ModuleSite(layer, "output", ("hidden_states_1",)), WHOLE),
        ("ln2.hook_normalized", ModuleSite(f"{layer}.ln_2", "input", norm="layernorm"), WHOLE),
        ("mlp.hook_pre", ModuleSite(f"{mlp}.c_fc", "output"), WHOLE),
        ("mlp.hook_post", ModuleSite(f"{mlp}.c_proj", "input"), WHOLE),
        ("hook_mlp_out", ModuleSite(mlp, "output"), WHOLE),
        ("hook_resid_post", ModuleSite(layer, "output"), WHOLE),
    ]
    return ([("hook_embed", ModuleSite("transformer.wte", "output"), WHOLE),
             ("hook_pos_embed", ModuleSite("transformer.wpe", "output"), View("batch"))], block,
            [("ln_final.hook_normalized", ModuleSite("transformer.ln_f", "input", norm="layernorm"), WHOLE)])


def gradients(hf: PreTrainedModel) -> Layout:
    """`c_attn`'s output features are [q | k | v] blocks; Conv1D gradients are taken in nn.Linear's [out, in]."""
    qkv = Matrix("attn.c_attn", ("q", "k", "v"), lambda g: einops.rearrange(g, "b (i o) d -> i b o d", i=3))
    return Layout(hf.transformer.h, (qkv, Matrix("attn.c_proj", ("o",))),
                  (Matrix("mlp.c_fc", ("up",)), Matrix("mlp.c_proj", ("down",))))


SPEC = ArchSpec(
    family="gpt2", label="GPT-2", model_types=("gpt2",), config=config, weights=weights, rotary=lambda hf: None,
    sites=sites, gradients=gradients,
    tiny=("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                             attn_pdrop=0.0)),
    notes="learned positions, LayerNorm, fused q/k/v",
)
