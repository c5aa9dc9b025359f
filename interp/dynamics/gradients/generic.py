"""The gradient analysis's projection layout for a family interp has no spec for, found by module naming conventions.

The decoder layers are the `nn.ModuleList` of `num_hidden_layers` modules; in each, the attention module (`self_attn`,
`attn`, `attention`, `self_attention`) holds separate `nn.Linear` q, k, v projections (`q_proj`, `k_proj`,
`v_proj`; `query`, `key`, `value`) and an output projection (`o_proj`, `out_proj`, `dense`, `c_proj`); the MLP
module (`mlp`, `feed_forward`, `ffn`) its gate/up/down `nn.Linear`s. A fused q/k/v projection is refused: its
split depends on a layout only a family spec knows. A mixture-of-experts MLP has no such `nn.Linear`s (its experts
are stacked 3-D parameters), so its layout has no MLP matrices and `--mlp` is refused for it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from interp.errors import InterpError
from interp.models.arch import Layout, Matrix

ATTENTION_MODULES = ("self_attn", "attn", "attention", "self_attention")
MLP_MODULES = ("mlp", "feed_forward", "ffn")
NAMES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "query"), "k": ("k_proj", "key"), "v": ("v_proj", "value"),
    "o": ("o_proj", "out_proj", "dense", "c_proj"),
    "gate": ("gate_proj", "w1"), "up": ("up_proj", "fc_in", "c_fc", "fc1", "dense_h_to_4h", "w3"),
    "down": ("down_proj", "fc_out", "fc2", "dense_4h_to_h", "w2", "c_proj"),
}
FUSED = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "qkv")
_FIX = "use a family interp implements natively (its spec knows the layout), or a model with separate projections"


def generic_layout(model: nn.Module) -> Layout:
    """q/k/v/o (and the MLP's gate/up/down where it has them) of every decoder layer, by naming convention."""
    layers = _decoder_layers(model)
    first = layers[0]
    attn = _child(first, ATTENTION_MODULES)
    if attn is None:
        raise InterpError(f"{_name(model)}: no attention module ({', '.join(ATTENTION_MODULES)}) in its decoder layers",
                          fix=_FIX)
    fused = [f for f in FUSED if isinstance(getattr(first.get_submodule(attn), f, None), nn.Linear)]
    attention = tuple(m for m in (_matrix(first, attn, p) for p in ("q", "k", "v", "o")) if m is not None)
    if fused or len(attention) < 4:
        what = f"a fused q/k/v projection ({attn}.{fused[0]})" if fused else "no separate q, k, v and o projections"
        raise InterpError(f"{_name(model)}: the gradient analysis cannot find its projections generically: {what}",
                          fix=_FIX)
    mlp = _child(first, MLP_MODULES)
    mlp_matrices = () if mlp is None else tuple(m for m in (_matrix(first, mlp, p) for p in ("gate", "up", "down"))
                                               if m is not None)
    if len(mlp_matrices) < 2 or mlp_matrices[-1].names != ("down",):
        mlp_matrices = ()  # no dense MLP of separate projections (a mixture of experts, or unrecognised names)
    return Layout(layers, attention, mlp_matrices)


def check_generic(path: str | Path, include_mlp: bool) -> None:
    """Before loading weights: the checkpoint's layout is found generically, with MLP matrices when asked for."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from interp.loading import config_dir

    config = AutoConfig.from_pretrained(str(config_dir(path)), local_files_only=True)
    with torch.device("meta"):
        lay = generic_layout(AutoModelForCausalLM.from_config(config))
    if include_mlp and not lay.mlp:
        raise InterpError(f"{path}: --mlp asks for the MLP's gate/up/down matrices, but {config.model_type!r} has no "
                          "dense MLP of separate projections (a mixture of experts keeps its experts' weights as "
                          "stacked tensors)", fix="drop --mlp (attention q/k/v/o only)")


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and _child(module[0], ATTENTION_MODULES):
            return module
    raise InterpError(f"{_name(model)}: no list of {n_layers} decoder layers with an attention module", fix=_FIX)


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Module)), None)


def _matrix(layer: nn.Module, parent: str, projection: str) -> Matrix | None:
    """The `nn.Linear` holding `projection` inside `layer.parent`, by its conventional names."""
    owner = layer.get_submodule(parent)
    for name in NAMES[projection]:
        if isinstance(getattr(owner, name, None), nn.Linear):
            return Matrix(f"{parent}.{name}", (projection,))
    return None


def _name(model: nn.Module) -> str:
    return f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')})"
