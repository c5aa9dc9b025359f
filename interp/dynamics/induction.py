"""Induction-head scores for every head of one model (Olsson et al. 2022; TransformerLens `head_detector`).

All pattern scores are computed from `blocks.{l}.attn.hook_pattern` of a `NativeTransformer` on probe batches:
repeated random tokens `[BOS, r_1..r_T, r_1..r_T]` (induction, previous-token, duplicate-token), a random segment
repeated several times (Olsson's prefix matching), and documents or the repeats themselves (in-context-learning
score). The copying score reads the weights only. Scores are pure functions of tensors, so the same code scores a
plain checkpoint, a clamped training forward pass and a hand-built circuit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.models.native import HookFn, NativeTransformer

Patterns = Float[Tensor, "layer batch head query key"]
Forward = Callable[[NativeTransformer, Int[Tensor, "batch pos"]],
                   tuple[Float[Tensor, "batch pos d_vocab"], Patterns]]
TargetKind = Literal["previous_token", "duplicate_token", "induction"]
SCORE_NAMES = ("induction", "previous_token", "duplicate_token", "prefix_matching", "copying")


# --- forward pass -----------------------------------------------------------------------------------------------
def run_with_patterns(nt: NativeTransformer, tokens: Int[Tensor, "batch pos"],
                      hooks: Sequence[tuple[str, HookFn]] = ()) -> tuple[Float[Tensor, "batch pos d_vocab"], Patterns]:
    """Logits and every layer's attention pattern (after any `hooks`, which run first and may replace patterns)."""
    captured: list[Tensor] = []
    record = [(f"blocks.{layer}.attn.hook_pattern", lambda act, name: captured.append(act))
              for layer in range(nt.cfg.n_layers)]
    with nt.hooks([*hooks, *record]):
        logits = nt(tokens)
    return logits, torch.stack(captured)


# --- target patterns (TransformerLens head_detector conventions) -----------------------------------------------
def target_pattern(tokens: Int[Tensor, "batch pos"], kind: TargetKind) -> Bool[Tensor, "batch query key"]:
    """Where an ideal head of this kind attends: the previous position; earlier copies of the current token; or
    the positions right after earlier copies of the current token (induction). Causal, as in TransformerLens."""
    n, device = tokens.shape[-1], tokens.device
    ones = torch.ones(n, n, dtype=torch.bool, device=device)
    if kind == "previous_token":
        return (ones.tril(-1) & ~ones.tril(-2)).expand(tokens.shape[0], n, n)
    same = tokens[:, :, None] == tokens[:, None, :]
    if kind == "duplicate_token":
        return same & ones.tril(-1)
    if kind == "induction":  # key j qualifies when token j-1 equals the query token i and j-1 < i
        shifted = torch.zeros_like(same)
        shifted[:, :, 1:] = same[:, :, :-1]
        return shifted & ones.tril()
    raise ValueError(f"unknown target kind {kind!r}")


def target_score(patterns: Float[Tensor, "... batch head query key"], target: Bool[Tensor, "batch query key"],
                 rows: Bool[Tensor, "batch query"] | None = None) -> Float[Tensor, "... head"]:
    """Mean attention mass on target keys, over the query rows that have a target (and are in `rows`).

    On `[BOS, r, r]` with distinct r and the induction target this is the ARENA stripe score, the mean of
    A[i, i-T+1] over the second half; with the previous-token target it is the mean of A[i, i-1].
    """
    keep = target.any(-1) if rows is None else target.any(-1) & rows
    mass = einops.einsum(patterns, target.to(patterns.dtype), "... b h q k, b q k -> ... b h q")
    mass = mass * keep[:, None, :].to(mass.dtype)
    return einops.reduce(mass, "... b h q -> ... h", "sum") / keep.sum().clamp(min=1)


