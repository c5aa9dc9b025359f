"""Token-level diffing of a base and a post-trained model on the same prompts: per token, KL in both directions
between the two next-token distributions and the positions whose predictions changed most; per layer and position,
the norm of the residual-stream difference (resid_post, post minus base); and the activation-difference lens (ADL)
of Minder et al. 2025, "Narrow Finetuning Leaves Clearly Readable Traces in Activation Differences" (arXiv
2510.13900): the mean difference delta[l, j] = mean over texts of h_post[l, j] - h_base[l, j] at each of the first k
positions j of unrelated text, read through a lens (the logit lens: final norm + unembedding) as the tokens it promotes.

Deviations from Minder et al.: the lens is applied to resid_post of every layer (they pick a middle layer), also to
the mean over the k positions besides each position alone, and the lenses built in are the logit lens and a tuned
lens (Belrose et al. 2023, `tuned_lens`; no Patchscope, no steering). The tokens no model predicts (BOS, padding,
unknown: `unpredicted_ids`) are left out of its ranking: their unembedding rows are never trained toward, so their
logits drift and crowd the top (on the embedded zoo all three topped the last layer's reading). Which model's norm
and unembedding read the difference is the caller's choice (`Lens`).

Batches are padded on the right and run without a mask: a causal model's real positions never see the padding after
them, so their numbers equal unpadded forwards; padded positions are zeroed and masked out of every statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.divergence import kl_divergence
from interp.models.hooked import HookedModel

if TYPE_CHECKING:
    from interp.dynamics.lenses import TunedLens

BATCH = 16  # prompts per forward: bounds the memory of the logits and the cached residual streams
DIRECTIONS = ("base||post", "post||base")  # KL(P || Q): P the first model's next-token distribution
# A lens reads a residual-stream vector at a layer as logits: (layer, resid [..., d_model]) -> [..., d_vocab]. The
# logit lens ignores the layer; the tuned lens (`tuned_lens`) applies that layer's translator first.
Lens = Callable[[int, Tensor], Tensor]


def resid_names(n_layers: int) -> list[str]:
    """The residual stream after every block, in layer order."""
    return [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def token_kl(base_logits: Float[Tensor, "batch pos d_vocab"], post_logits: Float[Tensor, "batch pos d_vocab"]
             ) -> Float[Tensor, "direction batch pos"]:
    """[KL(base || post), KL(post || base)] in nats of the next-token distributions at every position."""
    log_b, log_p = base_logits.float().log_softmax(-1), post_logits.float().log_softmax(-1)
    return torch.stack([kl_divergence(log_b, log_p), kl_divergence(log_p, log_b)])


def paired_forward(models: Mapping[str, HookedModel], tokens: Int[Tensor, "batch pos"], n_layers: int
                   ) -> dict[str, tuple[Tensor, Tensor]]:
    """{role: (logits [batch, pos, vocab], resid_post [layer, batch, pos, d_model])} of each model on `tokens`, in
    float32 on the models' device (reduced there, so only per-token numbers come back to the CPU)."""
    names = resid_names(n_layers)
    out = {}
    with torch.no_grad():
        for role, model in models.items():
            logits, cache = model.run_with_cache(tokens.to(model.device), names=names)
            out[role] = (logits.float(), torch.stack([cache[n].float() for n in names]))
    return out


@dataclass
class TokenDiff:
    """Per prompt and position (right-padded; `mask` 1 on real tokens): KL both ways, resid_post difference norms,
    and each model's top next-token prediction. Padded positions hold 0."""

    kl: Float[Tensor, "direction prompt pos"]
    norms: Float[Tensor, "layer prompt pos"]
    pred_base: Int[Tensor, "prompt pos"]
    pred_post: Int[Tensor, "prompt pos"]
    mask: Int[Tensor, "prompt pos"]

    def mean_kl(self) -> dict[str, float]:
        """Mean KL per direction over the real tokens only."""
        n = self.mask.sum()
        return {d: float(self.kl[i].sum() / n) for i, d in enumerate(DIRECTIONS)}


def token_diff(models: Mapping[str, HookedModel], tokens: Int[Tensor, "prompt pos"], mask: Int[Tensor, "prompt pos"],
               n_layers: int) -> TokenDiff:
    """`TokenDiff` of base and post on right-padded `tokens`, `BATCH` prompts per forward."""
    parts = []
    for start in range(0, tokens.shape[0], BATCH):
        run = paired_forward(models, tokens[start:start + BATCH], n_layers)
        (logits_b, resid_b), (logits_p, resid_p) = run["base"], run["post"]
        m = mask[start:start + BATCH].to(logits_b.device)
        parts.append(tuple(x.cpu() for x in (token_kl(logits_b, logits_p) * m,
                                             torch.linalg.vector_norm(resid_p - resid_b, dim=-1) * m,
                                             logits_b.argmax(-1) * m, logits_p.argmax(-1) * m)))
    kl, norms, pred_b, pred_p = (torch.cat(xs, dim=-2) for xs in zip(*parts))  # each along its prompt axis
    return TokenDiff(kl, norms, pred_b, pred_p, mask)


