"""Layer-gradient statistics of Li, Li & Zhou (2025, "What Happened in LLMs Layers when Trained for Fast vs. Slow
Thinking: A Gradient Perspective"): singular-value summaries of a gradient matrix, MAD across layers, and RD.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

STATISTICS = ("nuclear", "sigma1_ratio", "frobenius")
THIRDS = ("early", "middle", "late")

# The paper's hard-coded early/middle/late splits (`code_vis/exp_utils.py`): depth -> (end of early, end of middle).
PAPER_THIRDS: dict[int, tuple[int, int]] = {28: (7, 21), 26: (7, 20), 32: (10, 20), 42: (12, 30)}


def singular_value_stats(grads: Float[Tensor, "*batch out inp"]) -> dict[str, Float[Tensor, "*batch"]]:
    """Nuclear norm (sum of singular values), sigma_1 / nuclear, and Frobenius norm of each matrix, in one batched SVD.

    A zero matrix gets a NaN ratio (0/0), which the sweep refuses, naming the sample.
    """
    sigma = torch.linalg.svdvals(grads.float())
    nuclear = sigma.sum(-1)
    return {
        "nuclear": nuclear,
        "sigma1_ratio": sigma[..., 0] / nuclear,
        "frobenius": sigma.square().sum(-1).sqrt(),
    }


def mad(curve: Float[Tensor, "layer"]) -> float:
    """Mean absolute difference of adjacent layers, (1/(L-1)) sum_l |s_{l+1} - s_l|; NaN for fewer than 2 layers."""
    if curve.numel() < 2:
        return math.nan
    return float(curve.diff().abs().mean())


def layer_thirds(n_layers: int) -> dict[str, range]:
    """Early/middle/late layer ranges: the paper's table for depths 26, 28, 32 and 42, else near-equal thirds.

    Deviation from the paper (which handles only those four depths): any other depth is cut into three contiguous
    groups whose sizes differ by at most one, the extra layers going to the earlier groups (12 -> 4/4/4, 8 -> 3/3/2).
    """
    if n_layers in PAPER_THIRDS:
        first, second = PAPER_THIRDS[n_layers]
    else:
        size, extra = divmod(n_layers, 3)
        first = size + (extra > 0)
        second = first + size + (extra > 1)
    return dict(zip(THIRDS, (range(0, first), range(first, second), range(second, n_layers))))


def mad_table(curve: Float[Tensor, "layer"]) -> dict[str, float]:
    """MAD over the whole curve and within each third (differences only between layers of the same third)."""
    thirds = layer_thirds(curve.numel())
    table = {"all": mad(curve)}
    for name, layers in thirds.items():
        table[name] = mad(curve[layers.start:layers.stop])
    return table


def relative_difference(a: Float[Tensor, "layer"], b: Float[Tensor, "layer"]) -> float:
    """RD(a, b) = mean_l |a_l - b_l| / |a_l|, relative to the first curve (zeros in `a` become 1e-10, as the paper)."""
    if a.shape != b.shape:
        raise ValueError(f"curves differ in length: {tuple(a.shape)} vs {tuple(b.shape)}")
    denom = torch.where(a == 0, torch.full_like(a, 1e-10), a).abs()
    return float(((a - b).abs() / denom).mean())
