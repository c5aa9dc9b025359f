"""Exact activation patching, many variants per forward: `activation_patch` and the `Patcher` behind it.

Denoising runs the corrupted prompt and patches in the clean run's activation; noising runs the clean prompt and
patches in the corrupted one. With `source` the patched-in activation comes from another model of the same
architecture (cross-model activation patching, Prakash et al. 2024, section 5.4 of the reference). A variant whose
activation is identical in both runs at every slot it patches is not run: its result is the base metric, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InterpError
from interp.models.native import NativeTransformer
from patching.forward import BaseRun, SuffixForward
from patching.metrics import Metric, as_metric
from patching.sites import Site, get_site
from patching.variants import Backend, get_backend

_BASE_HOOKS = ("hook_resid_pre", "hook_resid_mid", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern",
               "attn.hook_z", "hook_attn_out", "hook_mlp_out")


@dataclass
class PatchResult:
    """One site's sweep: raw metric and (raw - corrupted) / (clean - corrupted), in the site's result shape."""

    site: str
    raw: Float[Tensor, "layer *cell"]
    normalised: Float[Tensor, "layer *cell"]
    clean_metric: float
    corrupted_metric: float
    n_run: int = 0  # variants actually computed
    n_skipped: int = 0  # variants whose patch changed nothing (identical activations)


def native_of(model: object) -> NativeTransformer:
    """The `NativeTransformer` behind a `HookedModel` (or the model itself)."""
    if isinstance(model, NativeTransformer):
        return model
    if hasattr(model, "native"):
        return model.native()
    raise InterpError(f"cannot patch a {type(model).__name__}", fix="pass an interp HookedModel or NativeTransformer")


def check_same_architecture(a: NativeTransformer, b: NativeTransformer) -> None:
    """Cross-model patching needs identical shapes everywhere."""
    keys = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "parallel_attn_mlp")
    diff = [k for k in keys if getattr(a.cfg, k) != getattr(b.cfg, k)]
    if diff:
        raise InterpError(f"source and target models differ in {', '.join(diff)}",
                          fix="cross-model patching needs two checkpoints of the same architecture")


@torch.no_grad()
def capture(nt: NativeTransformer, tokens: Int[Tensor, "batch pos"], names: Sequence[str]) -> BaseRun:
    """Run `nt` on `tokens`, keeping the named activations, every layer's rotated keys/values and final logits."""
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, name: str) -> None:
        acts[name] = act

    positions = nt.positions(tokens)
    with nt.hooks([(n, keep) for n in names]):
        resid, kvs = nt.run_blocks(nt.embed(tokens, positions), positions)
    rope = nt.rope(resid, positions)
    return BaseRun(acts, kvs, nt.unembed(resid[:, -1]), rope)


