"""Build the patched-variant batch in one launch: out[v, b, s] = source[b, s] if mask[v, s] else base[b, s].

The torch path materialises `base` once per variant and then overwrites the patched slots (two passes over the
output); this kernel reads each output element's source exactly once and writes it once.
"""

from __future__ import annotations

import triton
import triton.language as tl
from jaxtyping import Bool, Float
from torch import Tensor
import torch


@triton.jit
def _build_variants_kernel(
    base_ptr, source_ptr, mask_ptr, out_ptr,
    n_rows, width,  # rows = batch * slot
    n_slot,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr,
):
    variant = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_W)
    row_ok = rows < n_rows
    slot = rows % n_slot
    take_source = tl.load(mask_ptr + variant * n_slot + slot, mask=row_ok, other=0) != 0
    offsets = rows[:, None] * width + cols[None, :]
    ok = row_ok[:, None] & (cols[None, :] < width)
    base = tl.load(base_ptr + offsets, mask=ok & ~take_source[:, None], other=0.0)
    source = tl.load(source_ptr + offsets, mask=ok & take_source[:, None], other=0.0)
    value = tl.where(take_source[:, None], source, base)
    tl.store(out_ptr + variant * n_rows * width + offsets, value, mask=ok)


def build_variants(
    base: Float[Tensor, "batch slot width"],
    source: Float[Tensor, "batch slot width"],
    mask: Bool[Tensor, "variant slot"],
) -> Float[Tensor, "variant batch slot width"]:
    """Triton twin of `patching.variants.build_variants`."""
    batch, n_slot, width = base.shape
    base, source = base.contiguous(), source.contiguous()
    mask_u8 = mask.to(torch.uint8).contiguous()
    out = torch.empty((mask.shape[0], batch, n_slot, width), dtype=base.dtype, device=base.device)
    n_rows = batch * n_slot
    block_w = triton.next_power_of_2(width)
    block_r = max(1, min(triton.next_power_of_2(n_rows), 8192 // block_w))
    grid = (mask.shape[0], triton.cdiv(n_rows, block_r))
    _build_variants_kernel[grid](base, source, mask_u8, out, n_rows, width, n_slot, BLOCK_R=block_r, BLOCK_W=block_w)
    return out
