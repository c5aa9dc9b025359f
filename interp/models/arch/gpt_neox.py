"""GPT-NeoX / Pythia: parallel attention and MLP, partial rotary, fused `query_key_value` laid out per head."""

from __future__ import annotations

import math

import einops
import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.models.arch.spec import ArchSpec, Layout, Matrix, Weights, norm, unembed
from interp.models.backends.nnsight_sites import WHOLE, ModuleSite, Table, attention_rows
from interp.models.native import NativeConfig


def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
    d_head = c.hidden_size // c.num_attention_heads
    return NativeConfig(
        architecture="GPTNeoXForCausalLM", model_type=c.model_type, n_layers=c.num_hidden_layers,
        d_model=c.hidden_size, n_heads=c.num_attention_heads, n_kv_heads=c.num_attention_heads, d_head=d_head,
        d_mlp=c.intermediate_size, d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings, norm="layernorm",
        norm_eps=c.layer_norm_eps, act=c.hidden_act, gated_mlp=False, parallel_attn_mlp=c.use_parallel_residual,
        positional="rotary", rotary_dim=int(d_head * c.rope_parameters.get("partial_rotary_factor", 1.0)),
        embed_scale=1.0, attn_scales=(math.sqrt(d_head),) * c.num_hidden_layers,
    )


def weights(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    neox, h = hf.gpt_neox, cfg.n_heads
    out: Weights = {"W_E": neox.embed_in.weight}
    for layer, block in enumerate(neox.layers):
        p, attn, mlp = f"blocks.{layer}", block.attention, block.mlp
        out |= norm(f"{p}.ln1", block.input_layernorm, cfg.d_model)
        out |= norm(f"{p}.ln2", block.post_attention_layernorm, cfg.d_model)
        w = einops.rearrange(attn.query_key_value.weight, "(h i e) d -> i h d e", h=h, i=3)
        b = einops.rearrange(attn.query_key_value.bias, "(h i e) -> i h e", h=h, i=3)
        for i, x in enumerate("QKV"):
            out[f"{p}.attn.W_{x}"], out[f"{p}.attn.b_{x}"] = w[i], b[i]
        out[f"{p}.attn.W_O"] = einops.rearrange(attn.dense.weight, "d (h e) -> h e d", h=h)
        out[f"{p}.attn.b_O"] = attn.dense.bias
        out |= {f"{p}.mlp.W_in": mlp.dense_h_to_4h.weight.T, f"{p}.mlp.b_in": mlp.dense_h_to_4h.bias,
                f"{p}.mlp.W_out": mlp.dense_4h_to_h.weight.T, f"{p}.mlp.b_out": mlp.dense_4h_to_h.bias}
    return out | norm("ln_final", neox.final_layer_norm, cfg.d_model) | unembed(hf, cfg)


def sites(c: PreTrainedConfig) -> Table:
    layer, attn, mlp = "gpt_neox.layers.{l}", "gpt_neox.layers.{l}.attention", "gpt_neox.layers.{l}.mlp"
    block = attention_rows(layer, attn, {"qkv": ModuleSite(f"{attn}.query_key_value", "output")}, "(h three d)", "dense")
    block.insert(1, ("ln1.hook_normalized", ModuleSite(f"{layer}.input_layernorm", "input", norm="layernorm"), WHOLE))
    if not c.use_parallel_residual:
        block.append(("hook_resid_mid", ModuleSite(layer, "output", ("attn_output_1",)), WHOLE))
    block += [
        ("ln2.hook_normalized", ModuleSite(f"{layer}.post_attention_layernorm", "input", norm="layernorm"), WHOLE),
        ("mlp.hook_pre", ModuleSite(f"{mlp}.dense_h_to_4h", "output"), WHOLE),
        ("mlp.hook_post", ModuleSite(f"{mlp}.dense_4h_to_h", "input"), WHOLE),
        ("hook_mlp_out", ModuleSite(mlp, "output"), WHOLE),
        ("hook_resid_post", ModuleSite(layer, "output"), WHOLE),
    ]
    return ([("hook_embed", ModuleSite("gpt_neox.embed_in", "output"), WHOLE)], block,
            [("ln_final.hook_normalized", ModuleSite("gpt_neox.final_layer_norm", "input", norm="layernorm"), WHOLE)])


def gradients(hf: PreTrainedModel) -> Layout:
    """`query_key_value`'s output features are laid out [head, (q, k, v), d_head]."""
    h = hf.config.num_attention_heads
    qkv = Matrix("attention.query_key_value", ("q", "k", "v"),
                 lambda g: einops.rearrange(g, "b (h i e) d -> i b (h e) d", h=h, i=3))
    return Layout(hf.gpt_neox.layers, (qkv, Matrix("attention.dense", ("o",))),
                  (Matrix("mlp.dense_h_to_4h", ("up",)), Matrix("mlp.dense_4h_to_h", ("down",))))


SPEC = ArchSpec(
    family="gpt_neox", label="GPT-NeoX / Pythia", model_types=("gpt_neox",), config=config, weights=weights,
    rotary=lambda hf: hf.gpt_neox.rotary_emb, sites=sites, gradients=gradients,
    tiny=("GPTNeoXConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                                max_position_embeddings=128, use_parallel_residual=True,
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.25})),
    notes="parallel attention + MLP, partial rotary, fused q/k/v per head",
)
