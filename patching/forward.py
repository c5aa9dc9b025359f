"""Suffix forward passes for many patch variants at once, on the model's own blocks.

Every tensor carries a leading variant axis (size V, or 1 when it is the base run's and shared). A patch at
layer l and position s leaves layers below l and positions before s untouched, so only positions s.. of layers
l.. are recomputed: `Block.resume` restarts block l at the patched hook point, taking what lies upstream of it from
the base run and attending to the base run's cached keys and values for earlier positions. In the last layer only
the final position's output is computed, since the metric reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from jaxtyping import Float
from torch import Tensor

from interp.models.native import KV, NativeTransformer, Rope, Step
from patching.sites import Entry


@dataclass
class BaseRun:
    """A model's forward on some tokens: hooked activations, rotated keys/values per layer, final-position logits."""

    acts: dict[str, Tensor]
    kvs: list[KV]
    final_logits: Float[Tensor, "batch d_vocab"]
    rope: Rope | None  # cos, sin per rotary table for every position, [batch, pos, rotary_dim]


class SuffixForward:
    """Runs patched suffixes of one model against one base run."""

    def __init__(self, nt: NativeTransformer, base: BaseRun) -> None:
        self.nt, self.cfg, self.base = nt, nt.cfg, base

    def step(self, layer: int, start: int, last: bool) -> Step:
        """Block `layer`'s view of the base run: rotary tables and keys/values, from position `start` on."""
        rope = None if self.base.rope is None else {
            kind: (cos[:, start:], sin[:, start:]) for kind, (cos, sin) in self.base.rope.items()}
        return Step(rope, self.base.kvs, start=start, last=last, base=self._base_acts(layer, start))

    def _base_acts(self, layer: int, start: int) -> Callable[[str], Tensor]:
        """A base activation of `layer` for positions `start..`, with a variant axis of size 1."""
        return lambda hook: self.base.acts[f"blocks.{layer}.{hook}"][:, start:][None]

    def run(self, layer: int, start: int, entry: Entry, patched: Float[Tensor, "variant batch *activation"]
            ) -> Float[Tensor, "variant batch d_model"]:
        """The final position's residual stream after patching `entry` of `layer` (positions `start..`): `patched`
        holds one copy of that activation per variant, in its hook's shape."""
        last = self.cfg.n_layers - 1
        x = patched
        if entry != "resid_post":
            x, _ = self.nt.blocks[layer].resume(patched, self.step(layer, start, layer == last), entry)
        for later in range(layer + 1, self.cfg.n_layers):
            x, _ = self.nt.blocks[later].resume(x, self.step(later, start, later == last))
        return x[..., -1, :]
