"""`HookedModel` over nnsight 0.8 (`TransformersModel`), with TransformerLens hook names mapped onto the HF module tree.

`.lm` is the nnsight model, for anything nnsight offers beyond the shared interface. `remote=True` is passed
through to `lm.trace` (NDIF execution); nothing in this project can reach a remote server, so it is untested here.
The trace body below must stay in a real source file: nnsight re-reads it.
"""

from __future__ import annotations

from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from nnsight.modeling.transformers import TransformersModel
from torch import Tensor
from transformers import PreTrainedModel

from interp.errors import InterpError
from interp.models.arch import spec_for
from interp.models.backends.generic_sites import generic_site_table, norm_eps
from interp.models.backends.nnsight_sites import ModuleSite, View, apply_affine, normalise, site_table
from interp.models.hf import HFBackedModel
from interp.models.hooked import HookFn

Plan = list[tuple[ModuleSite, list[tuple[str, View, HookFn]]]]


def _check_first_weight_placed(hf_model: PreTrainedModel) -> None:
    """Refuse a model whose first weight a device map offloaded to disk: nnsight moves every input to that weight's
    device, which is then "meta"."""
    name, weight = next(iter(hf_model.named_parameters()))
    if weight.device.type == "meta":
        raise InterpError(f"the nnsight backend sends inputs to the device of the model's first weight, {name}, "
                          "which the device_map offloads to disk", fix=f"keep {name.rsplit('.', 1)[0]} on cpu or a "
                          "GPU in device_map (or give it room there), or use backend='transformer_lens'")


@contextmanager
def _first_mapped_to(hf_model: PreTrainedModel, device: torch.device) -> Iterator[None]:
    """Let a model placed by a device map start its `hf_device_map` with the inputs' device while nnsight builds its
    pipeline: transformers' pipeline takes the first entry as its device and cannot parse "disk"."""
    placed = getattr(hf_model, "hf_device_map", None)
    if placed is None:
        yield
        return
    hf_model.hf_device_map = {"": str(device), **placed}
    try:
        yield
    finally:
        hf_model.hf_device_map = placed


class NNsightModel(HFBackedModel):
    """A checkpoint run through nnsight; logits equal Hugging Face's eager forward."""

    backend = "nnsight"

    def __init__(self, path: Path, step: int | None, tokenizer: Any, hf_model: PreTrainedModel, device: torch.device,
                 dtype: torch.dtype, remote: bool = False) -> None:
        super().__init__(path, step, tokenizer, hf_model, device, dtype)
        _check_first_weight_placed(hf_model)
        with _first_mapped_to(hf_model, device):
            self.lm = TransformersModel(hf_model, task="text-generation", tokenizer=tokenizer)
        self.remote = remote
        self._sites = self._site_table(hf_model)
        self._active: list[tuple[str, HookFn]] = []

    def _site_table(self, hf_model: PreTrainedModel) -> dict[str, tuple[int, ModuleSite, View]]:
        """The family's hand-written site map for a native family, else one derived generically."""
        if spec_for(self.config.model_type) is not None:
            return site_table(self.config, self.summary.n_layers)
        return generic_site_table(hf_model, self.summary.n_layers,
                                  lambda path, op: hasattr(self._module(path).source, op))

    def hook_names(self) -> list[str]:
        """The names of the site table (the family's, or the generic one), in forward order."""
        return list(self._sites)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits from token ids exactly as given, with the active hooks applied in forward order."""
        plan = self._plan()
        with self.lm.trace(tokens.to(self.device), remote=self.remote):
            self._intervene(plan, tokens.shape[0])
            logits = self.lm.output.logits.save()
        return logits

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Register hooks for every forward inside the block (nestable)."""
        self.resolve_names([name for name, _ in fwd_hooks])
        before = list(self._active)
        self._active.extend(fwd_hooks)
        try:
            yield
        finally:
            self._active = before

    def _plan(self) -> Plan:
        """Active hooks grouped by site, in execution order (hooks on one name keep their registration order)."""
        ordered = sorted(self._active, key=lambda hook: self._sites[hook[0]][0])
        plan: Plan = []
        for site, group in groupby(ordered, key=lambda hook: self._sites[hook[0]][1]):
            hooks = [(name, self._sites[name][2], fn) for name, fn in group]
            if site.ops:
                self._instrument(site, hooks[0][0])
            plan.append((site, hooks))
        return plan

    def _instrument(self, site: ModuleSite, name: str) -> None:
        """Install nnsight's `.source` on the site's module before the trace (it must exist before the module runs)."""
        if not hasattr(self._module(site.module).source, site.ops[0]):
            raise InterpError(f"the nnsight backend cannot reach {name} on {self.summary.architecture}: operation "
                              f"{site.ops[0]!r} not found in {site.module}.forward (transformers version changed?)",
                              fix="use backend='transformer_lens' or backend='native' for this hook")

    def _module(self, path: str) -> Any:
        envoy: Any = self.lm
        for part in path.split("."):
            envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
        return envoy

    def _intervene(self, plan: Plan, batch: int) -> None:
        """Inside a trace: read each site, run its hooks on the TransformerLens-shaped views, write back any change."""
        d_head = self.summary.d_head
        for site, hooks in plan:
            envoy = self._module(site.module)
            for op in site.ops:
                envoy = getattr(envoy.source, op)
            full = getattr(envoy, site.port)
            value = full if site.item is None else full[site.item]
            if site.norm:
                norm_input, value = value, normalise(value, site.norm, norm_eps(self._torch_module(site.module)))
            changed = False
            for name, view, fn in hooks:
                new = fn(view.get(value, d_head, batch), name)
                if new is not None:
                    value, changed = view.put(value, new), True
            if not changed:
                continue
            if site.norm:
                envoy.output = apply_affine(value, self._torch_module(site.module), site.norm, norm_input.dtype)
            elif site.item is None:
                setattr(envoy, site.port, value)
            else:
                setattr(envoy, site.port, (*full[: site.item], value, *full[site.item + 1:]))

    def _torch_module(self, path: str) -> torch.nn.Module:
        return self.lm._module.get_submodule(path)

