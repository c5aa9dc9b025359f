"""Per-sample projection gradients three ways: input x output-gradient einsum (what interp uses),
`torch.func.vmap(grad(...))` over `functional_call`, and one backward pass per sample.

Run from the repository root: `.venv/bin/python -m benchmarks.gradients [--threads N]` (or the file as a script);
writes benchmarks/results/gradients.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from transformers import AutoModelForCausalLM, LlamaConfig

from interp.dynamics.gradients.per_sample import IGNORE, per_sample_gradients

BATCH, LENGTH, PROMPT = 8, 128, 32


def _model() -> torch.nn.Module:
    cfg = LlamaConfig(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8,
                      intermediate_size=1024, vocab_size=2000, max_position_embeddings=512)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def _attention_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "self_attn" in n and n.endswith("weight")}


def _loss(model: torch.nn.Module, params: dict[str, torch.Tensor], ids: torch.Tensor, labels: torch.Tensor):
    logits = functional_call(model, params, (ids[None],), {"use_cache": False}).logits[0, :-1]
    return F.cross_entropy(logits, labels[1:], ignore_index=IGNORE)


def method_einsum(model, ids, labels) -> None:
    _, stream = per_sample_gradients(model, ids, labels)
    for _ in stream:
        pass


def method_vmap(model, ids, labels) -> None:
    weights, every = _attention_weights(model), dict(model.named_parameters())
    vmap(grad(lambda w, i, l: _loss(model, {**every, **w}, i, l)), in_dims=(None, 0, 0))(weights, ids, labels)


def method_loop(model, ids, labels) -> None:
    weights, every = _attention_weights(model), dict(model.named_parameters())
    for row in range(ids.shape[0]):
        torch.autograd.grad(_loss(model, every, ids[row], labels[row]), list(weights.values()))


def _time(fn: Callable[[], None], repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _model()
    ids = torch.randint(4, 2000, (BATCH, LENGTH))
    labels = ids.clone()
    labels[:, :PROMPT] = IGNORE
    seconds = {name: _time(lambda fn=fn: fn(model, ids, labels))
               for name, fn in (("einsum", method_einsum), ("vmap", method_vmap), ("loop", method_loop))}
    result = {"what": f"q/k/v/o per-sample gradients, batch {BATCH} x {LENGTH} tokens, Llama d=256 6 layers",
              "threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "seconds_per_batch": seconds, "torch": torch.__version__}
    out = Path(__file__).parent / "results" / "gradients.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