def top_changed(kl: Float[Tensor, "direction prompt pos"], mask: Int[Tensor, "prompt pos"], k: int
                ) -> Int[Tensor, "rank 2"]:
    """(prompt, position) of the `k` real tokens with the largest KL(base||post) + KL(post||base) (Jeffreys
    divergence), largest first; fewer when there are fewer tokens."""
    score = kl.sum(0).masked_fill(mask == 0, -torch.inf).flatten()
    top = score.topk(min(k, int(mask.sum()))).indices
    return torch.stack([top // mask.shape[1], top % mask.shape[1]], dim=-1)


def mean_difference(models: Mapping[str, HookedModel], tokens: Int[Tensor, "text pos"], mask: Int[Tensor, "text pos"],
                    n_layers: int) -> Float[Tensor, "layer pos d_model"]:
    """Minder et al.'s delta: the mean over texts of resid_post(post) - resid_post(base) at each position of the
    (right-padded, truncated) `tokens`, each position averaged over the texts that reach it."""
    sums = []
    for start in range(0, tokens.shape[0], BATCH):
        run = paired_forward(models, tokens[start:start + BATCH], n_layers)
        diff = run["post"][1] - run["base"][1]
        m = einops.rearrange(mask[start:start + BATCH].float().to(diff.device), "b p -> 1 b p 1")
        sums.append((diff * m).sum(1).cpu())
    return torch.stack(sums).sum(0) / einops.rearrange(mask.sum(0).clamp_min(1).float(), "p -> 1 p 1")


def with_mean_position(delta: Float[Tensor, "layer pos d_model"]) -> Float[Tensor, "layer slot d_model"]:
    """`delta` with one more slot: the mean over its positions (the difference of the first k positions pooled)."""
    return torch.cat([delta, delta.mean(1, keepdim=True)], dim=1)


def unpredicted_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokens no model is trained to predict next: BOS, padding and unknown (never EOS, which a chat model
    learns to end with, even where it doubles as the pad token)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    found = (getattr(tokenizer, f"{kind}_token_id", None) for kind in ("bos", "pad", "unk"))
    return sorted({int(i) for i in found if i is not None and i != eos})


def lens_top(lens: Lens, delta: Float[Tensor, "layer slot d_model"], k: int, exclude: Sequence[int] = ()
             ) -> tuple[Int[Tensor, "layer slot rank"], Float[Tensor, "layer slot rank"]]:
    """The activation-difference lens: (token ids, logits) of the `k` tokens `lens` reads most strongly from each
    layer's mean difference, at each slot (position, or the pooled mean), the `exclude`d ids left out."""
    with torch.no_grad():
        logits = torch.stack([lens(layer, delta[layer]).float().cpu() for layer in range(delta.shape[0])])
    logits[..., list(exclude)] = -torch.inf
    top = logits.topk(min(k, logits.shape[-1] - len(exclude)), dim=-1)
    return top.indices, top.values


def logit_lens(model: HookedModel) -> Lens:
    """The logit lens of `model` (its final norm and unembedding, `NativeTransformer.unembed`), on its device."""
    nt = model.native()

    def read(layer: int, resid: Tensor) -> Tensor:
        return nt.unembed(resid.to(device=model.device, dtype=nt.W_U.dtype))

    return read


def tuned_lens(model: HookedModel, lens: TunedLens) -> Lens:
    """The tuned lens (Belrose et al. 2023) of `model` read on resid_post: block l's output is the residual stream
    entering block l+1, the lens stack's entry l+1, so it goes through translator l+1; the last block's output is the
    stack's final entry, which the tuned lens reads unchanged (the logit lens)."""
    read = logit_lens(model)

    def apply(layer: int, resid: Tensor) -> Tensor:
        entry = layer + 1
        if entry < lens.weight.shape[0]:
            weight, bias = lens.weight[entry], lens.bias[entry]
            resid = resid.to(weight) @ weight + bias  # `TunedLens.translate` of one entry
        return read(layer, resid)

    return apply


def train_text_lens(model: HookedModel, tokens: Int[Tensor, "text pos"], mask: Int[Tensor, "text pos"], steps: int,
                    lr: float, batch: int, seed: int) -> tuple[TunedLens, Float[Tensor, "step"]]:
    """A tuned lens of `model` and its training loss, fitted (`train_tuned_lens`) on every real token of the
    right-padded `tokens`, their residual streams gathered `BATCH` texts per forward."""
    from interp.dynamics.lenses import residual_stack, train_tuned_lens

    stacks, finals = [], []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], BATCH):
            stack, logits = residual_stack(model, tokens[start:start + BATCH].to(model.device))
            real = mask[start:start + BATCH].bool().to(stack.device)
            stacks.append(stack[:, real])
            finals.append(logits[real])
    return train_tuned_lens(model, torch.cat(stacks, dim=1), torch.cat(finals), steps, lr, batch, seed)
