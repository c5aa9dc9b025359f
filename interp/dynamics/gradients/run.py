"""Resumable layer-gradient sweep over a dataset: per-sample statistics for every layer and projection.

Progress is saved after every batch to a partial file, tagged with a fingerprint of what the numbers depend on (the
weights' content hash and config, the options and the token ids); a rerun with the same inputs continues from there,
any other inputs (replaced weights included) start afresh. A non-finite loss or statistic is an error naming the
sample and the checkpoint, never a number in the results.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor, nn

from interp.dynamics.gradients.data import Encoded
from interp.dynamics.gradients.stats import STATISTICS, mad_table, singular_value_stats
from interp.dynamics.gradients.per_sample import IGNORE, layout, per_sample_gradients
from interp.errors import InterpError
from interp.progress import progress
from interp.results import atomic_save_tensors


@dataclass
class LayerGradients:
    """Per-sample statistics of one condition: `per_sample["nuclear.q"]` is [sample, layer]."""

    per_sample: dict[str, Float[Tensor, "sample layer"]]
    loss: Float[Tensor, "sample"]
    n_response: Float[Tensor, "sample"]

    @property
    def projections(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key.split(".", 1)[1] for key in self.per_sample))

    @property
    def n_layers(self) -> int:
        return next(iter(self.per_sample.values())).shape[1]

    def curves(self) -> dict[str, Float[Tensor, "layer"]]:
        """Average over samples of every statistic, per layer: {"nuclear.q": [layer], ...}."""
        return {key: value.mean(0) for key, value in self.per_sample.items()}

    def mad(self, stat: str = "nuclear") -> dict[str, dict[str, float]]:
        """MAD table of one statistic's curves: {projection: {"all", "early", "middle", "late"}}."""
        curves = self.curves()
        return {proj: mad_table(curves[f"{stat}.{proj}"]) for proj in self.projections}

    def tensors(self) -> dict[str, Tensor]:
        """Everything, named for results.safetensors: curves, `samples.*` per-sample rows, `loss`, `n_response`."""
        samples = {f"samples.{key}": value for key, value in self.per_sample.items()}
        return {**self.curves(), **samples, "loss": self.loss, "n_response": self.n_response}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> LayerGradients:
        per_sample = {key.removeprefix("samples."): v for key, v in tensors.items() if key.startswith("samples.")}
        return cls(per_sample, tensors["loss"], tensors["n_response"])


def fingerprint(identity: str, samples: list[Encoded], include_mlp: bool) -> str:
    """A hash of what the numbers depend on: the model's `identity` (weights' content hash, config, dtype), the
    options and the token ids."""
    data = [identity, include_mlp, [[s.ids, s.n_prompt] for s in samples]]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def _empty(n_samples: int, n_layers: int, projections: tuple[str, ...]) -> LayerGradients:
    nan = math.nan
    per_sample = {f"{s}.{p}": torch.full((n_samples, n_layers), nan) for s in STATISTICS for p in projections}
    return LayerGradients(per_sample, torch.full((n_samples,), nan), torch.zeros(n_samples))


def _resume(path: Path, stamp: str) -> tuple[LayerGradients, Tensor] | None:
    """The saved progress at `path` if it was made with the same fingerprint."""
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as handle:
        if (handle.metadata() or {}).get("fingerprint") != stamp:
            return None
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return LayerGradients.from_tensors(tensors), tensors["done"].bool()


def _pad(samples: list[Encoded], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded ids and labels (IGNORE on prompt and padding)."""
    width = max(len(s.ids) for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    for row, s in enumerate(samples):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        labels[row, s.n_prompt: len(s.ids)] = torch.tensor(s.ids[s.n_prompt:])
    return ids.to(device), labels.to(device)


def layer_gradients(
    model: nn.Module, samples: list[Encoded], include_mlp: bool = False, batch_size: int = 8,
    partial: Path | None = None, identity: str | None = None, name: str = "gradients",
) -> LayerGradients:
    """Gradient statistics for every sample, layer and projection; resumes from the `partial` file when given.

    `identity` says what the model is (its weights' content hash, config and dtype): with `partial`, it keys the
    resume, so it is required there. `name` (the checkpoint) labels progress and errors. Batches group samples of
    similar length to limit padding.
    """
    if partial is not None and identity is None:
        raise ValueError("resuming from a partial file needs the model's identity (e.g. its weights' sha256)")
    lay = layout(model)
    projections = lay.projections(include_mlp)
    stamp = fingerprint(identity or "", samples, include_mlp)
    resumed = _resume(partial, stamp) if partial is not None else None
    fresh = (_empty(len(samples), len(lay.layers), projections), torch.zeros(len(samples), dtype=torch.bool))
    result, done = resumed or fresh
    todo = sorted((i for i in range(len(samples)) if not done[i]), key=lambda i: len(samples[i].ids))
    device = next(model.parameters()).device
    batches = [todo[start: start + batch_size] for start in range(0, len(todo), batch_size)]
    for batch in progress(batches, desc=f"gradients {name}", unit="batch"):
        ids, labels = _pad([samples[i] for i in batch], device)
        losses, stream = per_sample_gradients(model, ids, labels, include_mlp)
        finite = torch.isfinite(losses).cpu()
        rows = torch.tensor(batch)
        for layer, projection, grad in stream:
            for stat, values in singular_value_stats(grad).items():
                result.per_sample[f"{stat}.{projection}"][rows, layer] = values.cpu()
                finite &= torch.isfinite(values).cpu()
        _check_finite(finite, [samples[i] for i in batch], name)
        result.loss[rows] = losses.cpu()
        result.n_response[rows] = torch.tensor([float(samples[i].n_response) for i in batch])
        done[rows] = True
        if partial is not None:
            atomic_save_tensors(partial, {**result.tensors(), "done": done.to(torch.uint8)}, {"fingerprint": stamp})
    return result


def _check_finite(finite: Tensor, samples: list[Encoded], name: str) -> None:
    """Refuse a batch in which a sample's loss or gradient statistic is NaN or infinite, naming the first one."""
    for ok, sample in zip(finite.tolist(), samples):
        if not ok:
            raise InterpError(f"{name}: the loss or a gradient statistic of {sample.source or 'a sample'} is not "
                              "finite (a zero gradient, or an overflow in half precision)",
                              fix="check or remove that sample; with --dtype bfloat16/float16 try float32")


def summary_of(result: LayerGradients) -> dict[str, Any]:
    """The JSON summary: counts, projections and the MAD table of every statistic."""
    return {
        "n_samples": int(result.loss.numel()), "n_layers": result.n_layers,
        "projections": list(result.projections), "mean_loss": float(result.loss.mean()),
        "mad": {stat: result.mad(stat) for stat in STATISTICS},
    }
