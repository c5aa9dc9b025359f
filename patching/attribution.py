"""Attribution patching (Nanda 2023; Syed et al. 2023): a first-order screen for activation patching.

The effect of patching an activation is estimated as (donor - base) . d metric / d activation, taken at the base
run: one forward and one backward pass cover every site, layer, position and head at once. `compare` reports how
well the screen agrees with exact patching on the same sweep (Pearson correlation over all cells).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching.engine import Patcher, PatchResult
from patching.metrics import Metric
from patching.sites import get_site


def attribution_patch(model: object, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                      metric: Metric | Callable[[Tensor], Tensor], sites: Sequence[str] = ("resid_pre",),
                      source: object | None = None, noising: bool = False) -> dict[str, PatchResult]:
    """Estimated patched metric per variant of each site, shaped like `activation_patch`'s results."""
    patcher = Patcher(model, clean_tokens, corrupted_tokens, metric, sites, source, noising, max_memory=1 << 30)
    nt, cfg = patcher.nt, patcher.nt.cfg
    base_tokens = patcher.clean_tokens if noising else patcher.corrupted_tokens
    names = sorted({get_site(s).hook_name(l) for s in sites for l in range(cfg.n_layers)})
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, name: str) -> None:
        acts[name] = act

    def track(act: Tensor, name: str) -> Tensor:  # gradients start here, not at the weights
        return act.detach().requires_grad_()

    with torch.enable_grad(), nt.hooks([("hook_embed", track), *[(n, keep) for n in names]]):
        value = patcher.metric(nt(base_tokens))
        grads = dict(zip(acts, torch.autograd.grad(value, list(acts.values()))))
    n_pos = base_tokens.shape[1]
    out = {}
    for name in sites:
        site = get_site(name)
        heads = site.n_heads(cfg.n_heads, cfg.n_kv_heads)
        masks = site.variant_masks(n_pos, heads).float().to(patcher.device)
        shape = site.result_shape(cfg.n_layers, n_pos, heads)
        raw = torch.empty(shape)
        for layer in range(cfg.n_layers):
            hook = site.hook_name(layer)
            delta = site.to_slots(patcher.donor.acts[hook]) - site.to_slots(patcher.base.acts[hook])
            per_slot = (delta * site.to_slots(grads[hook])).sum((0, 2))
            raw[layer] = (patcher.base_metric + masks @ per_slot).reshape(shape[1:]).cpu()
        normalised = (raw - patcher.corrupted_metric) / (patcher.clean_metric - patcher.corrupted_metric)
        out[name] = PatchResult(name, raw, normalised, patcher.clean_metric, patcher.corrupted_metric)
    return out


def compare(estimate: Float[Tensor, "*cell"], exact: Float[Tensor, "*cell"]) -> float:
    """Pearson correlation between the screen's and exact patching's results over every cell of one sweep."""
    a, b = estimate.flatten().double(), exact.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


