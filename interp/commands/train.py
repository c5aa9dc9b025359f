"""`interp induction train --task repeat|bursty --clamp KIND:L.H --out RUN`: clamped training runs (Singh et al. 2024),
a training tool beside the `interp induction scores` analysis."""

from __future__ import annotations

from pathlib import Path

import typer

from interp.cli import group
from interp.errors import InterpError
from interp.outdir import check_out


induction_app = group("induction")


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
