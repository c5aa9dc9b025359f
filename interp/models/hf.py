"""What the Hugging Face-wrapping backends share: `ModelSummary` from the HF config, loading, architecture facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from interp.errors import InterpError
from interp.loading import DeviceMap
from interp.models.hooked import HookedModel, ModelSummary
from interp.models.native import NativeConfig, NativeTransformer

HFModel = TypeVar("HFModel", bound="HFBackedModel")  # not `typing.Self`: beartype checks methods one by one


def summary_from_config(cfg: PreTrainedConfig, n_params: int) -> ModelSummary:
    """Architecture facts from a Hugging Face config (every supported family's attribute names)."""
    n_heads = cfg.num_attention_heads
    d_model = cfg.hidden_size
    return ModelSummary(
        architecture=(cfg.architectures or [type(cfg).__name__.replace("Config", "ForCausalLM")])[0],
        n_layers=cfg.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        d_model=d_model,
        d_head=getattr(cfg, "head_dim", None) or d_model // n_heads,
        d_mlp=getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d_model,
        d_vocab=cfg.vocab_size,
        n_ctx=cfg.max_position_embeddings,
        n_params=n_params,
    )


def summarise(model: PreTrainedModel) -> ModelSummary:
    """`ModelSummary` of a loaded model; parameters counted from the model (tied weights once)."""
    return summary_from_config(model.config, sum(p.numel() for p in model.parameters()))


def parallel_attn_mlp(cfg: PreTrainedConfig) -> bool:
    """Whether attention and MLP read the same residual (GPT-NeoX's parallel residual): no `hook_resid_mid`.
    The family's spec says so; a model without one is taken as sequential."""
    native = _native_config(cfg)
    return native is not None and native.parallel_attn_mlp


def learned_positions(cfg: PreTrainedConfig) -> bool:
    """Whether the model adds a learned position embedding (`hook_pos_embed` exists), from the family's spec."""
    native = _native_config(cfg)
    return native is not None and native.positional == "learned"


def _native_config(cfg: PreTrainedConfig) -> NativeConfig | None:
    from interp.models.arch import spec_for

    spec = spec_for(cfg.model_type)
    return None if spec is None else spec.config(cfg, torch.float32)


def block_relative(name: str) -> str:
    """A hook name without its `blocks.{l}.` prefix ("blocks.3.attn.hook_q" -> "attn.hook_q"); others unchanged."""
    return name.split(".", 2)[2] if name.startswith("blocks.") else name


def input_device(model: PreTrainedModel) -> torch.device:
    """Where token ids go in a model placed by a device map: the device its input embedding runs on (accelerate's
    execution device when the embedding is offloaded, else its weight's)."""
    embedding = model.get_input_embeddings()
    device = getattr(getattr(embedding, "_hf_hook", None), "execution_device", None)
    if device is None:
        return embedding.weight.device
    return torch.device(f"cuda:{device}" if isinstance(device, int) else device)


class HFBackedModel(HookedModel):
    """A `HookedModel` wrapping a Hugging Face model; architecture facts come from its config, not the native model."""

    def __init__(self, path: Path, step: int | None, tokenizer: Any, hf_model: PreTrainedModel, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__(path, step, tokenizer, summarise(hf_model), device, dtype)
        self.config = hf_model.config
        self.sharded = getattr(hf_model, "hf_device_map", None) is not None  # spread over devices by a device map

    @classmethod
    def from_dir(cls: type[HFModel], path: Path, device: torch.device, dtype: torch.dtype, step: int | None,
                 tokenizer: Any | None = None, device_map: DeviceMap | None = None,
                 offload_folder: str | Path | None = None) -> HFModel:
        """Load a checkpoint directory with eager attention (`interp.load` validates the directory and any
        `device_map` first); on `device`, or spread by `device_map` with inputs going to the embedding's device."""
        from interp.loading import load_tokenizer
        from interp.models.convert import load_hf_causal_lm

        path = Path(path)
        hf_model = load_hf_causal_lm(path, dtype=dtype, device_map=device_map, offload_folder=offload_folder)
        if device_map is None:
            hf_model = hf_model.to(device)
        else:
            device = input_device(hf_model)
        return cls(path, step, tokenizer or load_tokenizer(path), hf_model, torch.device(device), dtype)

    def hook_names(self) -> list[str]:
        """The hooks of the family's nnsight site table (what the native model fires, checked by tests); on the
        TransformerLens bridge without those it cannot serve with their native meaning (`ArchSpec.bridge_missing`)."""
        from interp.models.arch import spec_for
        from interp.models.backends.nnsight_sites import site_table

        names = list(site_table(self.config, self.summary.n_layers))
        if self.backend != "transformer_lens":
            return names
        missing = set(spec_for(self.config.model_type).bridge_missing)
        return [name for name in names if block_relative(name) not in missing]

    def native(self) -> NativeTransformer:
        """The native model of this checkpoint, refused for a model spread over devices: it needs it whole on one."""
        if self.sharded:
            raise InterpError(f"{self.path} is spread over devices by a device_map; interp's own engine (fast "
                              "patching, TuCo, induction scores, clamps) needs the whole model on one device",
                              fix="load it without device_map (a smaller dtype, a bigger device), or use the hooked "
                                  "patching path")
        return super().native()

    @property
    def parallel_attn_mlp(self) -> bool:
        return parallel_attn_mlp(self.config)

    @property
    def learned_positions(self) -> bool:
        return learned_positions(self.config)


def pin_eager_attention(config_json: Path) -> None:
    """Record eager attention in config.json (transformers drops it on save) so every loader gets exact logits."""
    config = json.loads(config_json.read_text())
    config["attn_implementation"] = "eager"
    config_json.write_text(json.dumps(config, indent=2) + "\n")
