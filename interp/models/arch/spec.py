"""`ArchSpec`: everything interp knows about one Hugging Face architecture family, in one declarative record.

A family file (`interp/models/arch/<family>.py`) builds one `ArchSpec`: the `model_type`s it covers, how a Hugging
Face config becomes a `NativeConfig`, which Hugging Face tensor fills each native weight (`weights`: every native
parameter exactly once, shapes checked exactly by `load_weights`), where the nnsight backend finds each hook
(`sites`), which matrices the gradient analysis reads (`gradients`) and the tiny random config its tests build.
Shared pieces of the common layouts (Llama-style blocks, GPT-style fused q/k/v) live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Literal, Sequence

import einops
import torch
from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel

from interp.errors import InterpError
from interp.models.backends.nnsight_sites import WHOLE, ModuleSite, Table, View, attention_rows
from interp.models.native import NativeConfig, NativeTransformer

Weights = dict[str, Tensor]  # native parameter name -> Hugging Face tensor (any layout that reshapes to it exactly)


def _whole(grad: Tensor) -> Tensor:
    return grad[None]


@dataclass(frozen=True)
class Matrix:
    """A weight matrix inside each layer (dotted module path) and how its gradient [b, out, in] splits into the named
    projections ([len(names), b, out', in])."""

    module: str
    names: tuple[str, ...]
    split: Callable[[Tensor], Sequence[Tensor]] = _whole


@dataclass(frozen=True)
class Layout:
    """Where an architecture keeps its layers and which matrices hold which projections (for the gradient analysis)."""

    layers: nn.ModuleList
    attention: tuple[Matrix, ...]
    mlp: tuple[Matrix, ...]

    def matrices(self, include_mlp: bool) -> tuple[Matrix, ...]:
        return self.attention + (self.mlp if include_mlp else ())

    def projections(self, include_mlp: bool) -> tuple[str, ...]:
        return tuple(name for matrix in self.matrices(include_mlp) for name in matrix.names)


@dataclass(frozen=True)
class ArchSpec:
    """One architecture family: what every part of interp needs to open its checkpoints natively."""

    family: str  # file name under interp/models/arch/
    label: str  # for docs and errors, e.g. "OLMo-2"
    model_types: tuple[str, ...]  # Hugging Face `model_type`s covered
    config: Callable[[PreTrainedConfig, torch.dtype], NativeConfig]
    weights: Callable[[PreTrainedModel, NativeConfig], Weights]
    rotary: Callable[[PreTrainedModel], nn.Module | None]  # the HF rotary module (None: learned positions)
    sites: Callable[[PreTrainedConfig], Table]  # nnsight: where each hook lives in the HF module tree
    gradients: Callable[[PreTrainedModel], Layout]
    tiny: tuple[str, dict[str, Any]]  # transformers config class name and the tiny test model's settings
    norm_center: float = 1.0  # random norm weights in tests are drawn around this (0 where norms scale by 1 + w)
    notes: str = ""  # mechanisms, for the docs table
    # hook names (block-relative like "ln1.hook_normalized", or global) the TransformerLens bridge cannot serve with
    # the native model's meaning (read and edit): the transformer_lens backend leaves them out for this family
    bridge_missing: tuple[str, ...] = ()


def load_weights(model: NativeTransformer, tensors: Weights, source: str) -> NativeTransformer:
    """Copy `tensors` into `model`, refusing any native parameter left unfilled, any extra tensor and any shape that
    differs from the native one (after dropping nothing: only an exact element-count-preserving view is allowed)."""
    params = dict(model.named_parameters())
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        raise InterpError(f"{source}: conversion to the native model left {missing[:3]} unfilled and {extra[:3]} "
                          "unused", fix="this is a bug in the family's spec (interp/models/arch); report it")
    with torch.no_grad():
        for name, value in tensors.items():
            param = params[name]
            if tuple(value.shape) != tuple(param.shape):
                raise InterpError(f"{source}: weight for {name} has shape {tuple(value.shape)}, the native model needs "
                                  f"{tuple(param.shape)}", fix="the checkpoint's config.json does not describe its "
                                                               "weights; re-save it with `model.save_pretrained(dir)`")
            param.copy_(value.to(param.dtype))
    return model


# --- shared layout helpers ---------------------------------------------------------------------------------------
def heads_in(w: Tensor, n: int) -> Tensor:
    """nn.Linear weight [n*d_head, d_model] -> TransformerLens [n, d_model, d_head]."""
    return einops.rearrange(w, "(h e) d -> h d e", h=n)


def heads_out(w: Tensor, n: int) -> Tensor:
    """nn.Linear weight [d_model, n*d_head] -> TransformerLens W_O [n, d_head, d_model]."""
    return einops.rearrange(w, "d (h e) -> h e d", h=n)


def head_bias(b: Tensor | None, n: int, d_head: int) -> Tensor:
    return torch.zeros(n, d_head) if b is None else einops.rearrange(b, "(h e) -> h e", h=n)


def bias(b: Tensor | None, size: int) -> Tensor:
    return torch.zeros(size) if b is None else b


def norm(name: str, module: nn.Module | None, size: int) -> Weights:
    """A norm's weight (and bias); a module without parameters (OLMo's) is the identity scale."""
    weight = getattr(module, "weight", None)
    out = {f"{name}.w": torch.ones(size) if weight is None else weight}
    if getattr(module, "bias", None) is not None or (module is not None and "LayerNorm" in type(module).__name__):
        out[f"{name}.b"] = torch.zeros(size) if getattr(module, "bias", None) is None else module.bias
    return out


def rotary_config(c: PreTrainedConfig, dtype: torch.dtype, *, architecture: str, d_head: int, **mechanisms: Any
                  ) -> NativeConfig:
    """The `NativeConfig` of a Llama-style rotary model (RMSNorm, gated MLP, the config's sliding windows) with the
    family's `mechanisms`."""
    n_layers = c.num_hidden_layers
    scale = mechanisms.pop("attn_scale", math.sqrt(d_head))
    rotary_dim = int(d_head * (getattr(c, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0))
    defaults = dict(
        architecture=architecture, model_type=c.model_type, n_layers=n_layers, d_model=c.hidden_size,
        n_heads=c.num_attention_heads, n_kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        d_head=d_head, d_mlp=c.intermediate_size, d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings,
        norm="rmsnorm", norm_eps=getattr(c, "rms_norm_eps", 1e-6),
        act=getattr(c, "hidden_act", None) or c.hidden_activation, gated_mlp=True, parallel_attn_mlp=False,
        positional="rotary", rotary_dim=rotary_dim, embed_scale=1.0, attn_scales=(scale,) * n_layers,
        windows=layer_windows(c),
    )
    return NativeConfig(**{**defaults, **mechanisms})


def head_dim(c: PreTrainedConfig) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def layer_windows(c: PreTrainedConfig) -> tuple[int | None, ...]:
    """Per layer: the sliding window where `config.layer_types` says "sliding_attention"; a config with a window but
    no layer types (Mistral, Phi-3) applies it to every layer, as Hugging Face does; () when there is none."""
    window = getattr(c, "sliding_window", None)
    if not window:
        return ()
    types = getattr(c, "layer_types", None) or ["sliding_attention"] * c.num_hidden_layers
    windows = tuple(window if t == "sliding_attention" else None for t in types)
    return windows if any(windows) else ()


def llama_weights(hf: PreTrainedModel, cfg: NativeConfig, norms: dict[str, str]) -> Weights:
    """Embedding, Llama-style blocks (`self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`), final norm, unembedding.

    `norms` maps native norm names (ln1, ln2, ln1_post, ln2_post, q_norm, k_norm) to the HF module names in a layer."""
    base = hf.model
    out: Weights = {"W_E": base.embed_tokens.weight}
    for layer, block in enumerate(base.layers):
        p, sa, mlp = f"blocks.{layer}", block.self_attn, block.mlp
        for native, hf_name in norms.items():
            if native in ("q_norm", "k_norm"):
                module = getattr(sa, hf_name)
                out.update(norm(f"{p}.attn.{native}", module, module.weight.shape[0]))
            else:
                out.update(norm(f"{p}.{native}", getattr(block, hf_name), cfg.d_model))
        qkv = sa.qkv_proj if hasattr(sa, "qkv_proj") else (sa.q_proj, sa.k_proj, sa.v_proj)
        out.update(attention_weights(p, cfg, qkv, sa.o_proj))
        if hasattr(mlp, "gate_up_proj"):
            gate, up = mlp.gate_up_proj.weight.chunk(2, dim=0)
            up_bias = None
        else:
            gate, up, up_bias = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.up_proj.bias
        out.update({f"{p}.mlp.W_gate": gate.T, f"{p}.mlp.W_in": up.T, f"{p}.mlp.b_in": bias(up_bias, cfg.d_mlp),
                    f"{p}.mlp.W_out": mlp.down_proj.weight.T,
                    f"{p}.mlp.b_out": bias(mlp.down_proj.bias, cfg.d_model)})
    out.update(norm("ln_final", base.norm, cfg.d_model))
    out.update(unembed(hf, cfg))
    return out


def attention_weights(prefix: str, cfg: NativeConfig, qkv: tuple[nn.Linear, nn.Linear, nn.Linear] | nn.Linear,
                      o_proj: nn.Linear) -> Weights:
    """q/k/v/o of separate `nn.Linear`s, or of one fused `[q | k | v]` projection (Phi-3's `qkv_proj`)."""
    h, kv, e = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    if isinstance(qkv, nn.Linear):
        sizes = (h * e, kv * e, kv * e)
        weights = qkv.weight.split(sizes, dim=0)
        biases = qkv.bias.split(sizes) if qkv.bias is not None else (None,) * 3
    else:
        weights, biases = tuple(m.weight for m in qkv), tuple(m.bias for m in qkv)
    out: Weights = {}
    for name, w, b, n in zip("QKV", weights, biases, (h, kv, kv)):
        out[f"{prefix}.attn.W_{name}"] = heads_in(w, n)
        out[f"{prefix}.attn.b_{name}"] = head_bias(b, n, e)
    out[f"{prefix}.attn.W_O"] = heads_out(o_proj.weight, h)
    out[f"{prefix}.attn.b_O"] = bias(o_proj.bias, cfg.d_model)
    return out


def unembed(hf: PreTrainedModel, cfg: NativeConfig) -> Weights:
    head = hf.get_output_embeddings()
    return {"W_U": head.weight.T, "b_U": bias(head.bias, cfg.d_vocab)}


def llama_rotary(hf: PreTrainedModel) -> nn.Module:
    return hf.model.rotary_emb


NormKind = Literal["rms", "rms1p", "rmsf", "weightless"]


def norm_site(module: str, kind: NormKind) -> ModuleSite:
    """Where a norm's `hook_normalized` lives: its input, normalised by the backend (and its output rebuilt from an
    edit); a norm without weights (OLMo's LayerNorm) outputs the normalised input itself."""
    return ModuleSite(module, "output") if kind == "weightless" else ModuleSite(module, "input", norm=kind)


def llama_sites(norm_kind: NormKind, *, post_norms: bool = False, pre_norms: bool = True, fused: bool = False
                ) -> Callable[[PreTrainedConfig], Table]:
    """The nnsight site table of a Llama-style decoder (`model.layers.{l}.self_attn` / `.mlp`) with the family's norms
    around attention and MLP (`post_norms`: Gemma-2/3 and OLMo-2) and `fused` for Phi-3's `qkv_proj` and
    `gate_up_proj`. QK-norm has no hook point (q and k are hooked at the projections' outputs, as TransformerLens).

    `hook_resid_mid` is the decoder layer's `hidden_states = residual + hidden_states` after attention, which nnsight's
    `.source` numbers by the assignments to `hidden_states` before it: one per norm on the way (ln1, ln1_post)."""
    mid = f"hidden_states_{int(pre_norms) + int(post_norms)}"

    def table(c: PreTrainedConfig) -> Table:
        layer, attn, mlp = "model.layers.{l}", "model.layers.{l}.self_attn", "model.layers.{l}.mlp"
        e, d_mlp = head_dim(c), c.intermediate_size
        h, kv = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        clamped = getattr(c, "clip_qkv", None) is not None  # OLMo clamps q/k/v in place after the projections
        if fused:
            block = attention_rows(layer, attn, {"qkv": ModuleSite(f"{attn}.qkv_proj", "output")}, (h * e, kv * e, kv * e),
                                   "o_proj", clamped)
        else:
            block = attention_rows(layer, attn, {x: ModuleSite(f"{attn}.{x}_proj", "output") for x in "qkv"}, "", "o_proj",
                                   clamped)
        if pre_norms:
            block.insert(1, ("ln1.hook_normalized", norm_site(f"{layer}.input_layernorm", norm_kind), WHOLE))
        if post_norms:  # what is added to the residual stream is the post-norm's output
            at = [row[0] for row in block].index("hook_attn_out")
            block[at:at + 1] = [
                ("ln1_post.hook_normalized", norm_site(f"{layer}.post_attention_layernorm", norm_kind), WHOLE),
                ("hook_attn_out", ModuleSite(f"{layer}.post_attention_layernorm", "output"), WHOLE)]
        ln2 = "pre_feedforward_layernorm" if post_norms else "post_attention_layernorm"
        gate_up = (ModuleSite(f"{mlp}.gate_up_proj", "output"), View(sizes=(d_mlp, d_mlp), part=0),
                   View(sizes=(d_mlp, d_mlp), part=1)) if fused else None
        block += [
            ("hook_resid_mid", ModuleSite(layer, "output", (mid,)), WHOLE),
            *([("ln2.hook_normalized", norm_site(f"{layer}.{ln2}", norm_kind), WHOLE)] if pre_norms else []),
            ("mlp.hook_pre", *(gate_up[:2] if gate_up else (ModuleSite(f"{mlp}.gate_proj", "output"), WHOLE))),
            ("mlp.hook_pre_linear", *((gate_up[0], gate_up[2]) if gate_up else (ModuleSite(f"{mlp}.up_proj", "output"),
                                                                                 WHOLE))),
            ("mlp.hook_post", ModuleSite(f"{mlp}.down_proj", "input"), WHOLE),
            *([("ln2_post.hook_normalized", norm_site(f"{layer}.post_feedforward_layernorm", norm_kind), WHOLE)]
              if post_norms else []),
            ("hook_mlp_out", ModuleSite(f"{layer}.post_feedforward_layernorm", "output") if post_norms else
             ModuleSite(mlp, "output"), WHOLE),
            ("hook_resid_post", ModuleSite(layer, "output"), WHOLE),
        ]
        return ([("hook_embed", ModuleSite("model.embed_tokens", "output"), WHOLE)], block,
                [("ln_final.hook_normalized", norm_site("model.norm", norm_kind), WHOLE)])

    return table


PRE_NORMS = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}
QK_NORMS = {"q_norm": "q_norm", "k_norm": "k_norm"}
# the tiny test model of a Llama-style family: 2 layers, d_model 64, 4 query heads sharing 2 key/value heads
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=128, max_position_embeddings=128)
Mechanisms = Callable[[PreTrainedConfig, torch.dtype], dict[str, Any]]


def llama_spec(family: str, label: str, architecture: str, tiny: tuple[str, dict[str, Any]], *,
               model_types: tuple[str, ...] | None = None, mechanisms: Mechanisms = lambda c, dtype: {},
               norms: dict[str, str] = PRE_NORMS, norm_kind: NormKind = "rms", post_norms: bool = False,
               pre_norms: bool = True, fused: bool = False, **fields: Any) -> ArchSpec:
    """The spec of a family laid out like Llama (`model.layers.{l}.self_attn` / `.mlp`, rotary): its HF class name,
    the `NativeConfig` switches its config turns on (`mechanisms`), which norms a block has (`norms`: native name ->
    HF module name), how the HF norm multiplies its weight (`norm_kind`, for the nnsight sites) and whether q/k/v and
    gate/up are fused projections (`fused`, Phi-3)."""

    def config(c: PreTrainedConfig, dtype: torch.dtype) -> NativeConfig:
        return rotary_config(c, dtype, architecture=architecture, d_head=head_dim(c), **mechanisms(c, dtype))

    return ArchSpec(family=family, label=label, model_types=model_types or (family,), config=config,
                    weights=partial(llama_weights, norms=norms), rotary=llama_rotary,
                    sites=llama_sites(norm_kind, post_norms=post_norms, pre_norms=pre_norms, fused=fused),
                    gradients=llama_gradients, tiny=tiny, **fields)


def llama_gradients(hf: PreTrainedModel) -> Layout:
    """q/k/v/o and gate/up/down as separate matrices (Llama, Mistral, Qwen, Gemma, OLMo); Phi-3's fused ones split."""
    first = hf.model.layers[0]
    c = hf.config
    if hasattr(first.self_attn, "qkv_proj"):
        e = head_dim(c)
        sizes = (c.num_attention_heads * e, (c.num_key_value_heads or c.num_attention_heads) * e)
        qkv = Matrix("self_attn.qkv_proj", ("q", "k", "v"), lambda g: g.split([sizes[0], sizes[1], sizes[1]], dim=1))
        attention = (qkv, Matrix("self_attn.o_proj", ("o",)))
        mlp = (Matrix("mlp.gate_up_proj", ("gate", "up"), lambda g: g.chunk(2, dim=1)),
               Matrix("mlp.down_proj", ("down",)))
        return Layout(hf.model.layers, attention, mlp)
    return Layout(hf.model.layers, tuple(Matrix(f"self_attn.{p}_proj", (p,)) for p in "qkvo"),
                  tuple(Matrix(f"mlp.{p}_proj", (p,)) for p in ("gate", "up", "down")))