def default_max_memory(device: torch.device) -> int:
    """Half the free accelerator memory, or a quarter of available RAM capped at 2 GiB on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    import psutil

    return min(2 << 30, psutil.virtual_memory().available // 4)


class Patcher:
    """Base and donor runs for one (model, source, prompts) pair, shared by sweeps over several sites."""

    def __init__(self, model: object, clean_tokens: Int[Tensor, "batch pos"],
                 corrupted_tokens: Int[Tensor, "batch pos"], metric: Metric | Callable[[Tensor], Tensor],
                 sites: Sequence[str] = ("resid_post",),
                 source: object | None = None, noising: bool = False, max_memory: int | None = None,
                 backend: str = "torch") -> None:
        self.nt = native_of(model)
        self.src = native_of(source) if source is not None else self.nt
        check_same_architecture(self.nt, self.src)
        clean, corrupted = (_as_batch(t, self.device) for t in (clean_tokens, corrupted_tokens))
        if clean.shape != corrupted.shape:
            raise InterpError(f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ "
                              "in shape", fix="use prompt pairs that tokenise to the same length")
        self.sites = [get_site(s) for s in sites]
        if self.nt.cfg.parallel_attn_mlp and any(s.entry == "resid_mid" for s in self.sites):
            raise InterpError("resid_mid does not exist when attention and MLP run in parallel (GPT-NeoX)",
                              fix="drop resid_mid from --sites")
        self.noising, self.clean_tokens, self.corrupted_tokens = noising, clean, corrupted
        base_tokens, donor_tokens = (clean, corrupted) if noising else (corrupted, clean)
        L = self.nt.cfg.n_layers
        skip = {"hook_resid_mid"} if self.nt.cfg.parallel_attn_mlp else set()
        skip |= set() if any(s.entry == "pattern" for s in self.sites) else {"attn.hook_pattern"}
        base_names = [f"blocks.{l}.{h}" for l in range(L) for h in _BASE_HOOKS if h not in skip]
        self.base = capture(self.nt, base_tokens, base_names + [f"blocks.{l}.hook_resid_post" for l in range(L)])
        self.donor = capture(self.src, donor_tokens, sorted({s.hook_name(l) for s in self.sites for l in range(L)}))
        clean_run, corrupted_run = (self.base, self.donor) if noising else (self.donor, self.base)
        self.metric = as_metric(metric).with_clean(clean_run.final_logits)
        self.clean_metric = float(self._reduce(clean_run.final_logits))
        self.corrupted_metric = float(self._reduce(corrupted_run.final_logits))
        self.base_metric = self.corrupted_metric if not noising else self.clean_metric
        self.forward = SuffixForward(self.nt, self.base)
        self.backend: Backend = get_backend(backend)
        self.max_memory = max_memory or default_max_memory(self.device)
        self._readout_weights = self._unembed_columns()

    @property
    def device(self) -> torch.device:
        return self.nt.W_E.device

    def _reduce(self, final_logits: Tensor) -> Tensor:
        cols = self.metric.columns
        return self.metric.reduce(final_logits if cols is None else final_logits[:, cols.to(final_logits.device)])

    def _unembed_columns(self) -> tuple[Tensor, Tensor]:
        cols = self.metric.columns
        if cols is None:
            return self.nt.W_U, self.nt.b_U
        cols = cols.to(self.device)
        return self.nt.W_U[:, cols], self.nt.b_U[cols]

    def metric_of(self, final_resid: Float[Tensor, "variant batch d_model"]) -> Float[Tensor, "variant"]:
        """The metric for each variant, from its final-position residual stream. The backend's fused readout serves
        the plain final norms; Gemma's (1 + w) in float32 and soft-capped logits go through the model's own."""
        ln, nt = self.nt.ln_final, self.nt
        W, b = self._readout_weights
        x = final_resid.flatten(0, 1)
        if ln.plain and nt.cfg.final_softcap is None:
            logits = self.backend.readout(x, ln.w, ln.b, ln.eps, ln.kind, W, b)
        else:
            logits = nt.softcap(ln(x) @ W + b)
        return self.metric.reduce(logits.unflatten(0, final_resid.shape[:2]))

    # --- sweeps -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sweep(self, site: str | Site, layers: Sequence[int] | None = None, progress: bool = False) -> PatchResult:
        """Patch every variant of `site` (every layer unless `layers` is given); one result per grid cell."""
        site = get_site(site) if isinstance(site, str) else site
        cfg = self.nt.cfg
        n_pos = self.base.acts["blocks.0.hook_resid_pre"].shape[1]
        n_heads = site.n_heads(cfg.n_heads, cfg.n_kv_heads)
        shape = site.result_shape(cfg.n_layers, n_pos, n_heads)
        raw = torch.full(shape, self.base_metric, dtype=torch.float32)
        n_run = n_skipped = 0
        todo = layers if layers is not None else range(cfg.n_layers)
        with self.nt.fused_weights():
            for layer in tqdm(todo, desc=f"patching {site.name}", unit="layer", leave=False, disable=not progress):
                values, run, skipped = self.sweep_layer(site, layer, n_pos, n_heads)
                raw[layer] = values.reshape(shape[1:])
                n_run, n_skipped = n_run + run, n_skipped + skipped
        normalised = (raw - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)
        return PatchResult(site.name, raw, normalised, self.clean_metric, self.corrupted_metric, n_run, n_skipped)

    def sweep_layer(self, site: Site, layer: int, n_pos: int, n_heads: int,
                    donor_act: Float[Tensor, "batch *activation"] | None = None
                    ) -> tuple[Float[Tensor, "variant"], int, int]:
        """Metric per variant of one layer, the number of variants run and the number skipped.

        `donor_act` replaces the donor run's activation at this site (path patching builds its own)."""
        name = site.hook_name(layer)
        donor_act = self.donor.acts[name] if donor_act is None else donor_act
        base, donor = site.to_slots(self.base.acts[name]), site.to_slots(donor_act)
        masks = site.variant_masks(n_pos, n_heads).to(self.device)
        slot_pos = site.slot_positions(n_pos, n_heads).to(self.device)
        live = (base != donor).flatten(2).any(-1).any(0)  # slots where the two runs differ
        if layer == self.nt.cfg.n_layers - 1 and not site.reaches_last_layer_positions:
            live &= slot_pos == n_pos - 1
        effective = masks & live
        values = torch.full((masks.shape[0],), self.base_metric, dtype=torch.float32)
        active = effective.any(-1).nonzero().flatten()
        starts = torch.where(effective, slot_pos, n_pos).amin(-1)
        order = active[torch.argsort(starts[active], stable=True)].tolist()
        for chunk in self.chunks(order, starts.tolist(), n_pos):
            start = int(starts[chunk[0]])
            first_slot = int((slot_pos < start).sum())
            patched = self.backend.build_variants(base[:, first_slot:], donor[:, first_slot:],
                                                  effective[chunk, first_slot:])
            patched = site.from_slots(patched, n_heads)
            final = self.forward.run(layer, start, site.entry, patched)
            values[chunk] = self.metric_of(final).float().cpu()
        return values, len(order), masks.shape[0] - len(order)

    def chunks(self, order: list[int], starts: list[int], n_pos: int) -> Iterator[list[int]]:
        """Consecutive variants (sorted by start) sharing one suffix, within the memory budget and little waste."""
        per_row = self.row_bytes(n_pos)
        batch = self.base.final_logits.shape[0]
        chunk: list[int] = []
        for v in order:
            if chunk:
                length = n_pos - starts[chunk[0]]
                own = n_pos - starts[v]
                fits = (len(chunk) + 1) * batch * length * per_row <= self.max_memory
                if not fits or (own < 0.75 * length and length - own > 2):
                    yield chunk
                    chunk = []
            chunk.append(v)
        if chunk:
            yield chunk

    def row_bytes(self, n_pos: int) -> int:
        """Rough peak bytes per (variant, prompt, position) row of a suffix forward."""
        c = self.nt.cfg
        elem = self.nt.W_E.element_size()
        return elem * (8 * c.d_model + 3 * c.d_mlp + 4 * c.n_heads * n_pos + 3 * c.n_heads * c.d_head)


def _as_batch(tokens: Tensor, device: torch.device) -> Tensor:
    tokens = torch.as_tensor(tokens)
    return (tokens[None] if tokens.ndim == 1 else tokens).to(device)


def activation_patch(model: object, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                     site: str = "resid_post", metric: Metric | Callable[[Tensor], Tensor] | None = None,
                     source: object | None = None, noising: bool = False, max_memory: int | None = None,
                     backend: str = "torch") -> PatchResult:
    """Exact activation patching of every variant of `site`; same numbers as `transformer_lens.patching`.

    `source` is the model whose activations are patched in (cross-model patching), by default `model` itself.
    """
    if metric is None:
        raise InterpError("activation_patch needs a metric", fix="pass metric=metrics.LogitDiff(answer_ids, wrong_ids)")
    patcher = Patcher(model, clean_tokens, corrupted_tokens, metric, [site], source, noising, max_memory, backend)
    return patcher.sweep(site)


__all__ = ["PatchResult", "Patcher", "activation_patch"]
