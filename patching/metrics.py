"""Patching metrics: functions of the final position's logits, averaged over the prompt batch.

A metric declares which unembedding columns it reads (`columns`, None = the whole vocabulary), so the engine
computes only those. Called on full logits `[batch, pos, d_vocab]` a metric returns a scalar, exactly like the
metric functions TransformerLens's `patching` module takes, so one object serves both (the tests rely on it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor


class Metric:
    """Base class: `reduce` maps final-position logits `[..., batch, k]` to `[...]` (mean over the batch)."""

    columns: Int[Tensor, "k"] | None = None
    name: str = "metric"

    def reduce(self, logits: Float[Tensor, "... batch k"]) -> Float[Tensor, "..."]:
        raise NotImplementedError

    def with_clean(self, clean_logits: Float[Tensor, "batch d_vocab"]) -> "Metric":
        """This metric bound to the clean run's final logits (only KL divergence needs them)."""
        return self

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        last = logits[:, -1]
        return self.reduce(last if self.columns is None else last[:, self.columns.to(last.device)])


def _column_index(answer_ids: Tensor, wrong_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The unique vocabulary ids read, and each prompt's answer and wrong index into them."""
    cols, inverse = torch.unique(torch.cat((answer_ids, wrong_ids)), return_inverse=True)
    n = answer_ids.numel()
    return cols, inverse[:n], inverse[n:]


@dataclass(frozen=True, eq=False)
class LogitDiff(Metric):
    """Mean over prompts of logit(answer) - logit(wrong) at the final position; reads two columns per prompt."""

    answer_ids: Int[Tensor, "batch"]
    wrong_ids: Int[Tensor, "batch"]
    name: str = "logit_diff"

    def __post_init__(self) -> None:
        answers, wrongs = (torch.as_tensor(t).flatten() for t in (self.answer_ids, self.wrong_ids))
        cols, a, w = _column_index(answers, wrongs)
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "_a", a)
        object.__setattr__(self, "_w", w)

    def reduce(self, logits: Float[Tensor, "... batch k"]) -> Float[Tensor, "..."]:
        rows = torch.arange(logits.shape[-2], device=logits.device)
        diff = logits[..., rows, self._a.to(logits.device)] - logits[..., rows, self._w.to(logits.device)]
        return diff.mean(-1)


@dataclass(frozen=True, eq=False)
class AnswerProb(Metric):
    """Mean over prompts of the answer token's probability at the final position (needs the full vocabulary)."""

    answer_ids: Int[Tensor, "batch"]
    name: str = "answer_prob"

    def reduce(self, logits: Float[Tensor, "... batch d_vocab"]) -> Float[Tensor, "..."]:
        probs = torch.softmax(logits.float(), dim=-1)
        ids = torch.as_tensor(self.answer_ids, device=logits.device).flatten()
        return probs[..., torch.arange(ids.numel(), device=logits.device), ids].mean(-1)


@dataclass(frozen=True, eq=False)
class KLDivergence(Metric):
    """Mean over prompts of KL(clean || patched) at the final position; the engine supplies the clean logits."""

    reference: Float[Tensor, "batch d_vocab"] | None = None
    name: str = "kl_divergence"

    def with_clean(self, clean_logits: Float[Tensor, "batch d_vocab"]) -> "Metric":
        return self if self.reference is not None else replace(self, reference=clean_logits)

    def reduce(self, logits: Float[Tensor, "... batch d_vocab"]) -> Float[Tensor, "..."]:
        if self.reference is None:
            raise ValueError("KLDivergence needs the clean run's logits: pass reference= or let the engine bind it")
        ref = torch.log_softmax(self.reference.float().to(logits.device), dim=-1)
        out = torch.log_softmax(logits.float(), dim=-1)
        return (ref.exp() * (ref - out)).sum(-1).mean(-1)


@dataclass(frozen=True, eq=False)
class Custom(Metric):
    """Any callable of logits `[batch, 1, d_vocab]` (the final position only) returning a scalar."""

    fn: Callable[[Tensor], Tensor]
    name: str = "custom"

    def reduce(self, logits: Float[Tensor, "... batch d_vocab"]) -> Float[Tensor, "..."]:
        flat = logits.reshape(-1, *logits.shape[-2:])
        values = torch.stack([torch.as_tensor(self.fn(row[:, None, :])) for row in flat])
        return values.reshape(logits.shape[:-2])


def as_metric(metric: Metric | Callable[[Tensor], Tensor]) -> Metric:
    """A `Metric` as is; a plain callable wrapped in `Custom`."""
    return metric if isinstance(metric, Metric) else Custom(metric)
