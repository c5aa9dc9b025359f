"""Synthetic in-context tasks for clamped training: repeated random tokens, and Reddy-style bursty classification.

Both put BOS at position 0 and mark which tokens are trained on (`targets`); a task is solvable only in context,
so an induction head is the way to low loss. Token ids: 0 = BOS, then content tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import einops
import torch
from jaxtyping import Bool, Int
from torch import Tensor

BOS_ID = 0
TaskName = Literal["repeat", "bursty"]
TASKS: tuple[str, ...] = ("repeat", "bursty")


@dataclass
class TaskBatch:
    """Tokens and the positions of the tokens that count in the loss (predicted from everything before them)."""

    tokens: Int[Tensor, "batch pos"]
    targets: Bool[Tensor, "batch pos"]


@dataclass(frozen=True)
class RepeatTask:
    """`[BOS, r_1..r_T, r_1..r_T, ...]` filled to `seq_len` tokens, with a period T drawn per sequence from
    [min_period, max_period] (so no fixed positional offset solves it) and distinct r's; every token after the
    first period is a target."""

    n_tokens: int = 32
    seq_len: int = 33
    min_period: int = 4
    max_period: int = 12

    @property
    def d_vocab(self) -> int:
        return self.n_tokens + 1

    def sample(self, batch: int, generator: torch.Generator) -> TaskBatch:
        """A fresh batch of sequences."""
        n = self.seq_len - 1
        segment = torch.rand(batch, self.n_tokens, generator=generator).argsort(-1)[:, :self.max_period] + 1
        period = torch.randint(self.min_period, self.max_period + 1, (batch, 1), generator=generator)
        pos = torch.arange(n)[None, :]
        body = segment.gather(1, pos % period)
        tokens = torch.cat((torch.full((batch, 1), BOS_ID), body), dim=1)
        targets = torch.cat((torch.zeros(batch, 1, dtype=torch.bool), pos >= period), dim=1)
        return TaskBatch(tokens, targets)

    def describe(self) -> dict[str, Any]:
        return {"task": "repeat", **asdict(self)}


@dataclass(frozen=True)
class BurstyTask:
    """Reddy (2023)-style few-shot classification over tokens: `BOS x_1 l_1 .. x_N l_N x_q l_q`, items from
    `n_classes` Zipf(alpha)-distributed classes. A bursty sequence (probability `p_bursty`) holds N/B classes each
    B times and queries one of them; the others draw items i.i.d. Labels follow class k -> k mod n_labels, except in a
    fraction `p_relabel` of sequences, where each context class gets a fresh random label (Singh et al.'s relabelling,
    the token analogue of Reddy's novel classes): only in-context copying solves those. Target: the query label.

    Deviation from Reddy: items are tokens (no within-class noise, no positional one-hots); the readout is the
    transformer's own unembedding rather than a separate MLP classifier."""

    n_classes: int = 64
    n_labels: int = 16
    n_pairs: int = 8
    burstiness: int = 2
    p_bursty: float = 1.0
    p_relabel: float = 1.0
    alpha: float = 0.0

    @property
    def d_vocab(self) -> int:
        return 1 + self.n_classes + self.n_labels

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 3

    def sample(self, batch: int, generator: torch.Generator) -> TaskBatch:
        """A fresh batch of sequences."""
        N, B = self.n_pairs, self.burstiness
        probs = torch.arange(1, self.n_classes + 1, dtype=torch.float).pow(-self.alpha)
        distinct = torch.multinomial(probs.expand(batch, -1), N // B, replacement=False, generator=generator)
        bursty_ctx = einops.repeat(distinct, "b k -> b (k r)", r=B)
        bursty_ctx = bursty_ctx.gather(1, torch.rand(batch, N, generator=generator).argsort(-1))
        iid_ctx = torch.multinomial(probs.expand(batch, -1), N, replacement=True, generator=generator)
        is_bursty = torch.rand(batch, 1, generator=generator) < self.p_bursty
        context = torch.where(is_bursty, bursty_ctx, iid_ctx)
        bursty_query = context.gather(1, torch.randint(N, (batch, 1), generator=generator))
        iid_query = torch.multinomial(probs.expand(batch, -1), 1, generator=generator)
        query = torch.where(is_bursty, bursty_query, iid_query)
        classes = torch.cat((context, query), dim=1)
        relabel = torch.randint(self.n_labels, (batch, self.n_classes), generator=generator)
        fixed = torch.arange(self.n_classes).expand(batch, -1) % self.n_labels
        mapping = torch.where(torch.rand(batch, 1, generator=generator) < self.p_relabel, relabel, fixed)
        labels = mapping.gather(1, classes)
        items = classes + 1
        label_tokens = labels + 1 + self.n_classes
        body = einops.rearrange(torch.stack((items, label_tokens), dim=-1), "b n two -> b (n two)")
        tokens = torch.cat((torch.full((batch, 1), BOS_ID), body), dim=1)
        targets = torch.zeros_like(tokens, dtype=torch.bool)
        targets[:, -1] = True
        return TaskBatch(tokens, targets)

    def describe(self) -> dict[str, Any]:
        return {"task": "bursty", **asdict(self)}


def make_task(name: TaskName) -> RepeatTask | BurstyTask:
    """The task with its default (small, two-core friendly) settings."""
    return {"repeat": RepeatTask, "bursty": BurstyTask}[name]()
