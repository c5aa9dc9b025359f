"""`interp induction [scores] RUN --out DIR`: induction-head scores at every checkpoint of a run and when each head
formed; `interp induction train --task repeat|bursty --clamp KIND:L.H --out RUN`: clamped training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from interp.cli import app
from interp.errors import InterpError
from interp.outdir import check_out

PARTIAL_DIR = "partial"  # per-checkpoint scores, kept beside the results for reruns


class _ScoresByDefault(TyperGroup):
    """`interp induction RUN ...` means `interp induction scores RUN ...`."""

    def parse_args(self, ctx: typer.core._click.Context, args: list[str]) -> list[str]:  # typer vendors click
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["scores", *args]
        return super().parse_args(ctx, args)


induction_app = typer.Typer(cls=_ScoresByDefault, no_args_is_help=True,
                            help="Induction-head formation across checkpoints, and clamped training runs.")
app.add_typer(induction_app, name="induction")


def _documents(text: Path, tokenizer: Any, length: int, batch: int) -> Any:
    """`batch` windows of `length` tokens packed from the file's documents (one per line), BOS/EOS between them."""
    import torch

    try:
        lines = text.expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InterpError(f"--text {text} cannot be read as UTF-8 text ({err})",
                          fix="pass a UTF-8 text file with one document per line") from err
    docs = [line.strip() for line in lines if line.strip()]
    stream: list[int] = []
    for ids in (tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []):
        stream += [t for t in (tokenizer.bos_token_id, *ids, tokenizer.eos_token_id) if t is not None]
    n = min(batch, len(stream) // length)
    if n == 0:
        raise InterpError(f"{text} holds {len(stream)} tokens, fewer than one window of {length}",
                          fix="pass a longer text file (one document per line)")
    return torch.tensor(stream[: n * length]).reshape(n, length)


def _cache_key(probe: Any, clamps: Any, checkpoint: Path) -> str:
    """What a checkpoint's scores depend on: the probe tokens, the clamps, the weights' content and config.json."""
    import hashlib

    from interp.checkpoints import weights_sha256
    from interp.loading import read_config

    digest = hashlib.sha256()
    for tokens in (probe.repeats, probe.prefix, probe.icl):
        if tokens is not None:
            digest.update(str(tuple(tokens.shape)).encode() + tokens.numpy().tobytes())
    digest.update(json.dumps([probe.early, probe.late, [str(c) for c in clamps.clamps], weights_sha256(checkpoint),
                              read_config(checkpoint)], sort_keys=True).encode())
    return digest.hexdigest()


def _score_checkpoint(checkpoint: Path, probe: Any, clamps: Any, cache: Path, device: Any) -> dict[str, Any]:
    """Scores of one checkpoint, reused from `cache` when computed from the same probe, clamps and weights; a
    non-finite score is an error naming the checkpoint."""
    import torch
    from safetensors import safe_open

    from interp.dynamics.induction import checkpoint_scores
    from interp.models.native import NativeTransformer
    from interp.results import atomic_save_tensors

    key = _cache_key(probe, clamps, checkpoint)
    if cache.is_file():
        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return {name: f.get_tensor(name) for name in f.keys()}
    nt = NativeTransformer.from_pretrained(checkpoint, device=device)
    scores = checkpoint_scores(nt, probe, clamps.forward if clamps.clamps else None)
    for name, value in scores.items():
        if not bool(torch.isfinite(value).all()):
            raise InterpError(f"{checkpoint}: the {name} score is not finite", fix="check that checkpoint's weights "
                              "(its probe loss overflows or its attention is degenerate)")
    atomic_save_tensors(cache, scores, {"key": key})
    return scores


def _top_heads(scores: Any, k: int = 5) -> list[dict[str, Any]]:
    """The k heads with the highest score in a [layer, head] tensor, best first."""
    n_heads = scores.shape[1]
    order = scores.flatten().argsort(descending=True)[:k].tolist()
    return [{"layer": i // n_heads, "head": i % n_heads, "score": float(scores.flatten()[i])} for i in order]


def _settings(run: Path, seq_len: int, batch: int, text: Path | None, threshold: float, seed: int, use_clamps: bool,
              device: str) -> dict[str, Any]:
    """What `--out` is keyed by (`check_out`): the run's path and the options."""
    return {"run": str(run), "seq_len": seq_len, "batch": batch, "text": str(text) if text else None,
            "threshold": threshold, "seed": seed, "clamps": use_clamps, "device": device}


def run_induction(run: Path, out: Path, seq_len: int = 50, batch: int = 10, text: Path | None = None,
                  threshold: float = 0.4, seed: int = 0, use_clamps: bool = True, device: str = "cpu",
                  force: bool = False) -> Path:
    """Score every checkpoint of `run`, detect formation, and write the results directory.

    Everything is checked before any checkpoint is scored: `out`, the options, every checkpoint (weights match
    config.json, tokenizer), that they are compatible, `seq_len` against the context, the clamps. Each checkpoint's
    scores are kept in `out/partial/` keyed by the probe and the weights' content, so a rerun reuses them.
    """
    import torch

    from interp.checkpoints import Run, read_summary
    from interp.dynamics.clamping import ClampSet, read_run_clamps
    from interp.dynamics.formation import detect_formation
    from interp.dynamics.induction import SCORE_NAMES, make_probe
    from interp.dynamics.induction_report import heatmaps, loss_curves, score_curves
    from interp.models.auto_backend import require_native
    from interp.loading import load_tokenizer, resolve_device, verify_checkpoint
    from interp.options import check_range
    from interp.outdir import write_partial_settings
    from interp.progress import progress
    from interp.results import input_identity, write_results

    settings = _settings(run, seq_len, batch, text, threshold, seed, use_clamps, device)
    out = check_out(out, "induction", settings, force)
    check_range("--batch", batch, 1)
    check_range("--threshold", threshold, 0.0, 1.0)
    torch_device = resolve_device(device)
    checkpoints = Run.open(run)
    ckpts = checkpoints.checkpoints
    for ckpt in ckpts:
        verify_checkpoint(ckpt.path)
    checkpoints.check_compatible()
    require_native(ckpts[0].path, "interp induction", "its scores and clamps run on interp's own forward, which "
                   "replaces attention patterns inside the computation")
    shape = read_summary(ckpts[0].path)
    tokenizer = load_tokenizer(ckpts[0].path)
    bos = tokenizer.bos_token_id
    check_range("--seq-len", seq_len, 1, (shape.n_ctx - int(bos is not None)) // 2)
    clamps = read_run_clamps(checkpoints.path) if use_clamps else ClampSet()
    clamps.check(shape.n_layers, shape.n_heads)
    docs = _documents(text, tokenizer, min(shape.n_ctx, 512), batch) if text is not None else None
    probe = make_probe(shape.d_vocab, shape.n_ctx, bos, tokenizer.all_special_ids, seq_len, batch, documents=docs,
                       seed=seed)
    steps = [c.step if c.step is not None else i for i, c in enumerate(ckpts)]
    write_partial_settings(out, "induction", settings)
    per_step: dict[str, list[torch.Tensor]] = {}
    for ckpt in progress(ckpts, desc=f"induction scores {checkpoints.path.name}", unit="checkpoint"):
        scores = _score_checkpoint(ckpt.path, probe, clamps, out / PARTIAL_DIR / f"{ckpt.label}.safetensors",
                                   torch_device)
        for name, value in scores.items():
            per_step.setdefault(name, []).append(value)
    tensors = {name: torch.stack(values) for name, values in per_step.items()}
    tensors["steps"] = torch.tensor(steps)
    formation = detect_formation(steps, tensors["induction"], tensors["icl_score"], threshold,
                                 exclude=clamps.pattern_clamped)
    heads = formation.to_json()
    if len(steps) < 2:
        heads["note"] = "formation needs at least two checkpoints; top_heads gives the scores of this one"
    final = {name: {"best_head": [int(i) for i in divmod(int(tensors[name][-1].argmax()), tensors[name].shape[2])],
                    "best_score": float(tensors[name][-1].max())} for name in SCORE_NAMES}
    summary = {
        "method": "induction-head scores and formation (Olsson et al. 2022; TransformerLens head_detector; "
                  "Singh et al. 2024 clamps)",
        "run": str(checkpoints.path), "steps": steps, "checkpoints": [str(c.path) for c in ckpts],
        "clamps": [str(c) for c in clamps.clamps], "clamped_heads_excluded": sorted(clamps.pattern_clamped),
        "probe": {"repeated_tokens": list(probe.repeats.shape), "prefix_matching": list(probe.prefix.shape),
                  "icl_source": probe.icl_source, "icl_early_tokens": probe.early, "icl_late_tokens": probe.late,
                  "text": str(text) if text else None, "seed": seed, "bos_id": bos},
        "induction_heads": heads,
        "top_heads": _top_heads(tensors["induction"][-1]),
        "final_checkpoint": final,
        "loss_by_position": "the loss at position pos is that of predicting token pos + 1",
    }
    scores = {name: tensors[name] for name in SCORE_NAMES}
    figures = [*score_curves(steps, scores, formation),
               loss_curves(steps, tensors["icl_score"], tensors["loss"], formation),
               *heatmaps(steps, {k: scores[k] for k in ("induction", "previous_token")})]
    inputs = [input_identity("checkpoint", c.path, step=c.step) for c in ckpts]
    return write_results(out, tensors, summary, figures, title=f"induction heads: {checkpoints.path.name}",
                         analysis="induction", axes=_axes(tensors, steps),
                         tokenization={"bos": bos is not None, "padding": None},
                         inputs=inputs + ([input_identity("text", text)] if text is not None else []),
                         settings=settings)


def _axes(tensors: dict[str, Any], steps: list[int]) -> dict[str, Any]:
    """Scores [checkpoint, layer, head]; `loss_by_position` [checkpoint, pos]; the rest [checkpoint] (ticks: steps)."""
    from interp.results import axes

    by_ndim = {1: ("checkpoint",), 2: ("checkpoint", "pos"), 3: ("checkpoint", "layer", "head")}
    return {name: axes(*by_ndim[value.ndim], checkpoint=steps) for name, value in tensors.items()}


def _report(summary: dict[str, Any], threshold: float) -> list[str]:
    """What `interp induction` prints: formation of each induction head, or the top heads' scores and why none."""
    heads, steps = summary["induction_heads"], summary["steps"]
    top = ", ".join(f"L{h['layer']}H{h['head']} {h['score']:.3f}" for h in summary["top_heads"])
    if len(steps) < 2:
        return [f"one checkpoint (step {steps[0]}): formation needs at least two checkpoints; "
                f"highest induction scores: {top}"]
    lines = [f"L{h['layer']}H{h['head']}: forms at step {h['step']} (from {h['previous_step']}), score "
             f"{h['first_score']:.2f} -> {h['final_score']:.2f}, aligned with ICL drop: {h['aligned_with_icl']}"
             for h in heads["heads"]]
    if not lines:
        lines.append(f"no head reached induction score {threshold}; highest at step {steps[-1]}: {top}")
    return [*lines, f"steepest ICL-score drop at step {heads['icl_drop_step']}"]


@induction_app.command("scores")
def scores(
    run: Path = typer.Argument(..., help="A run directory of checkpoints (or one checkpoint)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    seq_len: int = typer.Option(50, help="Length T of the repeated random segment [BOS, r_1..r_T, r_1..r_T]; "
                                         "2T+1 tokens must fit the model's context."),
    batch: int = typer.Option(10, help="Sequences per probe batch (at least 1)."),
    text: Optional[Path] = typer.Option(None, help="Documents (one per line) for the ICL score; default: repeats."),
    threshold: float = typer.Option(0.4, help="A head whose induction score reaches this (0 to 1) is an "
                                              "induction head."),
    seed: int = typer.Option(0, help="Seed for the random probe tokens."),
    clamps: bool = typer.Option(True, help="Apply the clamps a clamped training run recorded in run.json."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Scores of every head at every checkpoint, the formation step of each induction head, and the ICL curve."""
    path = run_induction(run, out, seq_len, batch, text, threshold, seed, clamps, device, force)
    for line in _report(json.loads((path / "summary.json").read_text()), threshold):
        typer.echo(line)
    typer.echo(f"wrote {path}")


@induction_app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Run directory to write (checkpoints step_NNNNNN/); must be new "
                                                "or empty."),
    task: str = typer.Option("repeat", help="repeat (repeated random tokens) or bursty (Reddy-style)."),
    clamp: list[str] = typer.Option([], "--clamp", help="KIND:LAYER.HEAD, KIND in prev, induction, copy; "
                                                         "repeatable."),
    steps: int = typer.Option(800, help="Training steps (at least 1)."),
    lr: float = typer.Option(3e-4, help="Adam learning rate (positive)."),
    batch: int = typer.Option(32, help="Sequences per step (at least 1)."),
    seed: int = typer.Option(0, help="Seed for initialisation and data."),
    save_every: int = typer.Option(20, help="Checkpoint every this many steps (at least 1)."),
) -> None:
    """Train a 2-layer attention-only GPT-2 on a synthetic in-context task with clamped activations."""
    from interp.dynamics.clamping import Clamp, ClampSet, TrainConfig, train as train_run
    from interp.dynamics.icl_tasks import TASKS, make_task
    from interp.options import check_range

    settings = {"task": task, "clamps": clamp, "steps": steps, "lr": lr, "batch": batch, "seed": seed,
                "save_every": save_every}
    out = check_out(out, "induction train", settings)
    if task not in TASKS:
        raise InterpError(f"unknown task {task!r}", fix=f"use --task {' or --task '.join(TASKS)}")
    check_range("--steps", steps, 1)
    check_range("--batch", batch, 1)
    check_range("--save-every", save_every, 1)
    check_range("--lr", lr)
    if lr <= 0:
        raise InterpError(f"--lr is {lr}, but it must be positive", fix="pass e.g. --lr 3e-4")
    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, save_every=save_every)
    clamps = ClampSet(tuple(Clamp.parse(c) for c in clamp))
    clamps.check(cfg.n_layers, cfg.n_heads)
    path = train_run(make_task(task), clamps.clamps, out, cfg)  # type: ignore[arg-type]
    typer.echo(f"wrote {path}")
