"""Triton kernels for the patching engine: the patched-variant batch in one launch, and a fused final readout.

Each kernel has a plain-torch twin in `patching.variants` with the same signature; `tests/test_kernels.py` checks
them against each other (on CPU through `TRITON_INTERPRET=1`). Importing this package never fails: `available()`
says whether Triton can launch here (a CUDA device, or the interpreter).
"""

from __future__ import annotations

import os

from patching.kernels.readout import readout
from patching.kernels.scatter import build_variants
from interp.errors import InterpError
from patching.variants import Backend, register_backend

__all__ = ["available", "build_variants", "readout"]


def available() -> bool:
    """True when Triton kernels can run: on CUDA, or on CPU tensors with TRITON_INTERPRET=1."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def _triton_backend() -> Backend:
    """The Triton backend, or a clear error where Triton cannot launch kernels."""
    if not available():
        raise InterpError("the Triton backend needs a CUDA GPU (or TRITON_INTERPRET=1 to debug on CPU)",
                          fix="use --backend torch, or --backend auto to pick Triton only on CUDA")
    return Backend("triton", build_variants, readout)


register_backend("triton", _triton_backend)
