"""Difference-in-means directions and logistic probes, per layer, with held-out accuracy and cross-model cosines.

The mass-mean probe follows Marks & Tegmark's `MMProbe` as used by Du et al. (2025): direction
theta = mean(positive) - mean(negative), then a one-dimensional logistic regression on x . theta for scale and bias.
Logistic regression is fitted with torch L-BFGS (no scikit-learn); the objective is mean binary cross-entropy plus
`l2 / 2 * |w|^2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def diff_in_means(acts: Float[Tensor, "... n d"], labels: Bool[Tensor, "n"]) -> Float[Tensor, "... d"]:
    """mean(acts[labels]) - mean(acts[~labels]) over the sample axis (every leading axis, e.g. layer, kept)."""
    labels = labels.bool()
    if labels.all() or not labels.any():
        raise ValueError("difference in means needs both classes among the labels")
    return acts[..., labels, :].mean(-2) - acts[..., ~labels, :].mean(-2)


def unit(v: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """v / |v| along the last axis."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Cosine similarity along the last axis: per layer for [layer, d] direction stacks."""
    return (unit(a.float()) * unit(b.float())).sum(-1)


def center_by_group(acts: Float[Tensor, "... n d"], groups: Int[Tensor, "n"] | None) -> Float[Tensor, "... n d"]:
    """Subtract each group's (dataset's) mean, as Du et al.'s `collect_acts(center=True)` does per dataset."""
    if groups is None:
        return acts - acts.mean(-2, keepdim=True)
    out = acts.clone()
    for g in groups.unique():
        sel = groups == g
        out[..., sel, :] = acts[..., sel, :] - acts[..., sel, :].mean(-2, keepdim=True)
    return out


def fit_logistic(x: Float[Tensor, "n k"], y: Bool[Tensor, "n"], l2: float = 1e-4, max_iter: int = 100
                 ) -> tuple[Float[Tensor, "k"], Float[Tensor, ""]]:
    """Weights and bias minimising mean BCE(x @ w + b, y) + l2/2 |w|^2, by L-BFGS with strong Wolfe line search."""
    x, target = x.double(), y.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def loss_fn() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, target) + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(loss_fn)
    return w.detach().float(), b.detach().float()


@dataclass
class LinearProbe:
    """score(x) = x . weight + bias per layer; predicts the positive class where score > 0."""

    weight: Float[Tensor, "layer d"]
    bias: Float[Tensor, "layer"]

    def score(self, acts: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer n"]:
        return torch.einsum("lnd,ld->ln", acts.float(), self.weight) + self.bias[:, None]

    def accuracy(self, acts: Float[Tensor, "layer n d"], labels: Bool[Tensor, "n"]) -> Float[Tensor, "layer"]:
        """Fraction of samples classified correctly, per layer."""
        return ((self.score(acts) > 0) == labels.bool()[None]).float().mean(-1)


def mass_mean_probe(acts: Float[Tensor, "layer n d"], labels: Bool[Tensor, "n"], l2: float = 1e-6
                    ) -> tuple[LinearProbe, Float[Tensor, "layer d"]]:
    """Du et al.'s MMProbe per layer: the difference-in-means direction theta plus a 1-D logistic fit on x . theta.

    Returns the probe and theta itself (the direction used for cosines and steering).
    """
    theta = diff_in_means(acts.float(), labels)
    weights, biases = [], []
    for layer in range(acts.shape[0]):
        s = (acts[layer].float() @ theta[layer])[:, None]
        scale = s.std().clamp_min(1e-12)
        a, b = fit_logistic(s / scale, labels, l2=l2)
        weights.append(theta[layer] * a[0] / scale)
        biases.append(b)
    return LinearProbe(torch.stack(weights), torch.stack(biases)), theta


def logistic_probe(acts: Float[Tensor, "layer n d"], labels: Bool[Tensor, "n"], l2: float = 1e-2) -> LinearProbe:
    """An L2-regularised logistic-regression probe per layer, fitted on standardised features."""
    weights, biases = [], []
    for layer in range(acts.shape[0]):
        x = acts[layer].float()
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
        w, b = fit_logistic((x - mu) / sd, labels, l2=l2)
        weights.append(w / sd)
        biases.append(b - (w / sd) @ mu)
    return LinearProbe(torch.stack(weights), torch.stack(biases))


def train_test_split(n: int, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[Int[Tensor, "train"], Int[Tensor, "test"]]:
    """A seeded random split of range(n) into train and held-out indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(n * test_fraction))
    return perm[n_test:].sort().values, perm[:n_test].sort().values
