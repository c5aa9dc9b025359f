"""Fused final-position readout: final norm, then only the unembedding columns a metric reads.

A logit-difference sweep needs two logits per variant; the full unembedding computes d_vocab of them. This kernel
normalises each row in registers and takes the dot products with the k needed columns, never writing the normalised
residual back to memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Float
from torch import Tensor


@triton.jit
def _readout_kernel(
    x_ptr, w_ptr, b_ptr, wu_ptr, bu_ptr, out_ptr,
    n_rows, d_model, eps,
    K: tl.constexpr, LAYERNORM: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < n_rows
    col_ok = cols < d_model
    ok = row_ok[:, None] & col_ok[None, :]
    x = tl.load(x_ptr + rows[:, None] * d_model + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if LAYERNORM:
        mean = tl.sum(x, axis=1) / d_model
        x = tl.where(ok, x - mean[:, None], 0.0)
    var = tl.sum(x * x, axis=1) / d_model
    x = x * (1.0 / tl.sqrt(var + eps))[:, None]
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    x = x * w[None, :]
    if HAS_BIAS:
        x = x + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    for j in tl.static_range(K):
        wu = tl.load(wu_ptr + cols * K + j, mask=col_ok, other=0.0).to(tl.float32)
        logit = tl.sum(x * wu[None, :], axis=1) + tl.load(bu_ptr + j).to(tl.float32)
        tl.store(out_ptr + rows * K + j, logit, mask=row_ok)


def readout(
    resid_final: Float[Tensor, "n d_model"],
    ln_w: Float[Tensor, "d_model"],
    ln_b: Float[Tensor, "d_model"] | None,
    eps: float,
    kind: str,
    W_U_cols: Float[Tensor, "d_model k"],
    b_U_cols: Float[Tensor, "k"],
) -> Float[Tensor, "n k"]:
    """Triton twin of `patching.variants.readout` (fp32 accumulation; output in fp32)."""
    if kind not in ("layernorm", "rmsnorm"):
        raise ValueError(f"unknown norm kind {kind!r}")
    n, d_model = resid_final.shape
    k = W_U_cols.shape[1]
    out = torch.empty((n, k), dtype=torch.float32, device=resid_final.device)
    block_d = triton.next_power_of_2(d_model)
    block_n = max(1, min(triton.next_power_of_2(n), 16384 // block_d))
    bias = ln_b if ln_b is not None else ln_w  # never read when HAS_BIAS is False
    _readout_kernel[(triton.cdiv(n, block_n),)](
        resid_final.contiguous(), ln_w.contiguous(), bias.contiguous(), W_U_cols.contiguous(), b_U_cols.contiguous(),
        out, n, d_model, eps, K=k, LAYERNORM=kind == "layernorm", HAS_BIAS=ln_b is not None,
        BLOCK_N=block_n, BLOCK_D=block_d,
    )
    return out
