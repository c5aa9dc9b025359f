"""The checkpoint loop of `interp patch` (`interp.analyses.patch`): settings and their checks, checkpoint pairing and
checks, one checkpoint patched over prompt batches, resume from `DIR/partial/`, and the assembled tensors, axes,
inputs and summary.

Each finished checkpoint is saved atomically under `DIR/partial/` with a fingerprint of the settings, the task's
tokens and the content of the checkpoints it read (weights and config), so an interrupted sweep resumes from the last
finished checkpoint, and a changed setting or checkpoint is computed afresh.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from interp.analyses.unit import absolute
from interp.checkpoints import Checkpoint, check_compatible, run_checkpoints, run_location, weights_sha256
from interp.errors import InterpError
from interp.executors import SEQUENTIAL, Executor, Unit, run_units
from interp.loading import config_dir, read_config, resolve_device, verify_checkpoint
from interp.options import check_range, parse_names
from interp.outdir import write_partial_settings
from interp.progress import on_terminal
from interp.results import Axes, axes, input_identity
from patching.attribution import attribution_patch, compare
from patching.engine import Patcher
from patching.hooked import NOTICE, HookedPatcher
from patching.metrics import AnswerProb, Custom, KLDivergence, LogitDiff, Metric
from patching.sites import SITES, get_site
from patching.tasks import Task
from patching.variants import get_backend

if TYPE_CHECKING:
    from interp.analyses.patch import Spec

METRICS = ("logit_diff", "prob", "kl")
_METRIC_FIX = f"use one of {', '.join(METRICS)}, or module:function naming a function of final-position logits"


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
    device: str = "cpu"  # cpu, cuda[:N] or auto
    attribution: bool = False  # also run attribution patching and report its correlation with exact patching

    def checked(self, device: str | None = None) -> "Settings":
        """These settings with duplicate sites dropped and the device resolved here (or set to `device`, the one a
        remote worker gets); an option that cannot work is an `InterpError` naming it, before anything is read or
        computed."""
        if not self.sites:
            raise InterpError("no patching sites given", fix="pass e.g. --sites resid_pre,z")
        for site in self.sites:
            get_site(site)
        if self.metric not in METRICS:
            custom_metric(self.metric)
        check_range("--batch-size", self.batch_size, low=1)
        check_range("--max-memory", self.max_memory, low=1)
        get_backend(self.backend)
        return replace(self, sites=tuple(dict.fromkeys(self.sites)), device=device or str(resolve_device(self.device)))

    def fingerprint(self, task: Task, checkpoints: Sequence[dict[str, str] | None]) -> str:
        """What a finished checkpoint's numbers depend on: settings, task tokens, target (and source) contents."""
        keyed = {"sites": self.sites, "metric": self.metric, "noising": self.noising, "bos": self.prepend_bos,
                 "attribution": self.attribution, "task": task.tokens_sha256, "checkpoints": list(checkpoints)}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20, "g": 2**30,
          "gb": 2**30, "gib": 2**30}


