"""Exact activation patching through hooks, on any `HookedModel` (the fallback for families interp has no native
implementation of): the same `PatchResult`s as `patching.engine` (same variants, skips, normalisation and metric),
each variant a full forward with the patched activation written at its hook.

Variants are batched along the batch axis: one forward runs `variants x prompts` rows, as many variants as fit
`max_memory`. Slower than the engine, which resumes each variant from the patched layer and position only.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError
from interp.models.hooked import HookedModel
from interp.progress import progress as progress_lines
from patching.engine import PatchResult, _as_batch, default_max_memory
from patching.metrics import Metric, as_metric
from patching.sites import SITES, Site, get_site

NOTICE = "the fast engine needs a native family; using the exact hooked path (slower)"
_SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab")


def sites_of(model: HookedModel) -> list[str]:
    """The patching sites whose hook the model has at every layer."""
    names = set(model.hook_names())
    layers = range(model.summary.n_layers)
    return [name for name, site in SITES.items() if all(site.hook_name(layer) in names for layer in layers)]


def check_sites(model: HookedModel, sites: Sequence[str]) -> list[Site]:
    """The sites, each one the model has hooks for (on its backend), or an error naming those it has."""
    available = sites_of(model)
    for name in sites:
        get_site(name)
        if name not in available:
            raise InterpError(f"{model.summary.architecture} on the {model.backend} backend has no hook for patching "
                              f"site {name!r}", fix=f"choose from {', '.join(available)}")
    return [get_site(name) for name in sites]


class HookedPatcher:
    """Base and donor runs for one (model, source, prompts) pair on hooks; `sweep` as `patching.engine.Patcher`."""

    def __init__(self, model: HookedModel, clean_tokens: Int[Tensor, "batch pos"],
                 corrupted_tokens: Int[Tensor, "batch pos"], metric: Metric | Callable[[Tensor], Tensor],
                 sites: Sequence[str] = ("resid_post",), source: HookedModel | None = None, noising: bool = False,
                 max_memory: int | None = None) -> None:
        self.model, self.src = model, source if source is not None else model
        _check_same_shapes(self.model, self.src)
        clean, corrupted = (_as_batch(t, model.device) for t in (clean_tokens, corrupted_tokens))
        if clean.shape != corrupted.shape:
            raise InterpError(f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ "
                              "in shape", fix="use prompt pairs that tokenise to the same length")
        self.sites = check_sites(model, sites)
        self.noising = noising
        self.base_tokens, donor_tokens = (clean, corrupted) if noising else (corrupted, clean)
        names = sorted({s.hook_name(layer) for s in self.sites for layer in range(model.summary.n_layers)})
        base_logits, self.base_acts = self.model.run_with_cache(self.base_tokens, names)
        donor_logits, self.donor_acts = self.src.run_with_cache(donor_tokens, names)
        self.base_final, self.donor_final = base_logits[:, -1], donor_logits[:, -1]
        clean_final, corrupted_final = (self.donor_final, self.base_final) if not noising else \
            (self.base_final, self.donor_final)
        self.metric = as_metric(metric).with_clean(clean_final)
        self.clean_metric = float(self._reduce(clean_final))
        self.corrupted_metric = float(self._reduce(corrupted_final))
        self.base_metric = self.clean_metric if noising else self.corrupted_metric
        self.max_memory = max_memory or default_max_memory(model.device)

    def _reduce(self, final_logits: Tensor) -> Tensor:
        """The metric of `[..., batch, d_vocab]` final-position logits."""
        cols = self.metric.columns
        return self.metric.reduce(final_logits if cols is None else final_logits[..., cols.to(final_logits.device)])

    @torch.no_grad()
    def sweep(self, site: str | Site, layers: Sequence[int] | None = None, progress: bool = False) -> PatchResult:
        """Patch every variant of `site` (every layer unless `layers` is given); one result per grid cell."""
        site = get_site(site) if isinstance(site, str) else site
        s = self.model.summary
        n_pos = self.base_tokens.shape[1]
        n_heads = site.n_heads(s.n_heads, s.n_kv_heads)
        shape = site.result_shape(s.n_layers, n_pos, n_heads)
        raw = torch.full(shape, self.base_metric, dtype=torch.float32)
        n_run = n_skipped = 0
        todo = list(layers) if layers is not None else list(range(s.n_layers))
        for layer in (progress_lines(todo, desc=f"patching {site.name}", unit="layer") if progress else todo):
            values, run, skipped = self.sweep_layer(site, layer, n_pos, n_heads)
            raw[layer] = values.reshape(shape[1:])
            n_run, n_skipped = n_run + run, n_skipped + skipped
        normalised = (raw - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)
        return PatchResult(site.name, raw, normalised, self.clean_metric, self.corrupted_metric, n_run, n_skipped)

    def sweep_layer(self, site: Site, layer: int, n_pos: int, n_heads: int) -> tuple[Tensor, int, int]:
        """Metric per variant of one layer, the number of variants run and the number skipped (as the engine: a
        variant that patches only identical activations, or a last-layer slot that cannot reach the last position,
        keeps the base metric)."""
        name = site.hook_name(layer)
        base, donor = site.to_slots(self.base_acts[name]), site.to_slots(self.donor_acts[name])
        masks = site.variant_masks(n_pos, n_heads).to(base.device)
        slot_pos = site.slot_positions(n_pos, n_heads).to(base.device)
        live = (base != donor).flatten(2).any(-1).any(0)
        if layer == self.model.summary.n_layers - 1 and not site.reaches_last_layer_positions:
            live &= slot_pos == n_pos - 1
        effective = masks & live
        values = torch.full((masks.shape[0],), self.base_metric, dtype=torch.float32)
        active = effective.any(-1).nonzero().flatten().tolist()
        for chunk in self._chunks(active, n_pos):
            patched = torch.where(effective[chunk][:, None, :, None], donor[None], base[None])
            patched = site.from_slots(patched, n_heads).flatten(0, 1)
            values[chunk] = self._run(name, patched, len(chunk)).float().cpu()
        return values, len(active), masks.shape[0] - len(active)

    def _run(self, name: str, patched: Tensor, n_variants: int) -> Tensor:
        """The metric of each variant: one forward over `n_variants` copies of the base prompts with `name` set."""

        def write(act: Tensor, _name: str) -> Tensor:
            return patched.to(act.dtype)

        with self.model.hooks([(name, write)]):
            logits = self.model(self.base_tokens.repeat(n_variants, 1))[:, -1]
        return self._reduce(logits.unflatten(0, (n_variants, self.base_tokens.shape[0])))

    def _chunks(self, variants: list[int], n_pos: int) -> Iterator[list[int]]:
        """Consecutive variants, as many a forward as fit the memory budget (at least one)."""
        s = self.model.summary
        elem = torch.finfo(self.model.dtype).bits // 8
        per_row = elem * n_pos * (8 * s.d_model + 3 * s.d_mlp + 4 * s.n_heads * n_pos + 3 * s.n_heads * s.d_head)
        per_variant = max(1, per_row * self.base_tokens.shape[0])
        size = max(1, self.max_memory // per_variant)
        for i in range(0, len(variants), size):
            yield variants[i:i + size]


def _check_same_shapes(model: HookedModel, source: HookedModel) -> None:
    """Cross-model patching needs identical shapes and hooks."""
    diff = [k for k in _SHAPE_KEYS if getattr(model.summary, k) != getattr(source.summary, k)]
    if diff or model.hook_names() != source.hook_names():
        raise InterpError(f"source and target models differ in {', '.join(diff) or 'their hooks'}",
                          fix="cross-model patching needs two checkpoints of the same architecture")


def hooked_activation_patch(model: HookedModel, clean_tokens: Int[Tensor, "batch pos"],
                            corrupted_tokens: Int[Tensor, "batch pos"], site: str = "resid_post",
                            metric: Metric | Callable[[Tensor], Tensor] | None = None,
                            source: HookedModel | None = None, noising: bool = False,
                            max_memory: int | None = None) -> PatchResult:
    """`patching.activation_patch` through hooks, on any backend and family."""
    if metric is None:
        raise InterpError("activation_patch needs a metric", fix="pass metric=metrics.LogitDiff(answer_ids, wrong_ids)")
    return HookedPatcher(model, clean_tokens, corrupted_tokens, metric, [site], source, noising,
                         max_memory).sweep(site)


__all__ = ["HookedPatcher", "NOTICE", "check_sites", "hooked_activation_patch", "sites_of"]
