"""Hook names on a model interp has no native implementation for, on the two Hugging Face-backed backends.

The TransformerLens bridge fires many hooks; `bridge_hook_names` keeps those of our names that mean what they mean
in TransformerLens 3 on that model (a pattern hook fired after Hugging Face's attention already used the pattern,
or `mlp.hook_pre` aliased to a mixture-of-experts block's input, would read or patch something else).

For nnsight, `generic_site_table` derives the Hugging Face module paths from the bridge adapter's component mapping
for the architecture (TransformerLens 4 has adapters for about 140), then checks them against the model itself:
one two-token forward tells which modules return tuples and which formula each norm module computes. A site that
cannot be mapped this way is left out, so it is absent from the model's `hook_names()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from interp.errors import InterpError
from interp.models.backends.nnsight_sites import HEADS, WHOLE, Row, ModuleSite, View, apply_affine
from interp.models.native import normalise

NORM_KINDS = ("layernorm", "rms", "rmsf", "rms1p")  # `interp.models.native.normalise` and `apply_affine`
SOFTMAX = ("attention_interface_1", "nn_functional_softmax_0")  # Hugging Face's attention function, its softmax
SiteTable = dict[str, tuple[int, ModuleSite, View]]
HasOp = Callable[[str, str], bool]  # (module path, nnsight `.source` operation) -> whether its forward has it
# TransformerLens 3's names, in forward order; a model has those its backend can reach (see `bridge_hook_names`)
BLOCK_HOOKS = ("hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
               "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
               "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out",
               "hook_resid_post")


def unopenable(config: dict[str, Any]) -> str | None:
    """Why no hook backend can open a causal LM that has no native spec (None when one can), from config.json alone:
    an encoder whose attention is bidirectional (BERT and its kin, which transformers also builds as causal LMs),
    no attention heads to hook (a state-space or recurrent model such as Mamba or RWKV), or no TransformerLens
    adapter (the nnsight sites are derived from it too)."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    from interp.models.hf import summary_from_config

    cfg = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    if type(cfg) in AutoModelForMaskedLM._model_mapping and not cfg.is_decoder:
        return ("it is an encoder whose attention is bidirectional (config.json does not set \"is_decoder\": true), "
                "so its logits are not next-token predictions")
    try:
        summary_from_config(cfg, 0)
    except AttributeError as err:
        return (f"its config has no {getattr(err, 'name', None) or err} (interp's hooks are TransformerLens's: "
                "layers of attention heads and an MLP)")
    if bridge_has_adapter(config):
        return None
    name = (config.get("architectures") or ["?"])[0]
    return f"TransformerLens 4.3 has no adapter for {name} (nnsight's hook map is derived from those adapters)"


