"""Refusal-direction selection before and after issue 17, in one run on the same model and requests.

Before: for every layer, the post model's direction at the last prompt token is ablated at every layer and 16 greedy
tokens are generated for each of 32 harmful training requests; the layer leaving the fewest refusals wins (later
layer on ties). That code lives only here now. After: Arditi et al. (2024)'s selection (`select_direction`): one
forward per candidate over 32 harmful + 2 x 32 harmless requests, scored by refusal-token log-odds and KL, over the
layers below 0.8 n_layers. Both are timed on the same position (-1) so that the ratio compares like with like; the
command's default also scores every other post-instruction position, and costs the measured seconds per candidate
times the number of candidates (reported as an extrapolation, not timed). Direction extraction (the same for both) is
timed apart. The model is a tiny random Llama (`interp.testing.tiny_checkpoint`), so what it picks means nothing
(Arditi et al.'s filters may reject every candidate of a random model: the run records that); the costs are what count.

Run from the repository root: `.venv/bin/python -m benchmarks.refusal_selection [--layers 30] [--requests 32]
[--threads 1]` (or the file as a script);
writes benchmarks/results/refusal-selection-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from interp.errors import InterpError
from interp.base_vs_post import refusal
from interp.data.judges import REFERENCE
from interp.loading import load
from interp.models.hooked import HookedModel
from interp.testing import tiny_checkpoint
from interp.data.sources import source
from probes.directions import unit
from probes.steering import ablate_hooks

RESULTS = Path(__file__).parent / "results" / "refusal-selection-cpu.json"
TEMPLATE = "User: {instruction}\nAssistant:"


def generation_selection(model: HookedModel, prompt: refusal.PromptFn, directions: torch.Tensor,
                         harmful: Sequence[str], max_new_tokens: int, judge: Callable[[str], bool],
                         batch_size: int) -> tuple[int, list[float]]:
    """The selection before issue 17 (`select_layer`, removed from the library): per layer, the fraction of greedy
    generations judged refusals with that layer's unit direction ablated at every layer; argmin, later layer on ties."""
    n_layers = directions.shape[0]
    scores = [refusal.refusal_score(model, prompt, harmful, ablate_hooks(unit(directions[layer]), n_layers),
                                    max_new_tokens, judge, batch_size)[0] for layer in range(n_layers)]
    return min(range(n_layers), key=lambda layer: (scores[layer], -layer)), scores


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), wall seconds)."""
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def logit_selection(model: HookedModel, prompt: refusal.PromptFn, candidates: torch.Tensor, positions: list[int],
                    harmful: Sequence[str], harmless: Sequence[str], batch_size: int) -> dict[str, Any]:
    """`select_direction` over the layers below 0.8 n_layers: its pick, or the error a random model may give."""
    layers = refusal.candidate_layers(candidates.shape[1])
    try:
        selection = refusal.select_direction(model, prompt, candidates[:, layers], positions, layers, harmful,
                                             harmless, REFERENCE, batch_size)
    except InterpError as err:
        return {"candidates": len(positions) * len(layers), "error": err.message}
    return {"candidates": len(positions) * len(layers), "chosen": selection.summary()["chosen"],
            "fallback": selection.fallback, "passed": int(selection.passed.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30, help="layers of the tiny random Llama")
    parser.add_argument("--requests", type=int, default=32, help="harmful (and harmless) requests scored")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="greedy tokens per request (old selection)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    harmful, harmless = (x[:args.requests] for x in source().refusal_requests("train"))
    with tempfile.TemporaryDirectory() as tmp:
        model = load(tiny_checkpoint("llama", Path(tmp) / "tiny", num_hidden_layers=args.layers), backend="native")
        prompt = refusal.template_prompt(model.tokenizer, TEMPLATE)
        positions = refusal.post_instruction_positions([prompt(x) for x in [*harmful, *harmless]])
        candidates, extract_s = timed(lambda: refusal.candidate_directions(model, prompt, harmful, harmless,
                                                                           positions, args.batch_size))
        last = candidates[-1:]  # position -1, both methods
        new, new_s = timed(lambda: logit_selection(model, prompt, last, [-1], harmful, harmless, args.batch_size))
        (old_layer, old_scores), old_s = timed(lambda: generation_selection(
            model, prompt, last[0], harmful, args.max_new_tokens, REFERENCE, args.batch_size))
    per_candidate = new_s / new["candidates"]
    default_candidates = len(positions) * len(refusal.candidate_layers(args.layers))
    lengths = [len(prompt(x)) for x in [*harmful, *harmless]]
    result = {
        "command": f".venv/bin/python -m benchmarks.refusal_selection --layers {args.layers} --requests "
                   f"{args.requests} --max-new-tokens {args.max_new_tokens} --batch-size {args.batch_size} "
                   f"--threads {args.threads}",
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "threads": args.threads, "torch": torch.__version__,
        "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "model": {"architecture": "llama (tiny random)", "layers": args.layers, "d_model": model.native().cfg.d_model,
                  "d_vocab": model.native().cfg.d_vocab},
        "requests": {"harmful": len(harmful), "harmless": len(harmless), "prompt_tokens": [min(lengths), max(lengths)]},
        "template": TEMPLATE, "post_instruction_positions": positions,
        "seconds": {"direction_extraction_all_positions": round(extract_s, 2),
                    "old_generation_selection_pos_-1": round(old_s, 2),
                    "new_logit_selection_pos_-1": round(new_s, 2)},
        "old_over_new_time_pos_-1": round(old_s / new_s, 2),
        "old": {"candidates": args.layers, "seconds_per_candidate": round(old_s / args.layers, 3),
                "chosen_layer": old_layer, "refusal_rates": [round(s, 4) for s in old_scores]},
        "new": {**new, "seconds_per_candidate": round(per_candidate, 3)},
        "new_default_every_position_extrapolated": {
            "candidates": default_candidates, "seconds": round(per_candidate * default_candidates, 1),
            "old_over_new_time": round(old_s / (per_candidate * default_candidates), 2)},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
