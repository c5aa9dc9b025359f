"""Per-sample gradients of each layer's projection matrices under a response-only loss (Li, Li & Zhou 2025).

Gradients are taken with respect to the original Hugging Face weights, in the `nn.Linear` layout [out, in]; which
matrices hold q, k, v, o (and gate, up, down) is each family's `gradients` layout in `interp.models.arch` (fused
projections such as GPT-2's `c_attn` or Phi-3's `qkv_proj` are split into their parts).

Per-sample gradients come from one batched forward/backward: a linear map y = W x + b has dL/dW = sum_t dy_t x_t^T,
so each sample's gradient is an einsum of the layer's input and the loss gradient at its output (the trick behind
Opacus). Samples are right-padded; causal attention never looks ahead, so padding does not touch real positions.
On CPU this beat both `torch.func.vmap(grad(...))` and one backward pass per sample (benchmarks/gradients.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.models.arch import Layout

ATTENTION = ("q", "k", "v", "o")
MLP = ("gate", "up", "down")
IGNORE = -100


def layout(model: nn.Module) -> Layout:
    """The projection layout of a Hugging Face causal LM: its family's spec (`interp.models.arch`), else found by
    the usual module names (`gradient_generic`)."""
    from interp.models.arch import spec_for

    spec = spec_for(model.config.model_type)
    if spec is None:
        from interp.dynamics.gradients.generic import generic_layout

        return generic_layout(model)
    return spec.gradients(model)


def response_loss(logits: Float[Tensor, "batch pos vocab"], labels: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch"]:
    """Each sample's mean next-token cross-entropy over its labelled (response) tokens, as HF's causal-LM loss.

    The cross-entropy runs over [token, vocab] rows of the labelled positions (at least float32), the layout PyTorch's
    log-softmax computes accurately: over a transposed [vocab, position] tensor the per-sample gradient norms of a
    49k-vocabulary model were ~15x further from float64. Each sample's token losses are summed in float64.
    """
    targets = labels[:, 1:]
    labelled = targets != IGNORE
    rows = logits[:, :-1][labelled]
    token_loss = F.cross_entropy(rows.to(torch.promote_types(rows.dtype, torch.float32)), targets[labelled],
                                 reduction="none")
    sums = torch.zeros(len(labels), dtype=torch.float64, device=logits.device)
    sums = sums.index_add(0, labelled.nonzero()[:, 0], token_loss.double())
    return (sums / labelled.sum(1)).to(token_loss.dtype)


@contextmanager
def _capture(modules: list[nn.Module]) -> Iterator[dict[int, tuple[Tensor, Tensor]]]:
    """Record each module's (input, output) of the forward pass, keyed by its index in `modules`."""
    records: dict[int, tuple[Tensor, Tensor]] = {}

    def hook(index: int) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            if index in records:
                raise RuntimeError(f"{type(_module).__name__} ran twice in one forward pass")
            records[index] = (args[0], out)
            # the model continues on a copy: an in-place edit of the output (OLMo's q/k/v clipping, `clamp_`) would
            # otherwise change the recorded tensor, and its gradient would skip the clipping
            return out.clone()

        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def per_sample_gradients(
    model: nn.Module, ids: Int[Tensor, "batch pos"], labels: Int[Tensor, "batch pos"], include_mlp: bool = False,
) -> tuple[Float[Tensor, "batch"], Iterator[tuple[int, str, Float[Tensor, "batch out inp"]]]]:
    """Per-sample response losses and a lazy stream of (layer, projection, per-sample d loss / d W).

    `labels` are `ids` with IGNORE on prompt and padding positions. The stream computes one matrix at a time so
    that only one [batch, out, in] gradient is alive at once (they are large for real models).
    """
    lay = layout(model)
    matrices = lay.matrices(include_mlp)
    modules = [layer.get_submodule(m.module) for layer in lay.layers for m in matrices]
    with torch.enable_grad(), _capture(modules) as records:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, use_cache=False).logits
        losses = response_loss(logits, labels)
        if len(records) != len(modules):
            raise RuntimeError(f"captured {len(records)} of {len(modules)} projection matrices")
        grads_out = torch.autograd.grad(losses.sum(), [records[i][1] for i in range(len(modules))])
    inputs = [records[i][0].detach() for i in range(len(modules))]

    def stream() -> Iterator[tuple[int, str, Tensor]]:
        for index, (x, dy) in enumerate(zip(inputs, grads_out)):
            layer, matrix = divmod(index, len(matrices))
            spec = matrices[matrix]
            grad = torch.einsum("bto,bti->boi", dy.float(), x.float())
            yield from ((layer, name, g) for name, g in zip(spec.names, spec.split(grad)))

    return losses.detach(), stream()