def bridge_has_adapter(config: dict[str, Any]) -> bool:
    """Whether TransformerLens's bridge has an architecture adapter for the config's model class."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return any(a in SUPPORTED_ARCHITECTURES for a in config.get("architectures") or ())


def check_opens(root: Path, config: dict[str, Any]) -> None:
    """Refuse, before any weights are read, a causal LM that neither the native core nor a hook backend can open,
    in one line naming why and the native families."""
    from interp.models.arch import native_model_types, spec_for

    if spec_for(config.get("model_type")) is not None:
        return
    why = unopenable(config)
    if why is not None:
        native = ", ".join(f"{family} ({key})" for key, family in native_model_types().items())
        raise InterpError(f"{root / 'config.json'}: model_type {config.get('model_type')!r} "
                          f"{config.get('architectures') or ''} cannot be opened by interp: {why}",
                          fix=f"use a checkpoint of a family interp runs natively: {native}; or another causal LM "
                              "the TransformerLens bridge has an adapter for (on the hook backends)")


def candidate_names(n_layers: int) -> list[str]:
    """Every TransformerLens 3 name a decoder of `n_layers` layers can have, in forward order."""
    blocks = [f"blocks.{layer}.{hook}" for layer in range(n_layers) for hook in BLOCK_HOOKS]
    return ["hook_embed", "hook_pos_embed", *blocks, "ln_final.hook_normalized"]


def bridge_hook_names(bridge: Any, n_layers: int) -> list[str]:
    """Our hook names the bridge fires with their TransformerLens 3 meaning, in forward order; `hook_resid_mid`
    only where one forward shows resid_pre + attn_out = resid_mid and resid_mid + mlp_out = resid_post."""
    hooks = bridge.hook_dict
    names = [name for name in candidate_names(n_layers) if name in hooks and _means_ours(bridge, hooks, name)]
    if any(name.endswith("hook_resid_mid") for name in names) and not _residual_adds_up(bridge, n_layers):
        names = [name for name in names if not name.endswith("hook_resid_mid")]
    return names


def _residual_adds_up(bridge: Any, n_layers: int) -> bool:
    """Whether the bridge's resid_mid sits between attention and MLP on the residual stream (a post-norm block would
    put a norm's input there instead)."""
    parts = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    names = [f"blocks.{layer}.{part}" for layer in range(n_layers) for part in parts]
    device = next(bridge.parameters()).device
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.zeros(1, 2, dtype=torch.long, device=device), names_filter=names)
    for layer in range(n_layers):
        pre, attn, mid, mlp, post = (cache[f"blocks.{layer}.{part}"].float() for part in parts)
        tol = 1e-3 * max(1.0, float(post.abs().max()))
        if not (torch.allclose(pre + attn, mid, atol=tol, rtol=0)
                and torch.allclose(mid + mlp, post, atol=tol, rtol=0)):
            return False
    return True


def _means_ours(bridge: Any, hooks: dict[str, Any], name: str) -> bool:
    """Whether the bridge's hook of this name is TransformerLens 3's (see the module docstring)."""
    from transformer_lens.model_bridge.generalized_components import AttentionBridge
    from transformer_lens.model_bridge.generalized_components.block import ParallelBlockBridge

    if name == "hook_pos_embed":
        return hasattr(bridge, "pos_embed")  # the bridge aliases it to rotary tables otherwise
    if not name.startswith("blocks."):
        return True
    layer, hook = name.split(".", 2)[1:]
    block = bridge.blocks[int(layer)]
    if hook in ("attn.hook_attn_scores", "attn.hook_pattern"):
        attn = block.attn
        inside = type(attn).forward is not AttentionBridge.forward
        return inside or bool(getattr(attn.original_component, "accepts_pattern_fn", False))
    if hook in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
        ends = {id(hooks.get(f"blocks.{layer}.mlp.{end}")) for end in ("hook_in", "hook_out")}
        return id(hooks[name]) not in ends  # a mixture of experts aliases them to its block's input and output
    if hook == "hook_resid_mid":
        return not isinstance(block, ParallelBlockBridge)
    return True


def adapter_mapping(hf_model: nn.Module) -> dict[str, Any]:
    """The TransformerLens adapter's component mapping for this Hugging Face model (module names, kinds)."""
    from transformer_lens.factories import architecture_adapter_factory
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf

    config = hf_model.config
    architecture = (config.architectures or [type(hf_model).__name__])[0]
    try:
        cfg = build_bridge_config_from_hf(config, architecture, "interp", next(hf_model.parameters()).dtype)
        adapter = architecture_adapter_factory.ArchitectureAdapterFactory.select_architecture_adapter(cfg)
    except (ValueError, KeyError, NotImplementedError, AttributeError) as err:
        raise InterpError(f"the nnsight backend cannot map hooks onto {architecture} ({model_type(hf_model)}): "
                          f"TransformerLens has no adapter for it ({' '.join(str(err).split())[:200]})",
                          fix="use backend='transformer_lens' if the bridge opens it, or a natively supported "
                              "family") from err
    return adapter.component_mapping


