"""Entropy-neuron candidates of the last MLP layer and their overlap between two models (Du et al. 2025, 1.4).

For each last-layer neuron i: norm_i = |w_out_i|, LogitVar_i = Var_v cos(w_out_i, W_U[:, v]) (unbiased variance over
the vocabulary, as `torch.var` in the reference). Candidates: among neurons with norm above the 75th percentile, the
10 with the lowest LogitVar (all of them if 10 or fewer). IoU = |S1 & S2| / |S1 | S2|.

Weights are processed as TransformerLens's `from_pretrained` defaults do, which the reference used: the final norm's
scale is folded into W_U (and W_U centred over d_model for LayerNorm models; b_U plays no part here); W_U is centred
over the vocabulary (center_unembed); W_out is centred over d_model for LayerNorm models only (center_writing_weights,
which TransformerLens skips for RMSNorm). `process=False` uses the raw weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.models.native import NativeTransformer


def last_layer_weights(nt: NativeTransformer, process: bool = True
                       ) -> tuple[Float[Tensor, "d_mlp d_model"], Float[Tensor, "d_model d_vocab"]]:
    """W_out of the last MLP and W_U, processed like TransformerLens's defaults unless `process=False`."""
    w_out = nt.blocks[-1].mlp.W_out.detach().float()
    w_u = nt.W_U.detach().float()
    if not process:
        return w_out, w_u
    layernorm = nt.cfg.norm == "layernorm"
    w_u = nt.ln_final.scale().detach()[:, None] * w_u  # the effective weight (Gemma: 1 + w)
    if layernorm:
        w_u = w_u - w_u.mean(0, keepdim=True)
        w_out = w_out - w_out.mean(-1, keepdim=True)
    return w_out, w_u - w_u.mean(-1, keepdim=True)


def neuron_stats(nt: NativeTransformer, process: bool = True) -> tuple[Float[Tensor, "d_mlp"], Float[Tensor, "d_mlp"]]:
    """(output norm, LogitVar) of every last-layer MLP neuron."""
    w_out, w_u = last_layer_weights(nt, process)
    cos = (w_out / w_out.norm(dim=1, keepdim=True)) @ (w_u / w_u.norm(dim=0, keepdim=True))
    return w_out.norm(dim=1), cos.var(dim=1)


def candidates(norm: Float[Tensor, "d_mlp"], logit_var: Float[Tensor, "d_mlp"], norm_top: float = 0.25,
               n_lowest: int = 10) -> Int[Tensor, "k"]:
    """Neurons with norm above the (1 - norm_top) quantile, then the `n_lowest` by LogitVar (sorted ids)."""
    keep = torch.nonzero(norm > torch.quantile(norm, 1 - norm_top)).flatten()
    if len(keep) > n_lowest:
        keep = keep[logit_var[keep].argsort()[:n_lowest]]
    return keep.sort().values


def iou(a: Int[Tensor, "k"], b: Int[Tensor, "m"]) -> float:
    """Intersection over union of two neuron-id sets (0 for two empty sets)."""
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


@dataclass
class EntropyResult:
    """Per-model neuron statistics, candidate sets and their IoU."""

    norm: dict[str, Tensor]
    logit_var: dict[str, Tensor]
    candidates: dict[str, Tensor]
    iou: float

    def tensors(self) -> dict[str, Tensor]:
        return {f"{kind}_{m}": t for kind, d in (("neuron_norm", self.norm), ("logit_var", self.logit_var),
                                                 ("entropy_candidates", self.candidates)) for m, t in d.items()}

    def summary(self) -> dict[str, object]:
        return {"iou": self.iou, "candidates": {m: c.tolist() for m, c in self.candidates.items()}}


def entropy_neurons(models: dict[str, NativeTransformer], process: bool = True, norm_top: float = 0.25,
                    n_lowest: int = 10) -> EntropyResult:
    """Statistics and candidate sets for two models (keys e.g. "base", "post") and the IoU of the sets."""
    if len(models) != 2:
        raise ValueError("entropy_neurons compares exactly two models")
    norm, var, cand = {}, {}, {}
    for name, nt in models.items():
        norm[name], var[name] = neuron_stats(nt, process)
        cand[name] = candidates(norm[name], var[name], norm_top, n_lowest)
    a, b = cand.values()
    return EntropyResult(norm, var, cand, iou(a, b))
