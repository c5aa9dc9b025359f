"""Triton kernels for the patching engine: the patched-variant batch in one launch, and a fused final readout.

Each kernel has a plain-torch twin in `patching.variants` with the same signature; `tests/test_kernels.py` checks
them against each other (on CPU through `TRITON_INTERPRET=1`). Importing this package never fails: `available()`
says whether Triton can launch here (a CUDA device, or the interpreter).
"""

from __future__ import annotations

import os

from patching.kernels.readout import readout
from patching.kernels.scatter import build_variants
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


register_backend("triton", Backend("triton", build_variants, readout))