def model_type(hf_model: nn.Module) -> str:
    return str(getattr(hf_model.config, "model_type", "?"))


def generic_site_table(hf_model: nn.Module, n_layers: int, has_op: HasOp) -> SiteTable:
    """Hook name -> (execution order, site, view) for the sites of `hf_model` that map generically."""
    mapping = adapter_mapping(hf_model)
    probe = _Probe(hf_model, has_op)
    blocks = mapping["blocks"]
    rows: list[Row] = [*_row("hook_embed", ModuleSite(mapping["embed"].name, "output"), WHOLE, probe)]
    for layer in range(n_layers):
        prefix = f"{blocks.name}.{layer}"
        rows += [(f"blocks.{layer}.{name}", site, view) for name, site, view in _block(blocks, prefix, probe)]
    if "ln_final" in mapping:
        rows += _norm_row("ln_final.hook_normalized", mapping["ln_final"].name, probe)
    return {name: (order, site, view) for order, (name, site, view) in enumerate(rows)}


def _block(blocks: Any, prefix: str, probe: "_Probe") -> list[Row]:
    """One decoder block's rows in execution order (pre-norm attention, then the MLP)."""
    parts = blocks.submodules
    rows = _row("hook_resid_pre", ModuleSite(prefix, "input"), WHOLE, probe)
    if "ln1" in parts:
        rows += _norm_row("ln1.hook_normalized", f"{prefix}.{parts['ln1'].name}", probe)
    if "attn" in parts:
        rows += _attention(parts["attn"], f"{prefix}.{parts['attn'].name}", probe)
    if "ln2" in parts:
        rows += _norm_row("ln2.hook_normalized", f"{prefix}.{parts['ln2'].name}", probe)
    if "mlp" in parts:
        rows += _mlp(parts["mlp"], f"{prefix}.{parts['mlp'].name}", probe)
    return rows + _row("hook_resid_post", ModuleSite(prefix, "output"), WHOLE, probe)


def _attention(attn: Any, path: str, probe: "_Probe") -> list[Row]:
    """q/k/v from separate projections, scores and pattern inside Hugging Face's attention function, z (the output
    projection's input) and the attention output."""
    subs = attn.submodules
    rows: list[Row] = []
    if all(x in subs and _plain_linear(subs[x]) for x in "qkv"):
        for x in "qkv":
            rows += _row(f"attn.hook_{x}", ModuleSite(f"{path}.{subs[x].name}", "output"), HEADS, probe)
    if probe.has_source_op(path, SOFTMAX[0]):
        rows += [("attn.hook_attn_scores", ModuleSite(path, "input", SOFTMAX), WHOLE),
                 ("attn.hook_pattern", ModuleSite(path, "output", SOFTMAX), WHOLE)]
    if "o" in subs and _plain_linear(subs["o"]):
        rows += _row("attn.hook_z", ModuleSite(f"{path}.{subs['o'].name}", "input"), HEADS, probe)
    return rows + _row("hook_attn_out", ModuleSite(path, "output"), WHOLE, probe)


def _mlp(mlp: Any, path: str, probe: "_Probe") -> list[Row]:
    """The MLP's pre-activation (the gate projection's output when gated, then the up projection's as
    `hook_pre_linear`) and post-activation, for dense MLPs of separate projections only; its output always."""
    from transformer_lens.model_bridge.generalized_components import GatedMLPBridge, MLPBridge

    subs = mlp.submodules
    rows: list[Row] = []
    if type(mlp) in (MLPBridge, GatedMLPBridge) and "out" in subs:
        pre = subs.get("gate") if type(mlp) is GatedMLPBridge else subs.get("in")
        if pre is not None and _plain_linear(pre) and _plain_linear(subs["out"]):
            rows += _row("mlp.hook_pre", ModuleSite(f"{path}.{pre.name}", "output"), WHOLE, probe)
            if type(mlp) is GatedMLPBridge and "in" in subs and _plain_linear(subs["in"]):
                rows += _row("mlp.hook_pre_linear", ModuleSite(f"{path}.{subs['in'].name}", "output"), WHOLE, probe)
            rows += _row("mlp.hook_post", ModuleSite(f"{path}.{subs['out'].name}", "input"), WHOLE, probe)
    return rows + _row("hook_mlp_out", ModuleSite(path, "output"), WHOLE, probe)


