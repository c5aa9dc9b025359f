"""Lenses: read the residual stream at every layer as a next-token distribution.

The logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens") applies the model's final norm and
unembedding to the residual stream entering each block; the tuned lens (Belrose et al. 2023, "Eliciting Latent
Predictions from Transformers with the Tuned Lens") first maps it through one affine translator per layer,
initialised at the identity and trained to minimise KL(final distribution || lens distribution). Stack entry `l` is
the residual stream entering block `l` (TransformerLens's `accumulated_resid`: `l_pre`), entry `n_layers` the final
residual stream (`final_post`), which both lenses read unchanged (it is the model's own output).

Deviations from Belrose et al.: Adam on the prompts the caller gives (the paper: SGD with Nesterov momentum on a
pretraining corpus), translators stored as full matrices initialised at the identity (the paper: `h + A h + b`
with `A = 0`; the same map), and no translator for the final entry (the paper's lens has none either).
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import einsum, rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.divergence import kl_divergence
from interp.models.hooked import HookedModel

LENSES = {"logit": False, "tuned": True}  # the two lenses by name: whether the tuned lens's translators apply



def stack_names(n_layers: int) -> list[str]:
    """The hooks of the lens stack: each block's `hook_resid_pre`, then the last block's `hook_resid_post`."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def residual_stack(model: HookedModel, tokens: Int[Tensor, "batch pos"]
                   ) -> tuple[Float[Tensor, "entry batch pos d_model"], Float[Tensor, "batch pos d_vocab"]]:
    """The residual stream at every stack entry and the model's logits, in one forward."""
    names = stack_names(model.summary.n_layers)
    logits, cache = model.run_with_cache(tokens, names=names)
    return torch.stack([cache[name] for name in names]), logits


class TunedLens(torch.nn.Module):
    """One affine translator per block input (entries 0..n_layers-1), identity at initialisation; the final entry
    is passed through unchanged."""

    def __init__(self, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(d_model).repeat(n_layers, 1, 1))
        self.bias = torch.nn.Parameter(torch.zeros(n_layers, d_model))

    def translate(self, inner: Float[Tensor, "layer *tokens d_model"]) -> Float[Tensor, "layer *tokens d_model"]:
        """Entries 0..n_layers-1 through their translators, `h @ W_l + b_l`."""
        flat = rearrange(inner, "layer ... d -> layer (...) d")
        moved = einsum(flat, self.weight, "layer n d, layer d e -> layer n e") + self.bias[:, None]
        return moved.reshape(inner.shape)

    def forward(self, stack: Float[Tensor, "entry *tokens d_model"]) -> Float[Tensor, "entry *tokens d_model"]:
        """The whole stack: entries 0..n_layers-1 translated, the final one kept."""
        return torch.cat([self.translate(stack[:-1]), stack[-1:]])


def lens_logits(model: HookedModel, stack: Float[Tensor, "entry *tokens d_model"], lens: TunedLens | None = None
                ) -> Float[Tensor, "entry *tokens d_vocab"]:
    """Logit lens (`lens` None: final norm + unembedding of every entry) or tuned lens (translated first)."""
    return model.native().unembed(stack if lens is None else lens(stack))


def kl_to_final(logits: Float[Tensor, "*rows d_vocab"], final: Float[Tensor, "*final d_vocab"]
                ) -> Float[Tensor, "*rows"]:
    """KL(final || lens) in nats, per row (`final` broadcast against the lens's rows): what the tuned lens
    minimises."""
    return kl_divergence(final.log_softmax(-1), logits.log_softmax(-1))


def entropy(logits: Float[Tensor, "*rows d_vocab"]) -> Float[Tensor, "*rows"]:
    """Entropy of each row's distribution, in nats."""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def answer_rank_prob(logits: Float[Tensor, "*rows d_vocab"], answer: Int[Tensor, "*rows"]
                     ) -> tuple[Int[Tensor, "*rows"], Float[Tensor, "*rows"]]:
    """Rank of the answer token (0 = the top prediction; ties counted in its favour) and its probability."""
    picked = logits.gather(-1, answer[..., None])
    return (logits > picked).sum(-1), logits.softmax(-1).gather(-1, answer[..., None])[..., 0]


