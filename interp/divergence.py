"""Divergences of next-token distributions, written once for every method that compares two of them (the lenses'
KL to the final distribution, token-level diffing, the refusal direction's KL score)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor


def kl_divergence(log_p: Float[Tensor, "*p_rows d_vocab"], log_q: Float[Tensor, "*q_rows d_vocab"]
                  ) -> Float[Tensor, "..."]:
    """KL(P || Q) = sum_v P(v) (log P(v) - log Q(v)) in nats, per row, from log-probabilities (broadcast against each
    other); callers take `log_softmax` in the dtype they need, once per distribution."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)
