"""What every base-vs-post analysis does with its two checkpoints before and around the compute: check them as a
pair (before loading), load them on one backend, record them as inputs; plus the option checks they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp.errors import InterpError


def pair_inputs(base: Path, post: Path, files: list[tuple[str, Path | None]]) -> list[dict[str, Any]]:
    """`write_results`' inputs of a base/post analysis: both checkpoints, then each (role, file) given."""
    from interp.results import input_identity

    return [input_identity("base", base), input_identity("post", post),
            *(input_identity(role, path) for role, path in files if path is not None)]


def check_pair(base: Path, post: Path, device: str) -> Any:
    """Before loading: the device usable, both checkpoints complete and sound, and of one architecture, shapes and
    tokenizer. Returns the base checkpoint's `ModelSummary` (layers, context), read without loading weights."""
    from interp.checkpoints import check_compatible, read_summary
    from interp.loading import resolve_device, verify_checkpoint

    resolve_device(device)
    verify_checkpoint(base)
    verify_checkpoint(post)
    check_compatible(base, post)
    return read_summary(base)


def load_pair(base: Path, post: Path, device: str, why: str = "; prompts are batched by length, not padded"
              ) -> dict[str, Any]:
    """Both checkpoints on the native backend, or on TransformerLens's when interp has no native implementation of
    their family (after `check_pair`: one architecture, so one notice, ending with `why`)."""
    from interp.models.auto_backend import auto_backend
    from interp.loading import load

    backend = auto_backend(base, why)
    return {"base": load(base, backend=backend, device=device), "post": load(post, backend=backend, device=device)}


def parse_layers(option: str, text: str | None, n_layers: int) -> list[int] | None:
    """`8,9,10` -> [8, 9, 10], each a layer of the model and none twice; None stays None."""
    from interp.options import parse_int_list

    layers = parse_int_list(option, text, 0, n_layers - 1)
    if layers is not None and len(set(layers)) < len(layers):
        raise InterpError(f"{option} {text!r} names a layer twice", fix="name each layer once")
    return layers


def check_site(base: Path, hook: str) -> None:
    """Refuse, before loading, a residual site the architecture lacks (resid_mid of a parallel GPT-NeoX block)."""
    from transformers import AutoConfig

    from interp.loading import config_dir
    from interp.models.hf import parallel_attn_mlp
    from probes.steering import site_names

    config = AutoConfig.from_pretrained(str(config_dir(base)), local_files_only=True)
    site_names([0], [hook], parallel_attn_mlp(config))
