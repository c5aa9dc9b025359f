"""The two hot spots of the patching engine, as plain-torch reference implementations behind a backend registry.

`build_variants` stacks one patched copy of an activation per variant; `readout` applies the final norm and only
the unembedding columns a metric reads. Faster implementations (the Triton kernels in `patching/kernels/`) register
themselves with `register_backend` and are picked with `get_backend("triton")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import InterpError
from interp.models.native import normalise


def build_variants(
    base: Float[Tensor, "batch slot width"],
    source: Float[Tensor, "batch slot width"],
    mask: Bool[Tensor, "variant slot"],
) -> Float[Tensor, "variant batch slot width"]:
    """out[v, b, s] = source[b, s] if mask[v, s] else base[b, s]."""
    return torch.where(mask[:, None, :, None], source[None], base[None])


def readout(
    resid_final: Float[Tensor, "n d_model"],
    ln_w: Float[Tensor, "d_model"],
    ln_b: Float[Tensor, "d_model"] | None,
    eps: float,
    kind: Literal["layernorm", "rmsnorm"],
    W_U_cols: Float[Tensor, "d_model k"],
    b_U_cols: Float[Tensor, "k"],
) -> Float[Tensor, "n k"]:
    """Final LayerNorm/RMSNorm, then only the unembedding columns needed."""
    x = normalise(resid_final, kind, eps).to(resid_final.dtype)
    x = x * ln_w + ln_b if ln_b is not None else x * ln_w
    return x @ W_U_cols + b_U_cols


@dataclass(frozen=True)
class Backend:
    """The engine's two replaceable operations."""

    name: str
    build_variants: Callable[..., Tensor]
    readout: Callable[..., Tensor]


_BACKENDS: dict[str, Backend | Callable[[], Backend]] = {"torch": Backend("torch", build_variants, readout)}


def register_backend(name: str, backend: Backend | Callable[[], Backend]) -> None:
    """Register a backend (or a zero-argument factory, called on first use so imports stay lazy)."""
    _BACKENDS[name] = backend


def _load_kernels() -> None:
    """Import `patching.kernels` if it exists, so its backend registers itself."""
    try:
        import patching.kernels  # noqa: F401
    except ImportError:
        pass


def get_backend(name: str = "torch") -> Backend:
    """The backend called `name`; "auto" is Triton on a CUDA machine when available, else torch."""
    if name != "torch":
        _load_kernels()
    if name == "auto":
        name = "triton" if "triton" in _BACKENDS and torch.cuda.is_available() else "torch"
    if name not in _BACKENDS:
        raise InterpError(f"unknown patching backend {name!r} (have {sorted(_BACKENDS)})",
                          fix="use --backend torch, or install the Triton kernels for --backend triton")
    entry = _BACKENDS[name]
    if not isinstance(entry, Backend):
        entry = entry()
        _BACKENDS[name] = entry
    return entry