def detect_head(pattern: Float[Tensor, "query key"], target: Bool[Tensor, "query key"], *,
                exclude_bos: bool = False, exclude_current_token: bool = False,
                error_measure: Literal["mul", "abs"] = "mul") -> float:
    """TransformerLens `compute_head_attention_similarity_score` for one head on one prompt.

    "mul": sum(A * P) / sum(A), after zeroing the BOS column and/or the diagonal of A if asked;
    "abs": 1 - mean|A - P| * seq_len (rounded to 3 decimals, as TransformerLens does).
    """
    det = target.to(pattern.dtype)
    if error_measure == "mul":
        pattern = pattern.clone()
        if exclude_bos:
            pattern[:, 0] = 0
        if exclude_current_token:
            pattern.fill_diagonal_(0)
        return float((pattern * det).sum() / pattern.sum())
    diff = (pattern - det).abs()
    if exclude_bos:
        diff[:, 0] = 0
    if exclude_current_token:
        diff.fill_diagonal_(0)
    return 1 - round(float(diff.mean() * len(diff)), 3)


@torch.no_grad()
def detect_heads(nt: NativeTransformer, prompts: Sequence[Int[Tensor, " _pos"]], kind: TargetKind, *,
                 exclude_bos: bool = False, exclude_current_token: bool = False,
                 error_measure: Literal["mul", "abs"] = "mul",
                 forward: Forward | None = None) -> Float[Tensor, "layer head"]:
    """`detect_head`-style score of every head, averaged over prompts (each run on its own, unpadded)."""
    total = torch.zeros(nt.cfg.n_layers, nt.cfg.n_heads)
    for prompt in prompts:
        tokens = prompt[None].to(nt.W_E.device)
        _, patterns = (forward or run_with_patterns)(nt, tokens)
        target = target_pattern(tokens, kind)[0]
        for layer in range(nt.cfg.n_layers):
            for head in range(nt.cfg.n_heads):
                total[layer, head] += detect_head(patterns[layer, 0, head].float().cpu(), target.cpu(),
                                                  exclude_bos=exclude_bos, exclude_current_token=exclude_current_token,
                                                  error_measure=error_measure)
    return total / len(prompts)


# --- probe data --------------------------------------------------------------------------------------------------
def repeated_random_tokens(candidates: Int[Tensor, " n"], n_tokens: int, n_repeats: int, batch: int,
                           bos_id: int | None, generator: torch.Generator) -> Int[Tensor, "batch pos"]:
    """`[BOS, r_1..r_T, r_1..r_T, ...]`: T tokens drawn from `candidates` (distinct when there are enough of
    them, so the only repeats are the planted ones), repeated `n_repeats` times."""
    if len(candidates) >= n_tokens:
        idx = torch.rand(batch, len(candidates), generator=generator).argsort(-1)[:, :n_tokens]
    else:
        idx = torch.randint(len(candidates), (batch, n_tokens), generator=generator)
    segment = candidates[idx]
    tokens = einops.repeat(segment, "b t -> b (r t)", r=n_repeats)
    if bos_id is None:
        return tokens
    return torch.cat((torch.full((batch, 1), bos_id, dtype=tokens.dtype), tokens), dim=1)


@dataclass
class Probe:
    """The token batches every checkpoint of a run is scored on (the same ones for all, so curves compare)."""

    repeats: Int[Tensor, "batch pos"]  # [BOS, r, r]: induction, previous-token, duplicate-token, ICL fallback
    prefix: Int[Tensor, "batch prefix_pos"]  # [BOS, r, r, r, r]: prefix matching
    icl: Int[Tensor, "document doc_pos"] | None  # documents for the in-context-learning score (None: the repeats)
    early: list[int]  # token positions whose loss is "early in context"
    late: list[int]  # token positions whose loss is "late in context"
    icl_source: str


