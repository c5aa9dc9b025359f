"""Where knowledge is stored, before and after post-training: patching maps (Du et al. 2025, section 1.1).

Pairs: each true statement with a false one ending in the same word and of the same token length, so the two
prompts differ only at the subject. Prompts: few-shot lines + statement + " This statement is:" (the same shuffled
shots for both members of a pair). For every layer and every position of the last `n_tokens` (statement + suffix),
the true run's residual stream after that block (resid_post) replaces the false run's at that one (layer, position),
and the map records logit(" TRUE") - logit(" FALSE") at the last position, averaged over pairs. Maps within each
model and across models (source model's true-run activations patched into the target's false run), their Pearson
correlations raw and after Du's `normalize` (20 equal bins over the value range; the lower 10 bins -> 0, the upper
ones -> 0.1 ... 1.0). Deviation: pairs are kept when their statements have the most common token length (the
reference filters by a fixed token template instead), which gives every map the same columns.

On the native backend the maps come from the patching engine; on a hook backend (a family interp has no native
implementation of) from the exact hooked patcher (`patching.hooked`), the same numbers in more forwards.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.options import check_context
from interp.base_vs_post.truth import SUFFIX, label_ids, truth_query
from interp.models.hooked import HookedModel
from interp.data.tokens import encode
from interp.data.datasets import Statement

if TYPE_CHECKING:
    from patching.engine import PatchResult
    from patching.metrics import Metric

ROLES = ("base", "post")
MAPS = (("base", "base"), ("post", "post"), ("base", "post"), ("post", "base"))  # (source, target)


def map_name(source: str, target: str) -> str:
    """"base", "post", or "base_to_post" for a cross-model map."""
    return source if source == target else f"{source}_to_{target}"


def pair_statements(statements: Sequence[Statement], tokenizer: Any, max_pairs: int | None = None, seed: int = 0,
                    bos: bool = True) -> list[tuple[Statement, Statement]]:
    """(true, false) pairs with the same last word and the same token length, each statement used once, shuffled."""
    def key(s: Statement) -> tuple[str, int]:
        return s.text.split()[-1], len(encode(tokenizer, s.text, bos))

    false_by_key: dict[tuple[str, int], list[Statement]] = defaultdict(list)
    for s in statements:
        if not s.label:
            false_by_key[key(s)].append(s)
    pairs = [(s, false_by_key[key(s)].pop(0)) for s in statements if s.label and false_by_key.get(key(s))]
    if not pairs:
        raise InterpError("no true statement has a false partner with the same last word and token length",
                          fix="use a dataset of paired statements such as Geometry-of-Truth cities.csv")
    random.Random(seed).shuffle(pairs)
    return pairs[:max_pairs] if max_pairs is not None else pairs


def paired_prompts(pairs: Sequence[tuple[Statement, Statement]], shots: Sequence[str], tokenizer: Any, seed: int,
                   max_pairs: int | None = None, bos: bool = True) -> tuple[Tensor, Tensor]:
    """Token ids of (true, false) few-shot prompts, keeping pairs of equal length at the most common length."""
    encoded = [tuple(encode(tokenizer, truth_query(s.text, shots, seed + i), bos) for s in pair)
               for i, pair in enumerate(pairs)]
    encoded = [(t, f) for t, f in encoded if len(t) == len(f)]
    if not encoded:
        raise InterpError("no pair of true and false prompts has equal token length",
                          fix="pair statements that differ only in their subject")
    modal = Counter(len(t) for t, _ in encoded).most_common(1)[0][0]
    kept = [p for p in encoded if len(p[0]) == modal][:max_pairs]
    return torch.tensor([t for t, _ in kept]), torch.tensor([f for _, f in kept])


def normalize(values: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """Du et al.'s `normalize`: 20 equal-width bins over [min, max]; bins 1-10 -> 0, bins 11-20 -> 0.1 ... 1.0."""
    flat = values.flatten().double()
    edges = torch.linspace(float(flat.min()) - 1e-5, float(flat.max()) + 1e-5, 21, dtype=torch.float64)
    index = torch.bucketize(flat, edges, right=True)  # == numpy.digitize(values, edges)
    levels = torch.cat((torch.zeros(10, dtype=torch.float64), torch.linspace(0.1, 1.0, 10, dtype=torch.float64)))
    return levels[index - 1].reshape(values.shape).to(values.dtype)


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two equally shaped maps, flattened."""
    x, y = a.flatten().double(), b.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x.norm() * y.norm()).clamp_min(1e-300))


@dataclass
class KnowledgeResult:
    """Patching maps `[layer, position]` over the last `len(tokens)` positions, keyed by `map_name`."""

    maps: dict[str, Float[Tensor, "layer pos"]]
    clean: dict[str, float]  # logit difference of the unpatched true run of each model
    corrupted: dict[str, float]  # ... and of the unpatched false run
    tokens: list[str]  # the first pair's true-statement tokens (axis labels)
    subject_positions: list[int]  # columns where some pair's true and false tokens differ
    n_pairs: int
    correlations: dict[str, float] = field(default_factory=dict)

    def tensors(self) -> dict[str, Tensor]:
        return {f"map_{k}": v for k, v in self.maps.items()}

    def summary(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "subject_positions": self.subject_positions, "n_pairs": self.n_pairs,
                "clean_logit_diff": self.clean, "corrupted_logit_diff": self.corrupted,
                "correlations": self.correlations}


def correlations(maps: Mapping[str, Tensor], subject_positions: Sequence[int]) -> dict[str, float]:
    """Pearson r of base vs post maps (raw and normalised) and of each cross map with its target's own map."""
    base, post = maps["base"], maps["post"]
    out = {"pearson_base_post": pearson(base, post),
           "pearson_base_post_normalized": pearson(normalize(base), normalize(post)),
           "max_abs_diff_normalized": float((normalize(base) - normalize(post)).abs().max())}
    if subject_positions:
        cols = list(subject_positions)
        out["max_abs_diff_normalized_subject"] = float((normalize(base) - normalize(post))[:, cols].abs().max())
    for source, target in MAPS:
        if source != target:
            out[f"pearson_{source}_to_{target}_vs_{target}"] = pearson(maps[map_name(source, target)], maps[target])
    return out


