"""Resumable layer-gradient sweep over a dataset: per-sample statistics for every layer and projection.

Progress is saved after every batch to `partial.safetensors` in the output directory, tagged with a fingerprint of
the model, options and token ids; a rerun with the same inputs continues from there, any other inputs start afresh.
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
from tqdm.auto import tqdm

from interp.dynamics.gradient_data import Encoded
from interp.dynamics.gradient_stats import STATISTICS, mad_table, mean_over_samples, singular_value_stats
from interp.dynamics.gradients import IGNORE, layout, per_sample_gradients
from interp.results import atomic_save_tensors

PARTIAL_FILE = "partial.safetensors"


@dataclass
class LayerGradients:
    """Per-sample statistics of one condition: `per_sample["nuclear.q"]` is [sample, layer] (NaN rows: skipped)."""

    per_sample: dict[str, Float[Tensor, "sample layer"]]
    loss: Float[Tensor, "sample"]
    n_response: Float[Tensor, "sample"]

    @property
    def projections(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key.split(".", 1)[1] for key in self.per_sample))

    @property
    def n_layers(self) -> int:
        return next(iter(self.per_sample.values())).shape[1]

    @property
    def n_used(self) -> int:
        """Samples that entered the averages (non-empty response, finite statistics)."""
        return int((~self.loss.isnan()).sum())

    def curves(self) -> dict[str, Float[Tensor, "layer"]]:
        """Average over samples of every statistic, per layer: {"nuclear.q": [layer], ...}."""
        return {key: mean_over_samples(value) for key, value in self.per_sample.items()}

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


def fingerprint(model: nn.Module, samples: list[Encoded], include_mlp: bool) -> str:
    """A hash of what the numbers depend on: weights' identity (config + a parameter checksum), options, tokens."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        digest.update(repr([float(p.double().sum()) for p in model.parameters()]).encode())
    digest.update(json.dumps([include_mlp, [[s.ids, s.n_prompt] for s in samples]]).encode())
    return digest.hexdigest()


def _empty(n_samples: int, n_layers: int, projections: tuple[str, ...]) -> LayerGradients:
    nan = math.nan
    per_sample = {f"{s}.{p}": torch.full((n_samples, n_layers), nan) for s in STATISTICS for p in projections}
    return LayerGradients(per_sample, torch.full((n_samples,), nan), torch.zeros(n_samples))


def _resume(path: Path, stamp: str) -> tuple[LayerGradients, Tensor] | None:
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
    partial_dir: Path | None = None, desc: str = "gradients",
) -> LayerGradients:
    """Gradient statistics for every sample, layer and projection; resumes from `partial_dir` when given.

    Samples with no response token (e.g. truncated away) keep NaN rows and are left out of the averages. Batches
    group samples of similar length to limit padding.
    """
    lay = layout(model)
    projections = lay.projections(include_mlp)
    stamp = fingerprint(model, samples, include_mlp)
    partial = partial_dir / PARTIAL_FILE if partial_dir is not None else None
    resumed = _resume(partial, stamp) if partial is not None else None
    fresh = (_empty(len(samples), len(lay.layers), projections), torch.zeros(len(samples), dtype=torch.bool))
    result, done = resumed or fresh
    todo = sorted((i for i in range(len(samples)) if not done[i] and samples[i].n_response > 0),
                  key=lambda i: len(samples[i].ids))
    device = next(model.parameters()).device
    batches = [todo[start: start + batch_size] for start in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch"):
        ids, labels = _pad([samples[i] for i in batch], device)
        losses, stream = per_sample_gradients(model, ids, labels, include_mlp)
        rows = torch.tensor(batch)
        for layer, name, grad in stream:
            for stat, values in singular_value_stats(grad).items():
                result.per_sample[f"{stat}.{name}"][rows, layer] = values.cpu()
        result.loss[rows] = losses.cpu()
        result.n_response[rows] = torch.tensor([float(samples[i].n_response) for i in batch])
        done[rows] = True
        if partial is not None:
            atomic_save_tensors(partial, {**result.tensors(), "done": done.to(torch.uint8)}, {"fingerprint": stamp})
    return result


def summary_of(result: LayerGradients) -> dict[str, Any]:
    """The JSON summary: counts, projections and the MAD table of every statistic."""
    return {
        "n_samples": int(result.loss.numel()), "n_used": result.n_used, "n_layers": result.n_layers,
        "projections": list(result.projections), "mean_loss": float(result.loss.nanmean()),
        "mad": {stat: result.mad(stat) for stat in STATISTICS},
    }