def make_probe(d_vocab: int, n_ctx: int, bos_id: int | None = None, exclude_ids: Sequence[int] = (),
               seq_len: int = 50, batch: int = 10, prefix_len: int = 25, prefix_repeats: int = 4,
               documents: Int[Tensor, "batch pos"] | None = None, seed: int = 0) -> Probe:
    """Probe batches for a vocabulary and context length; `seq_len` and `prefix_len` shrink to fit `n_ctx`.

    The ICL score uses `documents` (loss at token 500 minus token 50 as in Olsson et al., scaled down to shorter
    documents: tokens L/10 and L-1) when given, else the repeats (mean loss on the second copy minus the first).
    """
    exclude = set(exclude_ids) | ({bos_id} if bos_id is not None else set())
    candidates = torch.tensor([i for i in range(d_vocab) if i not in exclude])
    n_bos = int(bos_id is not None)
    seq_len = min(seq_len, (n_ctx - n_bos) // 2)
    prefix_len = min(prefix_len, (n_ctx - n_bos) // prefix_repeats)
    gen = torch.Generator().manual_seed(seed)
    repeats = repeated_random_tokens(candidates, seq_len, 2, batch, bos_id, gen)
    prefix = repeated_random_tokens(candidates, prefix_len, prefix_repeats, batch, bos_id, gen)
    if documents is None:
        first = list(range(n_bos + 1, n_bos + seq_len))  # token 0 of a copy is unpredictable in both halves
        return Probe(repeats, prefix, None, first, [t + seq_len for t in first], "repeated random tokens")
    documents = documents[:, :n_ctx]
    length = documents.shape[1]
    late = min(500, length - 1)
    early = min(50, max(1, length // 10))
    return Probe(repeats, prefix, documents, [early], [late], "documents")


# --- scores ------------------------------------------------------------------------------------------------------
def loss_by_position(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
                     ) -> Float[Tensor, " pos_minus_1"]:
    """Mean next-token loss per position: entry t is the loss on token t+1."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    return nll.mean(0)


def icl_score(losses: Float[Tensor, " pos_minus_1"], early: Sequence[int], late: Sequence[int]) -> float:
    """Olsson et al.'s in-context-learning score: loss late in context minus loss early (negative = ICL).
    `early`/`late` are token positions (averaged when several)."""
    at = lambda ts: float(losses[[t - 1 for t in ts]].mean())  # noqa: E731
    return at(late) - at(early)


@torch.no_grad()
def copying_scores(nt: NativeTransformer) -> Float[Tensor, "layer head"]:
    """Eigenvalue copying proxy (Elhage et al. 2021): sum(lambda) / sum(|lambda|) of each head's OV circuit
    W_E diag(ln1.w) W_V W_O diag(ln_final.w) W_U, in [-1, 1]; +1 = copies the attended token.

    Deviations from Olsson et al.: norms are reduced to their weights (no centring or scaling), positional
    embeddings are left out. Computed on the [d_head, d_head] matrix, which has the same non-zero eigenvalues.
    """
    cfg = nt.cfg
    group = cfg.n_heads // cfg.n_kv_heads
    W_E = nt.W_E.double() * cfg.embed_scale
    unembed = nt.ln_final.w.double()[:, None] * nt.W_U.double()
    back = unembed @ W_E  # [d_model, d_model]: residual -> logits -> embedding of that token
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer, block in enumerate(nt.blocks):
        ln1 = block.ln1.w.double()[:, None]
        for head in range(cfg.n_heads):
            W_V = ln1 * block.attn.W_V[head // group].double()
            small = block.attn.W_O[head].double() @ back @ W_V  # [d_head, d_head]
            eig = torch.linalg.eigvals(small)
            total = eig.abs().sum()
            out[layer, head] = float(eig.sum().real / total) if total > 0 else 0.0
    return out


@torch.no_grad()
def checkpoint_scores(nt: NativeTransformer, probe: Probe, forward: Forward | None = None
                      ) -> dict[str, Tensor]:
    """Every score of every head for one model: `induction`, `previous_token`, `duplicate_token`,
    `prefix_matching`, `copying` ([layer, head]), `icl_score` and `loss` (scalars), `loss_by_position` [pos-1]."""
    run = forward or run_with_patterns
    device = nt.W_E.device
    repeats, prefix = probe.repeats.to(device), probe.prefix.to(device)
    logits, patterns = run(nt, repeats)
    scores = {kind: target_score(patterns.float(), target_pattern(repeats, kind)).cpu()
              for kind in ("induction", "previous_token", "duplicate_token")}
    _, prefix_patterns = run(nt, prefix)
    scores["prefix_matching"] = target_score(prefix_patterns.float(), target_pattern(prefix, "induction")).cpu()
    scores["copying"] = copying_scores(nt)
    if probe.icl is not None:
        docs = probe.icl.to(device)
        losses = loss_by_position(run(nt, docs)[0], docs).cpu()
    else:
        losses = loss_by_position(logits, repeats).cpu()
    scores["icl_score"] = torch.tensor(icl_score(losses, probe.early, probe.late))
    scores["loss"] = losses.mean()
    scores["loss_by_position"] = losses
    return scores
