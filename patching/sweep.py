"""`interp patch`'s engine room: sweep every checkpoint of a run, resumably, and write one results directory.

Each finished checkpoint is saved atomically under `DIR/partial/` with a fingerprint of the settings, so an
interrupted sweep resumes from the last finished checkpoint and a changed setting starts afresh.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm

from interp.checkpoints import Checkpoint, discover
from interp.errors import InterpError
from interp.results import atomic_save_tensors, write_results
from patching.attribution import attribution_patch, compare
from patching.engine import Patcher
from patching.metrics import AnswerProb, Custom, KLDivergence, LogitDiff, Metric
from patching.report import site_heatmap, top_components
from patching.sites import get_site
from patching.tasks import Task, load_task

METRICS = ("logit_diff", "prob", "kl")


@dataclass(frozen=True)
class Settings:
    """Everything that changes the numbers (the resume fingerprint) plus how to run."""

    sites: tuple[str, ...]
    metric: str = "logit_diff"
    noising: bool = False
    prepend_bos: bool = True
    batch_size: int | None = None
    max_memory: int | None = None
    backend: str = "torch"
    device: str = "cpu"
    attribution: bool = False  # also run attribution patching and report its correlation with exact patching

    def fingerprint(self, task: Task, pairs: Sequence[tuple[Checkpoint, Checkpoint | None]]) -> str:
        keyed = {"sites": self.sites, "metric": self.metric, "noising": self.noising, "bos": self.prepend_bos,
                 "attribution": self.attribution,
                 "task": task.sha256, "pairs": [(str(t.path), str(s.path) if s else None) for t, s in pairs]}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def make_metric(name: str, answer_ids: Tensor, wrong_ids: Tensor) -> Metric:
    """A metric by CLI name, or `module:function` for any callable of final-position logits."""
    if name == "logit_diff":
        return LogitDiff(answer_ids, wrong_ids)
    if name == "prob":
        return AnswerProb(answer_ids)
    if name == "kl":
        return KLDivergence()
    if ":" in name:
        module, _, attr = name.partition(":")
        return Custom(getattr(importlib.import_module(module), attr))
    raise InterpError(f"unknown metric {name!r}", fix=f"use one of {', '.join(METRICS)} or module:function")


def pair_checkpoints(target: Path, source: Path | None) -> list[tuple[Checkpoint, Checkpoint | None]]:
    """Each target checkpoint with the checkpoint patched into it: one source for all, or a run paired by index."""
    targets = discover(target)
    if source is None:
        return [(t, None) for t in targets]
    sources = discover(source)
    if len(sources) == 1:
        return [(t, sources[0]) for t in targets]
    if len(sources) == len(targets):
        return list(zip(targets, sources))
    raise InterpError(f"{source} has {len(sources)} checkpoints and {target} has {len(targets)}",
                      fix="pass one source checkpoint, or a source run with as many checkpoints as the target run")


def _load(ckpt: Checkpoint, device: str) -> Any:
    from interp.models.backends.native import NativeModel

    return NativeModel.from_dir(ckpt.path, torch.device(device), torch.float32, ckpt.step)


def patch_checkpoint(model: Any, source: Any, task: Task, settings: Settings) -> dict[str, Tensor]:
    """Raw metric per site, and the clean/corrupted metrics, averaged over prompt batches weighted by size."""
    n = task.clean.shape[0]
    size = settings.batch_size or n
    if settings.metric not in METRICS and size < n:
        raise InterpError("a custom metric cannot be averaged over prompt batches",
                          fix="leave --batch-size unset (all prompts in one batch) with a custom metric")
    totals: dict[str, Tensor] = {}
    for lo in range(0, n, size):
        sl = slice(lo, lo + size)
        metric = make_metric(settings.metric, task.answer_ids[sl], task.wrong_ids[sl])
        patcher = Patcher(model, task.clean[sl], task.corrupted[sl], metric, settings.sites, source, settings.noising,
                          settings.max_memory, settings.backend)
        weight = task.clean[sl].shape[0] / n
        parts = {f"{s}.raw": patcher.sweep(s, progress=True).raw for s in settings.sites}
        if settings.attribution:
            estimates = attribution_patch(model, task.clean[sl], task.corrupted[sl], metric, settings.sites, source,
                                          settings.noising)
            parts |= {f"{s}.attribution.raw": estimates[s].raw for s in settings.sites}
        parts |= {"clean_metric": torch.tensor(patcher.clean_metric), "corrupted_metric":
                  torch.tensor(patcher.corrupted_metric)}
        for key, value in parts.items():
            totals[key] = totals.get(key, 0) + weight * value
    return totals


def _read_partial(path: Path, fingerprint: str) -> dict[str, Tensor] | None:
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as handle:
        if (handle.metadata() or {}).get("fingerprint") != fingerprint:
            return None
        return {k: handle.get_tensor(k) for k in handle.keys()}


def run_sweep(target: Path, task_path: Path, out_dir: Path, settings: Settings, source: Path | None = None) -> Path:
    """Patch every checkpoint of `target` (resuming finished ones) and write results, summary and report."""
    for site in settings.sites:
        get_site(site)
    pairs = pair_checkpoints(target, source)
    started = time.perf_counter()
    first = _load(pairs[0][0], settings.device)
    task = load_task(task_path, first.tokenizer, settings.prepend_bos)
    fingerprint = settings.fingerprint(task, pairs)
    partial = Path(out_dir) / "partial"
    per_ckpt, timings = [], []
    for i, (ckpt, src) in enumerate(tqdm(pairs, desc="patching checkpoints", unit="ckpt")):
        path = partial / f"{i:04d}_{ckpt.label}.safetensors"
        done = _read_partial(path, fingerprint)
        if done is None:
            t0 = time.perf_counter()
            model = first if i == 0 else _load(ckpt, settings.device)
            source_model = _load(src, settings.device) if src is not None else None
            done = patch_checkpoint(model, source_model, task, settings)
            done["seconds"] = torch.tensor(time.perf_counter() - t0)
            atomic_save_tensors(path, done, {"fingerprint": fingerprint})
        per_ckpt.append(done)
        timings.append(float(done["seconds"]))
    tensors = _assemble(per_ckpt, settings.sites)
    summary = _summary(pairs, task, first, settings, tensors, timings, time.perf_counter() - started)
    labels = [c.label for c, _ in pairs]
    tokens = first.to_str_tokens(task.clean[0])
    figures = [site_heatmap(s, tensors[s], labels, tokens) for s in settings.sites]
    figures.append(top_components({s: tensors[s] for s in settings.sites}, [c.step for c, _ in pairs]))
    return write_results(out_dir, tensors, summary, figures, title=f"Activation patching: {Path(task_path).name}",
                         analysis="patch")


def _assemble(per_ckpt: list[dict[str, Tensor]], sites: Sequence[str]) -> dict[str, Tensor]:
    """Stack checkpoints; normalise each as (patched - corrupted) / (clean - corrupted)."""
    clean = torch.stack([p["clean_metric"] for p in per_ckpt]).float()
    corrupted = torch.stack([p["corrupted_metric"] for p in per_ckpt]).float()
    out = {"clean_metric": clean, "corrupted_metric": corrupted}
    for site in sites:
        for name in (site, f"{site}.attribution"):
            if f"{name}.raw" not in per_ckpt[0]:
                continue
            raw = torch.stack([p[f"{name}.raw"] for p in per_ckpt]).float()
            shape = (-1,) + (1,) * (raw.ndim - 1)
            out[f"{name}.raw"] = raw
            out[name] = (raw - corrupted.view(shape)) / (clean - corrupted).view(shape)
    return out


def _summary(pairs: Sequence[tuple[Checkpoint, Checkpoint | None]], task: Task, model: Any, settings: Settings,
             tensors: dict[str, Tensor], timings: list[float], total: float) -> dict[str, Any]:
    return {
        "checkpoints": [{"step": c.step, "path": str(c.path), "source": str(s.path) if s else None} for c, s in pairs],
        "sites": list(settings.sites),
        "shapes": {s: list(tensors[s].shape) for s in settings.sites},
        "metric": settings.metric,
        "direction": "noising" if settings.noising else "denoising",
        "clean_metric": tensors["clean_metric"].tolist(),
        "corrupted_metric": tensors["corrupted_metric"].tolist(),
        "prompt_tokens": {"clean": model.to_str_tokens(task.clean[0]),
                          "corrupted": model.to_str_tokens(task.corrupted[0])},
        "n_prompts": int(task.clean.shape[0]),
        "task_sha256": task.sha256,
        "backend": settings.backend,
        "device": settings.device,
        "timing": {"seconds_per_checkpoint": timings, "total_seconds": total},
        "attribution_correlation": {
            s: [compare(a, e) for a, e in zip(tensors[f"{s}.attribution.raw"], tensors[f"{s}.raw"])]
            for s in settings.sites if f"{s}.attribution.raw" in tensors},
    }