def knowledge_prompts(tokenizer: Any, n_ctx: int, pairs: Sequence[tuple[Statement, Statement]], shots: Sequence[str],
                      n_pairs: int | None = 64, seed: int = 0, bos: bool = True) -> tuple[Tensor, Tensor]:
    """Token ids of the (true, false) prompts `knowledge_maps` patches, after the checks it needs before any patching
    (one token each for TRUE and FALSE, every prompt within the context `n_ctx`); needs only the tokenizer."""
    label_ids(tokenizer)
    true_ids, false_ids = paired_prompts(pairs, shots, tokenizer, seed, n_pairs, bos)
    check_context(true_ids.tolist(), [tokenizer.decode(row) for row in true_ids], n_ctx)
    return true_ids, false_ids


def patch_resid_post(target: HookedModel, source: HookedModel | None, true_ids: Tensor, false_ids: Tensor,
                     metric: Metric, backend: str = "torch") -> PatchResult:
    """resid_post patching of `source`'s (default: `target`'s) true runs into `target`'s false runs: the fast engine
    (on `backend`: torch or triton) for a native model, the exact hooked patcher otherwise."""
    from patching import activation_patch
    from patching.hooked import hooked_activation_patch

    if target.backend != "native":
        return hooked_activation_patch(target, true_ids, false_ids, site="resid_post", metric=metric, source=source)
    return activation_patch(target, true_ids, false_ids, site="resid_post", metric=metric, source=source,
                            backend=backend)


def knowledge_maps(
    models: Mapping[str, HookedModel],
    pairs: Sequence[tuple[Statement, Statement]],
    shots: Sequence[str],
    n_pairs: int | None = 64,
    n_tokens: int | None = None,
    seed: int = 0,
    backend: str = "torch",
    bos: bool = True,
) -> KnowledgeResult:
    """The four patching maps (base, post, base->post, post->base) and their correlations.

    `pairs` from `pair_statements` (or a dataset's own pairs), `shots` from `truth.few_shot_lines`; `n_tokens` (the
    map's columns) defaults to the statement and the suffix; `bos` puts the tokenizer's BOS first in every prompt.
    The prompts are checked (`knowledge_prompts`) before any patching.
    """
    from patching import metrics

    tok = models["base"].tokenizer
    true_ids, false_ids = knowledge_prompts(tok, models["base"].summary.n_ctx, pairs, shots, n_pairs, seed, bos)
    t, f = label_ids(tok)
    width = true_ids.shape[1]
    n_tokens = min(width, n_tokens or width - len(encode(tok, truth_query("", shots, seed)[: -len(SUFFIX)], bos)))
    metric = metrics.LogitDiff(torch.full((len(true_ids),), t), torch.full((len(true_ids),), f))
    maps, clean, corrupted = {}, {}, {}
    for source, target in MAPS:
        res = patch_resid_post(models[target], None if source == target else models[source], true_ids, false_ids,
                               metric, backend)
        maps[map_name(source, target)] = res.raw[:, -n_tokens:].float().cpu()
        if source == target:
            clean[target], corrupted[target] = res.clean_metric, res.corrupted_metric
    diff = (true_ids != false_ids)[:, -n_tokens:].any(0)
    subject = [int(i) for i in torch.nonzero(diff).flatten()]
    labels = [tok.decode([i]) for i in true_ids[0, -n_tokens:].tolist()]
    return KnowledgeResult(maps, clean, corrupted, labels, subject, len(true_ids), correlations(maps, subject))
