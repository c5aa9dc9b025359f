"""Steering hooks: add a direction at chosen layers and positions, or ablate it (x - (x . r) r) at every layer.

Hooks are `(TransformerLens name, fn)` pairs for `NativeTransformer.hooks` / `HookedModel.hooks`. Passing one model's
direction to the other model's hooks is forward/backward transfer (Du et al. 2025); nothing else changes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from probes.directions import unit

Hook = tuple[str, Callable[[Tensor, str], Tensor]]
RESID_SITES = ("resid_pre", "resid_mid", "resid_post")


def site_names(layers: Sequence[int], sites: Sequence[str], parallel_attn_mlp: bool = False) -> list[str]:
    """`blocks.{l}.hook_{site}` for every layer and site (no resid_mid where attention and MLP run in parallel)."""
    unknown = set(sites) - set(RESID_SITES)
    if unknown:
        raise InterpError(f"unknown residual sites {sorted(unknown)}", fix=f"use one of {RESID_SITES}")
    if parallel_attn_mlp and list(sites) == ["resid_mid"]:
        raise InterpError("resid_mid does not exist where attention and MLP run in parallel (GPT-NeoX)",
                          fix="use resid_pre or resid_post")
    return [f"blocks.{layer}.hook_{site}" for layer in layers for site in sites
            if not (parallel_attn_mlp and site == "resid_mid")]


def add_hooks(
    vector: Float[Tensor, "d_model"],
    layers: Sequence[int],
    coeff: float = 1.0,
    sites: Sequence[str] = ("resid_post",),
    positions: Sequence[int] | None = None,
    parallel_attn_mlp: bool = False,
) -> list[Hook]:
    """x += coeff * vector at each (layer, site), at `positions` (negative offsets from the end) or everywhere.

    With `positions=None` the vector is also added to every generated token (Arditi et al.'s activation addition).
    """
    index = None if positions is None else torch.tensor(list(positions))

    def add(act: Tensor, name: str) -> Tensor:
        delta = (coeff * vector).to(act.device, act.dtype)
        if index is None:
            return act + delta
        out = act.clone()
        out[:, index + act.shape[1]] += delta
        return out

    return [(name, add) for name in site_names(layers, sites, parallel_attn_mlp)]


def project_out(x: Float[Tensor, "... d_model"], direction: Float[Tensor, "d_model"]) -> Float[Tensor, "... d_model"]:
    """x - (x . r) r with r the unit direction: removes the component along `direction`."""
    r = unit(direction.float()).to(x.device)
    return (x.float() - (x.float() @ r)[..., None] * r).to(x.dtype)


def ablate_hooks(
    direction: Float[Tensor, "d_model"],
    n_layers: int,
    sites: Sequence[str] = RESID_SITES,
    parallel_attn_mlp: bool = False,
) -> list[Hook]:
    """Directional ablation at every layer and residual site, every position (Arditi et al. 2024)."""
    return [(name, lambda act, _name: project_out(act, direction))
            for name in site_names(range(n_layers), sites, parallel_attn_mlp)]
