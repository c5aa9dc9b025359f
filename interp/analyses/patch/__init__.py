"""Exact activation patching over every checkpoint of a training run (causal tracing, Meng et al. 2022; denoising
and noising as in Heimersheim & Nanda 2024; cross-model patching, Prakash et al. 2024), optionally with attribution
patching beside it (Nanda 2023; Syed et al. 2023) and its correlation with the exact effects per checkpoint.

The method is `patching/` (engine, sites, metrics, tasks, attribution); this unit checks every input, runs the
resumable checkpoint loop (`sweep.py`) and writes one results directory; `report.py` draws its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, Bos, ExecutorSpec, Opt, Revisions, write
from interp.data.tokens import BOS_DEFAULT

if TYPE_CHECKING:
    from interp.results import Results


@dataclass(frozen=True)
class Spec(ExecutorSpec):
    """Sweep every checkpoint: results.safetensors ([checkpoint, layer, ...] per site), summary.json, report.html.

    Every input is checked before any model is loaded; a finished checkpoint is reused only while its weights,
    config, the task and the settings are unchanged."""

    run: Annotated[Path, Arg("A checkpoint directory, a training-run directory (every checkpoint), or a hub id "
                             "(org/name) in the Hugging Face cache (see --revisions).")]
    task: Annotated[Path, Opt('JSONL lines {"clean", "corrupted", "answer", "wrong"}.', ("--task",))]
    out: Annotated[Path, Opt("Results directory: new or empty, or an earlier run of this sweep with the same settings "
                             "(resumes it).", ("--out",))]
    revisions: Revisions = None
    sites: Annotated[str, Opt("Comma-separated: resid_pre resid_mid resid_post attn_out mlp_out z z_by_pos q k v "
                              "pattern (+ _by_pos).", ("--sites",))] = "resid_pre,attn_out,mlp_out,z"
    source: Annotated[Optional[Path], Opt("Patch activations of this checkpoint or run in (cross-model); default the "
                                          "model itself.", ("--source",))] = None
    noising: Annotated[bool, Opt("Run the clean prompt, patch in corrupted activations.", ("--noising",))] = False
    metric: Annotated[str, Opt("logit_diff, prob, kl, or module:function.", ("--metric",))] = "logit_diff"
    device: Annotated[str, Opt("cpu, cuda, cuda:N, or auto.", ("--device",))] = "auto"
    batch_size: Annotated[Optional[int], Opt("Prompts per engine pass (default all).", ("--batch-size",))] = None
    backend: Annotated[str, Opt("torch, triton or auto.", ("--backend",))] = "torch"
    max_memory: Annotated[Optional[str], Opt("Variant-batch memory budget, e.g. 2GiB (default: half free GPU memory, "
                                             "or RAM/4).", ("--max-memory",))] = None
    bos: Bos = BOS_DEFAULT
    attribution: Annotated[bool, Opt("Also run attribution patching (one forward and backward) and report its "
                                     "correlation with exact patching per checkpoint.", ("--attribution",))] = False
    force: Annotated[bool, Opt("Replace what --out holds (never a checkpoint directory).", ("--force",))] = False


def run(spec: Spec) -> Results:
    """Patch every checkpoint of `spec.run` (resuming finished ones whose inputs are unchanged) and write results,
    summary and report. Every input is checked before any model is loaded: the options, the output directory, every
    checkpoint (readable, weights matching config.json), the run's and the source's compatibility (architecture,
    shapes, tokenizer), and the task (degenerate lines, prompts longer than the context); checkpoints with identical
    weights are warned about (`interp.checkpoints.vouch`)."""
    import time

    from interp.analyses.patch import sweep
    from interp.analyses.unit import executor_of
    from interp.checkpoints import read_summary, vouch
    from interp.loading import load_tokenizer
    from interp.outdir import check_out
    from patching.tasks import load_task

    executor = executor_of(spec)
    settings = sweep.settings_of_spec(spec, executor.device(spec.device))
    keyed = sweep.out_settings(spec, settings)  # what makes --out "the same sweep"
    out = check_out(spec.out, UNIT.name, keyed, spec.force)
    pairs = sweep.pair_checkpoints(spec.run, spec.source, spec.revisions)
    sweep.check_checkpoints(pairs, settings.sites)
    first = pairs[0][0].path
    sweep.check_hooked(first, settings)
    tokenizer, model = load_tokenizer(first), read_summary(first)
    task = load_task(spec.task, tokenizer, settings.prepend_bos, n_ctx=model.n_ctx, d_vocab=model.d_vocab,
                     same_prompts=spec.source is not None)
    sweep.check_batching(settings, task)
    records, identical = vouch([ckpt for ckpt, _ in pairs])
    started = time.perf_counter()
    with executor.opened():
        per_ckpt, contents = sweep.sweep_checkpoints(pairs, task, settings, out, UNIT.name, keyed, executor)
    tensors = sweep.assemble(per_ckpt, settings.sites)
    timings = [float(done["seconds"]) for done in per_ckpt]
    summary = sweep.summary_of(pairs, records, contents, task, tokenizer, settings, tensors, timings,
                               time.perf_counter() - started)
    summary["identical_weights"] = identical
    steps = [c.step if c.step is not None else c.label for c, _ in pairs]
    return write(UNIT, out, tensors, summary, title=f"Activation patching: {Path(spec.task).name}",
                 axes=sweep.result_axes(tensors, steps, sweep.str_tokens(tokenizer, task.clean[0])),
                 tokenization={"bos": settings.prepend_bos, "padding": None}, inputs=sweep.inputs(pairs, spec.task),
                 settings=keyed)


def figures(results: Results) -> list[Any]:
    """A heatmap per site (slider over checkpoints, labelled step_000300 or the revision or directory name) and the
    largest components' normalised effect against step."""
    from interp.analyses.patch.report import site_heatmap, top_components

    s = results.summary
    labels = [f"step_{c['step']:06d}" if c["step"] is not None else c.get("revision") or Path(c["path"]).name
              for c in s["checkpoints"]]
    tokens = s["prompt_tokens"]["clean"]
    shown = [site_heatmap(site, results.tensors[site], labels, tokens) for site in s["sites"]]
    shown.append(top_components({site: results.tensors[site] for site in s["sites"]},
                                [c["step"] for c in s["checkpoints"]]))
    return shown


UNIT = Analysis(name="patch", title="Activation patching", command=("patch",), spec=Spec, run=run, figures=figures,
                page="interp.analyses.patch.page", example="patch RUN --task TASK.jsonl --out results/patch")