def parse_memory(text: str | None) -> int | None:
    """'2GiB', '512M', '1000000' -> bytes (a budget under one byte is refused when the settings are checked)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise InterpError(f"cannot read --max-memory {text!r}", fix="write e.g. 2GiB, 512MiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def settings_of_spec(spec: Spec, device: str | None = None) -> Settings:
    """The sweep's checked settings from the unit's Spec: sites and memory budget parsed, every option checked
    (`device`: the one remote workers get, see `Executor.device`)."""
    return Settings(sites=parse_names("--sites", spec.sites, tuple(SITES)), metric=spec.metric, noising=spec.noising,
                    prepend_bos=spec.bos, batch_size=spec.batch_size, max_memory=parse_memory(spec.max_memory),
                    backend=spec.backend, device=spec.device, attribution=spec.attribution).checked(device)


def out_settings(spec: Spec, settings: Settings) -> dict[str, Any]:
    """The options and inputs (paths absolute, hub ids as given) that make an `--out` directory "the same sweep" for
    `check_out`."""
    return {"sites": list(settings.sites), "metric": settings.metric, "noising": settings.noising,
            "bos": settings.prepend_bos, "attribution": settings.attribution, "backend": settings.backend,
            "target": run_location(spec.run), "revisions": spec.revisions,
            "source": run_location(spec.source) if spec.source is not None else None,
            "task": absolute(spec.task)}


def custom_metric(name: str) -> Callable[[Tensor], Tensor]:
    """The function a `module:function` metric names, or an `InterpError` saying why it cannot be used."""
    module, colon, attr = name.partition(":")
    if not colon or not module or not attr:
        raise InterpError(f"unknown metric {name!r}", fix=_METRIC_FIX)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as err:  # importing runs the user's module: any error there is theirs
        raise InterpError(f"--metric {name!r} cannot be imported ({type(err).__name__}: {err})",
                          fix=_METRIC_FIX) from err
    if not callable(fn):
        raise InterpError(f"--metric {name!r} is not a function", fix=_METRIC_FIX)
    return fn


def make_metric(name: str, answer_ids: Tensor, wrong_ids: Tensor) -> Metric:
    """A metric by CLI name, or `module:function` for any callable of final-position logits."""
    if name == "logit_diff":
        return LogitDiff(answer_ids, wrong_ids)
    if name == "prob":
        return AnswerProb(answer_ids)
    if name == "kl":
        return KLDivergence()
    return Custom(custom_metric(name))


def pair_checkpoints(target: Path, source: Path | None,
                     revisions: str | None = None) -> list[tuple[Checkpoint, Checkpoint | None]]:
    """Each target checkpoint (a hub id's at `revisions`) with the checkpoint patched into it: one source for all, or
    a run paired by index."""
    targets = run_checkpoints(target, revisions)
    if source is None:
        return [(t, None) for t in targets]
    sources = run_checkpoints(source)
    if len(sources) == 1:
        return [(t, sources[0]) for t in targets]
    if len(sources) == len(targets):
        return list(zip(targets, sources))
    raise InterpError(f"{source} has {len(sources)} checkpoints and {target} has {len(targets)}",
                      fix="pass one source checkpoint, or a source run with as many checkpoints as the target run")


def check_checkpoints(pairs: Sequence[tuple[Checkpoint, Checkpoint | None]], sites: Sequence[str]) -> None:
    """Before any model is loaded: every checkpoint verified, all of one architecture, sizes and tokenizer (the
    target run's and every source), and every site defined for that architecture."""
    first = pairs[0][0].path
    others = list(dict.fromkeys([t.path for t, _ in pairs[1:]] + [s.path for _, s in pairs if s is not None]))
    for path in (first, *others):
        verify_checkpoint(path)
    for path in others:
        check_compatible(first, path)
    from interp.support import native_config

    native = native_config(read_config(first))
    parallel = native is not None and native.parallel_attn_mlp
    if parallel and any(get_site(s).entry == "resid_mid" for s in sites):
        raise InterpError(f"{first}: resid_mid does not exist when attention and MLP run in parallel (GPT-NeoX)",
                          fix="drop resid_mid (and resid_mid sites) from --sites")


def check_batching(settings: Settings, task: Task) -> None:
    """A custom metric is not a mean over prompts, so it cannot be averaged over prompt batches."""
    if settings.metric not in METRICS and (settings.batch_size or task.clean.shape[0]) < task.clean.shape[0]:
        raise InterpError("a custom metric cannot be averaged over prompt batches",
                          fix="leave --batch-size unset (all prompts in one batch) with a custom metric")


def content(path: Path) -> dict[str, str]:
    """What a checkpoint's numbers depend on besides the settings: its weight files' and config.json's sha256 (an
    adapter's: its own and its base's weights, its base's config)."""
    return {"weights_sha256": weights_sha256(path),
            "config_sha256": hashlib.sha256((config_dir(path) / "config.json").read_bytes()).hexdigest()}


def is_native(path: Path) -> bool:
    """Whether the fast engine can run this checkpoint (interp implements its family natively)."""
    from interp.models.arch import spec_for

    return spec_for(read_config(path).get("model_type")) is not None


def check_hooked(first: Path, settings: Settings) -> None:
    """On a family without a native spec: the one-line notice, and refuse what only the fast engine offers."""
    if is_native(first):
        return
    if settings.attribution:
        raise InterpError(f"{first}: attribution patching needs a native family (it reads gradients at the engine's "
                          f"entry points)", fix="drop --attribution for this model")
    print(f"note: {NOTICE}", file=sys.stderr)


def _load(ckpt: Checkpoint, device: str) -> Any:
    """The native model for a native family; the TransformerLens bridge otherwise (the hooked path)."""
    from interp.loading import load
    from interp.models.backends.native_backend import NativeModel

    if not is_native(ckpt.path):
        return load(ckpt.path, backend="transformer_lens", device=device, step=ckpt.step)
    return NativeModel.from_dir(ckpt.path, torch.device(device), torch.float32, ckpt.step)


def _describe(model: Any, source: Any) -> str:
    """The checkpoint (and source) an error is about."""
    return f"{model.path}" + (f" (source {source.path})" if source is not None else "")


def _first_bad_line(patcher: Patcher | HookedPatcher, rows: slice) -> str:
    """' (task line N)' for the first prompt whose clean or corrupted final logits are not finite, else ''."""
    if isinstance(patcher, HookedPatcher):
        base, donor = patcher.base_final, patcher.donor_final
    else:
        base, donor = patcher.base.final_logits, patcher.donor.final_logits
    finite = torch.isfinite(base).all(-1) & torch.isfinite(donor).all(-1)
    bad = (~finite).nonzero().flatten().tolist()
    return f" (task line {rows.start + bad[0] + 1}: NaN or infinite logits)" if bad else ""


def _patcher(model: Any, source: Any, task: Task, settings: Settings, rows: slice) -> Patcher | HookedPatcher:
    """The engine for one batch of prompts (the hooked path off the native backend); a non-finite clean or
    corrupted metric is refused, naming the prompt."""
    metric = make_metric(settings.metric, task.answer_ids[rows], task.wrong_ids[rows])
    if model.backend != "native":
        patcher: Patcher | HookedPatcher = HookedPatcher(model, task.clean[rows], task.corrupted[rows], metric,
                                                         settings.sites, source, settings.noising, settings.max_memory)
    else:
        patcher = Patcher(model, task.clean[rows], task.corrupted[rows], metric, settings.sites, source,
                          settings.noising, settings.max_memory, settings.backend)
    if not (math.isfinite(patcher.clean_metric) and math.isfinite(patcher.corrupted_metric)):
        raise InterpError(f"{_describe(model, source)}: the {settings.metric} metric of the clean or corrupted run is "
                          f"{patcher.clean_metric} / {patcher.corrupted_metric}, not finite"
                          f"{_first_bad_line(patcher, rows)}",
                          fix="check that checkpoint (diverged or overflowing weights) or that prompt")
    return patcher


def check_baselines(where: str, metric: str, clean: float, corrupted: float) -> None:
    """Refuse equal clean and corrupted metrics: the normalised effect divides by their difference."""
    if clean == corrupted:
        raise InterpError(f"{where}: the clean and corrupted runs give the same {metric} ({clean:.6g}), so the "
                          "normalised effect (patched - corrupted) / (clean - corrupted) is undefined",
                          fix="use clean and corrupted prompts (or, with --source, models) that change the metric")


def patch_checkpoint(model: Any, source: Any, task: Task, settings: Settings) -> dict[str, Tensor]:
    """Raw metric per site, and the clean/corrupted metrics, averaged over prompt batches weighted by size.

    The averaged clean and corrupted metrics are checked (finite, different) before any sweep runs; with several
    batches that takes one extra pass over the batches' clean and corrupted runs (two forwards each)."""
    n = task.clean.shape[0]
    size = settings.batch_size or n
    batches = [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]
    weights = [(b.stop - b.start) / n for b in batches]
    first = _patcher(model, source, task, settings, batches[0])
    others = (_patcher(model, source, task, settings, b) for b in batches[1:])  # one at a time: each is dropped
    baselines = [(p.clean_metric, p.corrupted_metric) for p in itertools.chain([first], others)]
    clean, corrupted = (sum(w * b[j] for w, b in zip(weights, baselines)) for j in (0, 1))
    check_baselines(_describe(model, source), settings.metric, clean, corrupted)
    totals: dict[str, Tensor] = {}
    for i, (rows, weight) in enumerate(zip(batches, weights)):
        patcher = first if i == 0 else _patcher(model, source, task, settings, rows)
        parts = {f"{s}.raw": patcher.sweep(s, progress=on_terminal()).raw for s in settings.sites}
        if settings.attribution:
            estimates = attribution_patch(model, task.clean[rows], task.corrupted[rows], patcher.metric,
                                          settings.sites, source, settings.noising)
            parts |= {f"{s}.attribution.raw": estimates[s].raw for s in settings.sites}
        parts |= {"clean_metric": torch.tensor(patcher.clean_metric), "corrupted_metric":
                  torch.tensor(patcher.corrupted_metric)}
        for key, value in parts.items():
            totals[key] = totals.get(key, 0) + weight * value
    for key, value in totals.items():
        if not bool(torch.isfinite(value).all()):
            raise InterpError(f"{_describe(model, source)}: patching gave NaN or infinite values in {key}",
                              fix="check that checkpoint (overflowing activations) or the metric")
    return totals


def _patch_loaded(ckpt: Checkpoint, src: Checkpoint | None, task: Task, settings: Settings) -> dict[str, Tensor]:
    """`patch_checkpoint` on freshly loaded models, with the seconds it took; the models are released on return, so
    a sweep holds one checkpoint (and its source) in memory at a time."""
    t0 = time.perf_counter()
    model = _load(ckpt, settings.device)
    source_model = _load(src, settings.device) if src is not None else None
    done = patch_checkpoint(model, source_model, task, settings)
    done["seconds"] = torch.tensor(time.perf_counter() - t0)
    return done


def sweep_checkpoints(pairs: Sequence[tuple[Checkpoint, Checkpoint | None]], task: Task, settings: Settings,
                      out: Path, analysis: str, keyed: dict[str, Any], executor: Executor = SEQUENTIAL
                      ) -> tuple[list[dict[str, Tensor]], list[tuple[dict[str, str], dict[str, str] | None]]]:
    """Patch every (checkpoint, source) pair on `executor`, reusing a finished checkpoint from `out/partial/` when
    its fingerprint matches (each new one is saved there atomically as it finishes); returns (per-checkpoint tensors,
    content hashes per pair)."""
    contents = [(content(ckpt.path), content(src.path) if src is not None else None) for ckpt, src in pairs]
    units = [Unit(f"{i:04d}_{ckpt.label}", settings.fingerprint(task, keys), _patch_loaded, (ckpt, src, task, settings))
             for i, ((ckpt, src), keys) in enumerate(zip(pairs, contents))]
    claim = partial(write_partial_settings, out, analysis, keyed)
    return run_units(units, out / "partial", executor, desc="patching checkpoints", claim=claim), contents


GRID_AXES = {"pos": ("layer", "pos"), "head": ("layer", "head"), "head_pos": ("layer", "head", "pos")}


def result_axes(tensors: dict[str, Tensor], steps: Sequence[int | str], tokens: Sequence[str]) -> dict[str, Axes]:
    """Axis names of every tensor `assemble` made: checkpoint first (ticks: steps, or the directory name where the
    step is unknown), then the site's grid (`pos` ticks: the first clean prompt's tokens); the baselines have the
    checkpoint axis only."""
    ticks = {"checkpoint": steps, "pos": tokens}
    out = {name: axes("checkpoint", **ticks) for name in ("clean_metric", "corrupted_metric")}
    for name in tensors.keys() - out.keys():
        site = get_site(name.split(".")[0])
        out[name] = axes("checkpoint", *GRID_AXES[site.grid], **ticks)
    return out


def inputs(pairs: Sequence[tuple[Checkpoint, Checkpoint | None]], task_path: Path) -> list[dict[str, Any]]:
    """Every checkpoint patched (and its source model, cross-model) and the task file, by content hash."""
    out = []
    for ckpt, src in pairs:
        out.append(input_identity("checkpoint", ckpt.path, step=ckpt.step, revision=ckpt.revision))
        if src is not None:
            out.append(input_identity("source", src.path, step=src.step, revision=src.revision))
    return out + [input_identity("task", task_path)]


def str_tokens(tokenizer: Any, ids: Tensor) -> list[str]:
    """One string per token, for axis labels."""
    return [tokenizer.decode([t]) for t in ids.tolist()]


def assemble(per_ckpt: list[dict[str, Tensor]], sites: Sequence[str]) -> dict[str, Tensor]:
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


def summary_of(pairs: Sequence[tuple[Checkpoint, Checkpoint | None]], records: Sequence[dict[str, Any]],
               contents: Sequence[tuple[dict[str, str], dict[str, str] | None]], task: Task, tokenizer: Any,
               settings: Settings, tensors: dict[str, Tensor], timings: list[float], total: float) -> dict[str, Any]:
    """summary.json's entries: each checkpoint (its `interp.checkpoints.identity` record) and source by path and
    weights, the sites and their shapes, metric, direction, baselines, prompt tokens, task hash, backend, device,
    timing and attribution correlations."""
    return {
        "checkpoints": [{**record, "source": str(s.path) if s else None,
                         "source_weights_sha256": k["weights_sha256"] if k else None}
                        for (_, s), record, (_, k) in zip(pairs, records, contents)],
        "sites": list(settings.sites),
        "shapes": {s: list(tensors[s].shape) for s in settings.sites},
        "metric": settings.metric,
        "direction": "noising" if settings.noising else "denoising",
        "clean_metric": tensors["clean_metric"].tolist(),
        "corrupted_metric": tensors["corrupted_metric"].tolist(),
        "prompt_tokens": {"clean": str_tokens(tokenizer, task.clean[0]),
                          "corrupted": str_tokens(tokenizer, task.corrupted[0])},
        "n_prompts": int(task.clean.shape[0]),
        "task_sha256": task.sha256,
        "backend": settings.backend,
        "device": settings.device,
        "timing": {"seconds_per_checkpoint": timings, "total_seconds": total},
        "attribution_correlation": {
            s: [compare(a, e) for a, e in zip(tensors[f"{s}.attribution.raw"], tensors[f"{s}.raw"])]
            for s in settings.sites if f"{s}.attribution.raw" in tensors},
    }
