"""Patching sites: which activation is patched, how it is split into slots, and how variants index the slots.

A slot is the unit one variant may patch: a position (residual-stream sites, width d_model), a (position, head)
pair (q, k, v, z; width d_head) or a (destination position, head) pair of the attention pattern (width = key
positions). Slots are ordered position-major so a suffix of positions is a contiguous run of slots.
Result axes follow the issue: `[layer, pos]`, `[layer, head]` (head over all positions), `[layer, head, pos]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import InterpError

Entry = Literal["resid_pre", "q", "k", "v", "pattern", "z", "attn_out", "resid_mid", "mlp_out", "resid_post"]
Grid = Literal["pos", "head", "head_pos"]


@dataclass(frozen=True)
class Site:
    """One kind of activation to patch, and the grid of variants swept over it at every layer."""

    name: str
    hook: str  # hook name after "blocks.{layer}."
    entry: Entry  # where the engine resumes the block with the patched tensor
    grid: Grid

    @property
    def per_head(self) -> bool:
        return self.grid != "pos"

    @property
    def kv(self) -> bool:
        """Keys and values are indexed by key/value head (fewer than query heads under GQA)."""
        return self.entry in ("k", "v")

    @property
    def reaches_last_layer_positions(self) -> bool:
        """Whether a patch in the last layer at an earlier position can still move the final position's output."""
        return self.entry in ("resid_pre", "k", "v")

    def hook_name(self, layer: int) -> str:
        return f"blocks.{layer}.{self.hook}"

    def n_heads(self, n_heads: int, n_kv_heads: int) -> int:
        return n_kv_heads if self.kv else n_heads

    def to_slots(self, act: Float[Tensor, "batch *activation"]) -> Float[Tensor, "batch slot width"]:
        """Hook-shaped activation -> `[batch, slot, width]`."""
        if self.entry == "pattern":
            return einops.rearrange(act, "b h q k -> b (q h) k")
        if self.per_head:
            return einops.rearrange(act, "b p h e -> b (p h) e")
        return act

    def from_slots(self, slots: Float[Tensor, "*lead slot width"], n_heads: int) -> Tensor:
        """`[..., slot, width]` -> the hook's layout with leading dims kept (pattern: `[..., h, q, k]`)."""
        if self.entry == "pattern":
            return einops.rearrange(slots, "... (q h) k -> ... h q k", h=n_heads)
        if self.per_head:
            return einops.rearrange(slots, "... (p h) e -> ... p h e", h=n_heads)
        return slots

    def slot_positions(self, n_pos: int, n_heads: int) -> Int[Tensor, "slot"]:
        """The position of every slot."""
        return torch.arange(n_pos).repeat_interleave(n_heads) if self.per_head else torch.arange(n_pos)

    def variant_masks(self, n_pos: int, n_heads: int) -> Bool[Tensor, "variant slot"]:
        """One row per variant, in result order: positions; heads (all positions); (head, position) pairs."""
        if self.grid == "pos":
            return torch.eye(n_pos, dtype=torch.bool)
        slot_head = torch.arange(n_pos * n_heads) % n_heads
        if self.grid == "head":
            return slot_head[None, :] == torch.arange(n_heads)[:, None]
        eye = torch.eye(n_pos * n_heads, dtype=torch.bool)
        return einops.rearrange(eye, "(p h) s -> (h p) s", h=n_heads)

    def result_shape(self, n_layers: int, n_pos: int, n_heads: int) -> tuple[int, ...]:
        shapes = {"pos": (n_layers, n_pos), "head": (n_layers, n_heads), "head_pos": (n_layers, n_heads, n_pos)}
        return shapes[self.grid]


def _sites() -> dict[str, Site]:
    table: list[Site] = [Site(n, f"hook_{n}", n, "pos") for n in ("resid_pre", "resid_mid", "resid_post")]
    table += [Site(n, f"hook_{n}", n, "pos") for n in ("attn_out", "mlp_out")]
    for name in ("z", "q", "k", "v", "pattern"):
        table += [Site(name, f"attn.hook_{name}", name, "head"), Site(f"{name}_by_pos", f"attn.hook_{name}", name,
                                                                      "head_pos")]
    return {s.name: s for s in table}


SITES: dict[str, Site] = _sites()
DEFAULT_SITES = ("resid_pre", "attn_out", "mlp_out", "z")


def get_site(name: str) -> Site:
    """The site called `name`, or a clear error listing them."""
    if name not in SITES:
        raise InterpError(f"unknown patching site {name!r}", fix=f"choose from {', '.join(SITES)}")
    return SITES[name]