def train_tuned_lens(model: HookedModel, stack: Float[Tensor, "entry n d_model"], final: Float[Tensor, "n d_vocab"],
                     steps: int, lr: float, batch: int, seed: int) -> tuple[TunedLens, Float[Tensor, "step"]]:
    """A tuned lens fitted by Adam to the token rows given (the training split), each step on `batch` rows drawn
    without replacement; returns it and the loss (KL summed over entries, mean over rows) at every step."""
    n_layers, d_model = stack.shape[0] - 1, stack.shape[-1]
    lens = TunedLens(n_layers, d_model).to(stack.device)
    optimiser = torch.optim.Adam(lens.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    frozen = [p for p in model.native().parameters() if p.requires_grad]
    for p in frozen:  # only the translators learn; the model's gradients are not computed
        p.requires_grad_(False)
    for _ in range(steps):
        rows = torch.randperm(stack.shape[1], generator=generator)[:batch].to(stack.device)
        with torch.enable_grad():
            translated = lens.translate(stack[:-1, rows])
            loss = kl_to_final(model.native().unembed(translated), final[rows]).mean(-1).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        losses.append(float(loss.detach()))
    for p in frozen:
        p.requires_grad_(True)
    return lens.eval(), torch.tensor(losses)


def save_lens(path: Path, lens: TunedLens, key: str, loss: Float[Tensor, "step"]) -> None:
    """Write a lens and its training loss atomically as safetensors, with `key` (what it was trained from) in the
    metadata."""
    from interp.executors import KEY
    from interp.results import atomic_save_tensors

    state = {k: v.detach().cpu() for k, v in lens.state_dict().items()}
    atomic_save_tensors(path, state | {"loss": loss.detach().cpu()}, {KEY: key})


def load_lens(path: Path, key: str) -> tuple[TunedLens, Float[Tensor, "step"]] | None:
    """The lens saved at `path` and its training loss when it was trained from exactly `key`; None (train again)
    otherwise (missing, damaged, or trained from something else)."""
    from interp.executors import read_partial

    state = read_partial(path, key)
    if state is None or not {"weight", "bias", "loss"} <= set(state):
        return None
    lens = TunedLens(*state["weight"].shape[:2])
    lens.load_state_dict({k: state[k] for k in ("weight", "bias")})
    return lens.eval(), state["loss"]


def masked_mean(values: Float[Tensor, "*lead batch pos"], mask: Bool[Tensor, "batch pos"]
                ) -> Float[Tensor, "*lead pos"]:
    """Mean over prompts at each position, counting only real tokens (0 where no prompt reaches a position)."""
    weights = mask.to(values.dtype)
    return (values * weights).sum(-2) / weights.sum(0).clamp(min=1)


def lens_stats(model: HookedModel, stack: Float[Tensor, "entry batch pos d_model"],
               final: Float[Tensor, "batch pos d_vocab"], lens: TunedLens
               ) -> dict[str, Float[Tensor, "entry batch pos"]]:
    """KL to the final distribution and entropy under both lenses (`kl_logit`, `kl_tuned`, `entropy_logit`,
    `entropy_tuned`), one prompt at a time (a batch's lens logits of every entry may not fit in memory)."""
    rows = []
    with torch.no_grad():
        for prompt in range(stack.shape[1]):
            found = {}
            for name, chosen in LENSES.items():
                logits = lens_logits(model, stack[:, prompt], lens if chosen else None)
                found |= {f"kl_{name}": kl_to_final(logits, final[prompt]), f"entropy_{name}": entropy(logits)}
            rows.append(found)
    return {name: torch.stack([row[name] for row in rows], dim=1) for name in rows[0]}


def answer_stats(model: HookedModel, last: Float[Tensor, "entry prompt d_model"], answers: Int[Tensor, "prompt"],
                 lens: TunedLens) -> dict[str, Tensor]:
    """The answer's rank and probability under both lenses (`answer_rank_logit`, `answer_prob_tuned`, ...) from the
    residual stream at each prompt's last position."""
    found = {}
    with torch.no_grad():
        for name, chosen in LENSES.items():
            logits = lens_logits(model, last, lens if chosen else None)
            rank, prob = answer_rank_prob(logits, answers.expand(logits.shape[:-1]))
            found |= {f"answer_rank_{name}": rank, f"answer_prob_{name}": prob}
    return found
