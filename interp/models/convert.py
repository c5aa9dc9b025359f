"""Hugging Face causal LM -> `NativeTransformer`, one function per architecture family.

Each converter reads the Hugging Face modules and writes TransformerLens-shaped tensors; nothing else in interp
knows how a given architecture lays out its weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import einops
import torch
from torch import Tensor, nn

from interp.errors import InterpError
from interp.models.native import Block, NativeConfig, NativeTransformer

SUPPORTED = ("GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM", "GemmaForCausalLM")


def load_hf_causal_lm(path: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a local checkpoint directory with eager attention (the exact reference implementation).

    Refuses weights that do not match config.json exactly (never a random init) and non-finite weights."""
    from transformers import AutoModelForCausalLM

    from interp.loading import check_finite, check_loading_info, quiet_transformers, verify_checkpoint

    root = verify_checkpoint(path)
    with quiet_transformers():
        model, info = AutoModelForCausalLM.from_pretrained(
            str(root), attn_implementation="eager", dtype=dtype or torch.float32, local_files_only=True,
            output_loading_info=True,
        )
    check_loading_info(root, info)
    check_finite(root, model)
    return model.eval()


def convert(hf: nn.Module) -> NativeTransformer:
    """Dispatch on the Hugging Face class name."""
    name = type(hf).__name__
    converters: dict[str, Callable[[nn.Module], NativeTransformer]] = {
        "GPT2LMHeadModel": _gpt2,
        "GPTNeoXForCausalLM": _gpt_neox,
        "LlamaForCausalLM": _llama_like,
        "Qwen2ForCausalLM": _llama_like,
        "GemmaForCausalLM": _llama_like,
    }
    if name not in converters:
        raise InterpError(f"architecture {name} is not supported", fix=f"use one of {', '.join(SUPPORTED)}")
    with torch.no_grad():
        model = converters[name](hf)
    dtype = next(hf.parameters()).dtype
    return model.to(dtype).eval()


def _heads(w: Tensor, n: int) -> Tensor:
    """Linear weight [n*d_head, d_model] -> [n, d_model, d_head]."""
    return einops.rearrange(w, "(h e) d -> h d e", h=n)


def _bias(linear: nn.Linear, n: int, d_head: int) -> Tensor:
    if linear.bias is None:
        return torch.zeros(n, d_head)
    return einops.rearrange(linear.bias, "(h e) -> h e", h=n)


def _set(param: nn.Parameter, value: Tensor) -> None:
    param.copy_(value.to(param.dtype).reshape(param.shape))


def _copy_norm(dst: nn.Module, src: nn.Module, offset: float = 0.0) -> None:
    _set(dst.w, src.weight.float() + offset)
    if dst.b is not None:
        _set(dst.b, src.bias)


def _copy_unembed(model: NativeTransformer, lm_head: nn.Linear) -> None:
    _set(model.W_U, lm_head.weight.T)
    if lm_head.bias is not None:
        _set(model.b_U, lm_head.bias)


def _gpt2(hf: nn.Module) -> NativeTransformer:
    c = hf.config
    d_head = c.n_embd // c.n_head
    scales = tuple(
        (math.sqrt(d_head) if c.scale_attn_weights else 1.0) * ((layer + 1) if c.scale_attn_by_inverse_layer_idx else 1)
        for layer in range(c.n_layer)
    )
    cfg = NativeConfig(
        architecture="GPT2LMHeadModel", n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, n_kv_heads=c.n_head,
        d_head=d_head, d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, norm="layernorm",
        norm_eps=c.layer_norm_epsilon, act=c.activation_function, gated_mlp=False, parallel_attn_mlp=False,
        positional="learned", rotary_dim=0, embed_scale=1.0, attn_scales=scales,
    )
    model = NativeTransformer(cfg)
    tr = hf.transformer
    _set(model.W_E, tr.wte.weight)
    _set(model.W_pos, tr.wpe.weight)
    for block, layer in zip(model.blocks, tr.h):
        _copy_norm(block.ln1, layer.ln_1)
        _copy_norm(block.ln2, layer.ln_2)
        w_qkv = einops.rearrange(layer.attn.c_attn.weight, "d (i h e) -> i h d e", i=3, h=c.n_head)
        b_qkv = einops.rearrange(layer.attn.c_attn.bias, "(i h e) -> i h e", i=3, h=c.n_head)
        a = block.attn
        for i, (W, b) in enumerate(((a.W_Q, a.b_Q), (a.W_K, a.b_K), (a.W_V, a.b_V))):
            _set(W, w_qkv[i])
            _set(b, b_qkv[i])
        _set(a.W_O, einops.rearrange(layer.attn.c_proj.weight, "(h e) d -> h e d", h=c.n_head))
        _set(a.b_O, layer.attn.c_proj.bias)
        _set(block.mlp.W_in, layer.mlp.c_fc.weight)
        _set(block.mlp.b_in, layer.mlp.c_fc.bias)
        _set(block.mlp.W_out, layer.mlp.c_proj.weight)
        _set(block.mlp.b_out, layer.mlp.c_proj.bias)
    _copy_norm(model.ln_final, tr.ln_f)
    _copy_unembed(model, hf.lm_head)
    return model