def _plain_linear(component: Any) -> bool:
    from transformer_lens.model_bridge.generalized_components import LinearBridge

    return type(component) is LinearBridge and bool(component.name)


def _row(name: str, site: ModuleSite, view: View, probe: "_Probe") -> list[Row]:
    """The row, with a tuple-valued port reduced to its first element; none when the module did not run."""
    item = probe.tuple_port(site.module, site.port)
    if item is False:
        return []
    return [(name, ModuleSite(site.module, site.port, site.ops, 0 if item else None), view)]


def _norm_row(name: str, path: str, probe: "_Probe") -> list[Row]:
    """`hook_normalized` of a norm module whose output one of our formulas reproduces; none otherwise."""
    kind = probe.norm_kind(path)
    return [(name, ModuleSite(path, "input", norm=kind), WHOLE)] if kind else []


def norm_eps(norm: nn.Module) -> float | None:
    """A norm module's epsilon (`eps` on LayerNorm and Gemma, `variance_epsilon` on Llama and Qwen2)."""
    for attr in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, attr, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


class _Probe:
    """One two-token forward of the Hugging Face model recording what each module received and returned."""

    def __init__(self, hf_model: nn.Module, has_op: HasOp) -> None:
        self.model, self.has_op = hf_model, has_op
        self.seen: dict[str, tuple[Any, Any]] = {}
        handles = [module.register_forward_hook(self._record(name)) for name, module in hf_model.named_modules()]
        try:
            with torch.no_grad():
                device = next(hf_model.parameters()).device
                hf_model(torch.zeros(1, 2, dtype=torch.long, device=device), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()

    def _record(self, name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self.seen.setdefault(name, (args[0] if args else None, output))

        return hook

    def tuple_port(self, path: str, port: str) -> bool | None:
        """Whether the module's port holds a tuple (its first element is the activation); False when it never ran
        or its activation is not a tensor."""
        if path not in self.seen:
            return False
        value = self.seen[path][0 if port == "input" else 1]
        if isinstance(value, tuple) and value and isinstance(value[0], Tensor):
            return True
        return None if isinstance(value, Tensor) else False

    def norm_kind(self, path: str) -> str:
        """Which of LayerNorm, RMSNorm and Gemma's (1 + weight) RMSNorm the module computes, or "" if none."""
        if path not in self.seen or not isinstance(self.seen[path][0], Tensor):
            return ""
        module = self.model.get_submodule(path)
        eps = norm_eps(module)
        x, out = self.seen[path]
        if eps is None or not isinstance(out, Tensor) or not isinstance(getattr(module, "weight", None), Tensor):
            return ""
        kinds = [kind for kind in NORM_KINDS if kind != "layernorm" or hasattr(module, "bias")]
        with torch.no_grad():
            errors = {kind: _error(apply_affine(normalise(x, kind, eps), module, kind, out.dtype), out)
                      for kind in kinds}
        kind = min(errors, key=errors.__getitem__)
        return kind if errors[kind] <= 8 * torch.finfo(out.dtype).eps * max(1.0, float(out.abs().max())) else ""

    def has_source_op(self, path: str, op: str) -> bool:
        """Whether the module ran and its forward has `op` (nnsight's name for an operation inside it)."""
        return path in self.seen and self.has_op(path, op)


def _error(expected: Tensor, out: Tensor) -> float:
    """Largest absolute difference, infinite when the shapes differ."""
    return float((expected.float() - out.float()).abs().max()) if expected.shape == out.shape else float("inf")

