"""The full zoo's training step in float32 and under bfloat16 autocast (what `interp.zoo.train` uses), in one run.

Both runs start from the same initial weights and see the same batches of the base run; timed steps alternate between
the two precisions so that machine load falls on both alike. Reports seconds per step, their ratio, and the losses
of the two runs after the last step (they should stay close: autocast rounds matmul inputs, not the weights).

Run from the repository root: `.venv/bin/python -m benchmarks.zoo_training [--steps 20] [--threads 2]` (or the file as
a script);
writes benchmarks/results/zoo-training-cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch

from interp.zoo.build import FULL
from interp.zoo.tokenizer import train_tokenizer
from interp.zoo.train import _optimizer, batches, new_model, next_token_loss

RESULTS = Path(__file__).parent / "results" / "zoo-training-cpu.json"
PRECISIONS = {"float32": contextlib.nullcontext, "bfloat16_autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per precision (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = train_tokenizer()
    data = batches("base", FULL.base, tokenizer, seed=0)
    models = {name: new_model(FULL.model, tokenizer, seed=0) for name in PRECISIONS}
    optimizers = {name: _optimizer(model, FULL.base) for name, model in models.items()}
    seconds = {name: 0.0 for name in PRECISIONS}
    losses = {name: 0.0 for name in PRECISIONS}
    for step in range(3 + args.steps):
        tokens, mask = next(data)
        for name, autocast in PRECISIONS.items():
            started = time.perf_counter()
            with autocast():
                loss = next_token_loss(models[name], tokens, mask)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if step >= 3:
                seconds[name] += time.perf_counter() - started
            losses[name] = loss.item()
    per_step = {name: seconds[name] / args.steps for name in PRECISIONS}
    result = {
        "command": f"python -m benchmarks.zoo_training --steps {args.steps} --threads {args.threads}",
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
        "torch": torch.__version__, "batch": [FULL.base.batch_size, FULL.base.seq_len],
        "seconds_per_step": {name: round(s, 4) for name, s in per_step.items()},
        "bfloat16_over_float32_time": round(per_step["bfloat16_autocast"] / per_step["float32"], 3),
        "final_loss": {name: round(loss, 4) for name, loss in losses.items()},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
