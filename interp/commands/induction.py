"""`interp induction [scores] RUN --out DIR`: induction-head scores at every checkpoint of a run and when each head
formed; `interp induction train --task repeat|bursty --clamp KIND:L.H --out RUN`: clamped training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click
import typer
from typer.core import TyperGroup

from interp.cli import app
from interp.errors import InterpError


class _ScoresByDefault(TyperGroup):
    """`interp induction RUN ...` means `interp induction scores RUN ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["scores", *args]
        return super().parse_args(ctx, args)


induction_app = typer.Typer(cls=_ScoresByDefault, no_args_is_help=True,
                            help="Induction-head formation across checkpoints, and clamped training runs.")
app.add_typer(induction_app, name="induction")


def _special_tokens(path: Path) -> tuple[Any, int | None, list[int]]:
    """The checkpoint's tokenizer (or None), its BOS id and the special ids random probes must avoid."""
    import json

    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError):
        bos = json.loads((path / "config.json").read_text()).get("bos_token_id")
        return None, bos, []
    return tokenizer, tokenizer.bos_token_id, list(tokenizer.all_special_ids)


def _documents(text: Path, tokenizer: Any, length: int, batch: int) -> Any:
    """`batch` windows of `length` tokens packed from the file's documents (one per line), BOS/EOS between them."""
    import torch

    if tokenizer is None:
        raise InterpError("--text needs a tokenizer, but the checkpoint has none", fix="drop --text")
    docs = [line.strip() for line in text.read_text().splitlines() if line.strip()]
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream += [t for t in (tokenizer.bos_token_id, *ids, tokenizer.eos_token_id) if t is not None]
    n = min(batch, len(stream) // length)
    if n == 0:
        raise InterpError(f"{text} holds {len(stream)} tokens, fewer than one window of {length}",
                          fix="pass a longer text file (one document per line)")
    return torch.tensor(stream[: n * length]).reshape(n, length)


def _score_checkpoint(nt: Any, probe: Any, forward: Any, cache: Path, key: str) -> dict[str, Any]:
    """Scores of one checkpoint, reused from `cache` when it was computed with the same probe settings."""
    from safetensors import safe_open

    from interp.dynamics.induction import checkpoint_scores
    from interp.results import atomic_save_tensors

    if cache.is_file():
        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return {name: f.get_tensor(name) for name in f.keys()}
    scores = checkpoint_scores(nt, probe, forward)
    atomic_save_tensors(cache, scores, {"key": key})
    return scores


def run_induction(run: Path, out: Path, seq_len: int = 50, batch: int = 10, text: Path | None = None,
                  threshold: float = 0.4, seed: int = 0, use_clamps: bool = True, device: str = "cpu") -> Path:
    """Score every checkpoint of `run`, detect formation, and write the results directory."""
    import json

    import torch
    from tqdm import tqdm

    from interp.checkpoints import Run
    from interp.dynamics.clamping import ClampSet, read_run_clamps
    from interp.dynamics.formation import detect_formation
    from interp.dynamics.induction import SCORE_NAMES, make_probe
    from interp.dynamics.induction_report import heatmaps, loss_curves, score_curves
    from interp.models.native import NativeTransformer
    from interp.results import write_results

    checkpoints = Run.open(run)
    checkpoints.check_compatible()
    ckpts = checkpoints.checkpoints
    steps = [c.step if c.step is not None else i for i, c in enumerate(ckpts)]
    tokenizer, bos, specials = _special_tokens(ckpts[0].path)
    clamps = read_run_clamps(checkpoints.path) if use_clamps else ClampSet()
    per_step: dict[str, list[torch.Tensor]] = {}
    probe = None
    for ckpt in tqdm(ckpts, desc=f"induction scores {checkpoints.path.name}"):
        nt = NativeTransformer.from_pretrained(ckpt.path, device=device)
        if probe is None:
            cfg = nt.cfg
            clamps.check(cfg.n_layers, cfg.n_heads)
            docs = _documents(text, tokenizer, min(cfg.n_ctx, 512), batch) if text is not None else None
            probe = make_probe(cfg.d_vocab, cfg.n_ctx, bos, specials, seq_len, batch, documents=docs, seed=seed)
            key = json.dumps([seq_len, batch, str(text), seed, [str(c) for c in clamps.clamps]])
        stamp = max(f.stat().st_mtime_ns for f in ckpt.path.iterdir() if f.is_file())  # retrained -> recompute
        scores = _score_checkpoint(nt, probe, clamps.forward if clamps.clamps else None,
                                   out / "per_checkpoint" / f"{ckpt.label}.safetensors", f"{key} {ckpt.path} {stamp}")
        for name, value in scores.items():
            per_step.setdefault(name, []).append(value)
        del nt
    tensors = {name: torch.stack(values) for name, values in per_step.items()}
    tensors["steps"] = torch.tensor(steps)
    formation = detect_formation(steps, tensors["induction"], tensors["icl_score"], threshold,
                                 exclude=clamps.pattern_clamped)
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
        "induction_heads": formation.to_json(),
        "final_checkpoint": final,
        "tensors": {"induction|previous_token|duplicate_token|prefix_matching|copying": "[checkpoint, layer, head]",
                    "icl_score|loss": "[checkpoint]", "loss_by_position": "[checkpoint, pos-1]: loss on token t+1",
                    "steps": "[checkpoint]"},
    }
    scores = {name: tensors[name] for name in SCORE_NAMES}
    figures = [*score_curves(steps, scores, formation),
               loss_curves(steps, tensors["icl_score"], tensors["loss"], formation),
               *heatmaps(steps, {k: scores[k] for k in ("induction", "previous_token")})]
    return write_results(out, tensors, summary, figures, title=f"induction heads: {checkpoints.path.name}",
                         analysis="induction")


@induction_app.command("scores")
def scores(
    run: Path = typer.Argument(..., help="A run directory of checkpoints (or one checkpoint)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    seq_len: int = typer.Option(50, help="Length T of the repeated random segment [BOS, r_1..r_T, r_1..r_T]."),
    batch: int = typer.Option(10, help="Sequences per probe batch."),
    text: Optional[Path] = typer.Option(None, help="Documents (one per line) for the ICL score; default: repeats."),
    threshold: float = typer.Option(0.4, help="A head whose induction score reaches this is an induction head."),
    seed: int = typer.Option(0, help="Seed for the random probe tokens."),
    clamps: bool = typer.Option(True, help="Apply the clamps a clamped training run recorded in run.json."),
    device: str = typer.Option("cpu", help="torch device."),
) -> None:
    """Scores of every head at every checkpoint, the formation step of each induction head, and the ICL curve."""
    path = run_induction(run, out, seq_len, batch, text, threshold, seed, clamps, device)
    import json

    heads = json.loads((path / "summary.json").read_text())["induction_heads"]
    for h in heads["heads"]:
        typer.echo(f"L{h['layer']}H{h['head']}: forms at step {h['step']} (from {h['previous_step']}), "
                   f"score {h['first_score']:.2f} -> {h['final_score']:.2f}, aligned with ICL drop: "
                   f"{h['aligned_with_icl']}")
    if not heads["heads"]:
        typer.echo(f"no head reached induction score {threshold}")
    typer.echo(f"steepest ICL-score drop at step {heads['icl_drop_step']}\nwrote {path}")


@induction_app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Run directory to write (checkpoints step_NNNNNN/)."),
    task: str = typer.Option("repeat", help="repeat (repeated random tokens) or bursty (Reddy-style)."),
    clamp: list[str] = typer.Option([], "--clamp", help="KIND:LAYER.HEAD, KIND in prev, induction, copy; "
                                                         "repeatable."),
    steps: int = typer.Option(800, help="Training steps."),
    lr: float = typer.Option(3e-4, help="Adam learning rate."),
    batch: int = typer.Option(32, help="Sequences per step."),
    seed: int = typer.Option(0, help="Seed for initialisation and data."),
    save_every: int = typer.Option(20, help="Checkpoint every this many steps."),
) -> None:
    """Train a 2-layer attention-only GPT-2 on a synthetic in-context task with clamped activations."""
    from interp.dynamics.clamping import Clamp, TrainConfig, train as train_run
    from interp.dynamics.tasks import make_task

    if task not in ("repeat", "bursty"):
        raise InterpError(f"unknown task {task!r}", fix="use --task repeat or --task bursty")
    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, save_every=save_every)
    path = train_run(make_task(task), [Clamp.parse(c) for c in clamp], out, cfg)  # type: ignore[arg-type]
    typer.echo(f"wrote {path}")