def _gpt_neox(hf: nn.Module) -> NativeTransformer:
    c = hf.config
    d_head = c.hidden_size // c.num_attention_heads
    rotary_dim = int(d_head * c.rope_parameters.get("partial_rotary_factor", 1.0))
    cfg = NativeConfig(
        architecture="GPTNeoXForCausalLM", n_layers=c.num_hidden_layers, d_model=c.hidden_size,
        n_heads=c.num_attention_heads, n_kv_heads=c.num_attention_heads, d_head=d_head, d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings, norm="layernorm", norm_eps=c.layer_norm_eps,
        act=c.hidden_act, gated_mlp=False, parallel_attn_mlp=c.use_parallel_residual, positional="rotary",
        rotary_dim=rotary_dim, embed_scale=1.0, attn_scales=(math.sqrt(d_head),) * c.num_hidden_layers,
    )
    model = NativeTransformer(cfg, rotary=hf.gpt_neox.rotary_emb)
    neox = hf.gpt_neox
    _set(model.W_E, neox.embed_in.weight)
    h = c.num_attention_heads
    for block, layer in zip(model.blocks, neox.layers):
        _copy_norm(block.ln1, layer.input_layernorm)
        _copy_norm(block.ln2, layer.post_attention_layernorm)
        qkv = layer.attention.query_key_value
        w = einops.rearrange(qkv.weight, "(h i e) d -> i h d e", h=h, i=3)
        b = einops.rearrange(qkv.bias, "(h i e) -> i h e", h=h, i=3)
        a = block.attn
        for i, (W, bias) in enumerate(((a.W_Q, a.b_Q), (a.W_K, a.b_K), (a.W_V, a.b_V))):
            _set(W, w[i])
            _set(bias, b[i])
        dense = layer.attention.dense
        _set(a.W_O, einops.rearrange(dense.weight, "d (h e) -> h e d", h=h))
        _set(a.b_O, dense.bias)
        _set(block.mlp.W_in, layer.mlp.dense_h_to_4h.weight.T)
        _set(block.mlp.b_in, layer.mlp.dense_h_to_4h.bias)
        _set(block.mlp.W_out, layer.mlp.dense_4h_to_h.weight.T)
        _set(block.mlp.b_out, layer.mlp.dense_4h_to_h.bias)
    _copy_norm(model.ln_final, neox.final_layer_norm)
    _copy_unembed(model, hf.get_output_embeddings())
    return model


def _llama_like(hf: nn.Module) -> NativeTransformer:
    """Llama, Qwen2 (q/k/v biases) and Gemma (embedding scale, RMSNorm with `1 + w`, GeGLU)."""
    c = hf.config
    arch = type(hf).__name__
    is_gemma = arch == "GemmaForCausalLM"
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    cfg = NativeConfig(
        architecture=arch, n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_heads=c.num_attention_heads,
        n_kv_heads=n_kv, d_head=d_head, d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
        n_ctx=c.max_position_embeddings, norm="rmsnorm", norm_eps=c.rms_norm_eps,
        act=c.hidden_act, gated_mlp=True,
        parallel_attn_mlp=False, positional="rotary", rotary_dim=d_head,
        embed_scale=float(torch.tensor(c.hidden_size**0.5, dtype=next(hf.parameters()).dtype)) if is_gemma else 1.0,
        attn_scales=(math.sqrt(d_head),) * c.num_hidden_layers,
    )
    base = hf.model
    model = NativeTransformer(cfg, rotary=base.rotary_emb)
    _set(model.W_E, base.embed_tokens.weight)
    offset = 1.0 if is_gemma else 0.0
    for block, layer in zip(model.blocks, base.layers):
        _copy_llama_block(block, layer, cfg, offset)
    _copy_norm(model.ln_final, base.norm, offset)
    _copy_unembed(model, hf.lm_head)
    return model


def _copy_llama_block(block: Block, layer: nn.Module, cfg: NativeConfig, norm_offset: float) -> None:
    _copy_norm(block.ln1, layer.input_layernorm, norm_offset)
    _copy_norm(block.ln2, layer.post_attention_layernorm, norm_offset)
    sa, a = layer.self_attn, block.attn
    for W, b, proj, n in ((a.W_Q, a.b_Q, sa.q_proj, cfg.n_heads), (a.W_K, a.b_K, sa.k_proj, cfg.n_kv_heads),
                          (a.W_V, a.b_V, sa.v_proj, cfg.n_kv_heads)):
        _set(W, _heads(proj.weight, n))
        _set(b, _bias(proj, n, cfg.d_head))
    _set(a.W_O, einops.rearrange(sa.o_proj.weight, "d (h e) -> h e d", h=cfg.n_heads))
    _set(a.b_O, sa.o_proj.bias if sa.o_proj.bias is not None else torch.zeros(cfg.d_model))
    mlp = layer.mlp
    _set(block.mlp.W_in, mlp.up_proj.weight.T)
    _set(block.mlp.W_gate, mlp.gate_proj.weight.T)
    _set(block.mlp.W_out, mlp.down_proj.weight.T)
    _set(block.mlp.b_in, mlp.up_proj.bias if mlp.up_proj.bias is not None else torch.zeros(cfg.d_mlp))
    _set(block.mlp.b_out, mlp.down_proj.bias if mlp.down_proj.bias is not None else torch.zeros(cfg.d_model))
