"""TransformerLens's `patching` module against interp's engine, same model and inputs, in one run.

Sweeps: the residual stream (`get_act_patch_resid_pre`, layers x positions) and attention heads over all positions
(`get_act_patch_attn_head_out_all_pos`, layers x heads), on (i) a zoo checkpoint and (ii) a random-initialised
GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, vocabulary 50257), batch 8 x 32 tokens, fp32.
The corrupted prompts differ from the clean ones at one position (8 of 32, as when a subject is swapped after a
shared prefix); interp is also timed on prompts that differ at position 0, its worst case (TransformerLens's cost
does not depend on where prompts differ). Forward FLOPs are counted with `torch.utils.flop_counter`.

TransformerLens's cost per cell is the same for every cell (one full forward), so by default it is timed on 24 cells
per sweep spread over the grid and its full-sweep time extrapolated (`--tl-cells 0` times every cell; on this shared
2-core CPU a full GPT-2-small sweep takes about an hour). Its results are compared with interp's on the timed cells.

Run: `.venv/bin/python benchmarks/patching.py [--device cpu|cuda] [--zoo PATH] [--tl-cells N] [--quick]`;
writes benchmarks/results/patching-<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

# This file is named like the package it measures: keep its own directory off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import transformer_lens.patching as tlp  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

from interp.models.native import NativeTransformer  # noqa: E402
from patching import activation_patch, metrics  # noqa: E402

BATCH, LENGTH, DIFF_POS = 8, 32, 8
DIFF_POSITIONS = (8, 0, 16, 24)
# TransformerLens's own setters behind get_act_patch_resid_pre and get_act_patch_attn_head_out_all_pos
SWEEPS = {"resid_pre": (tlp.layer_pos_patch_setter, "pos"), "z": (tlp.layer_head_vector_patch_setter, "head")}


def gpt2_small_dir(root: Path, n_layers: int) -> Path:
    """A random-initialised GPT-2-small-shaped checkpoint directory (eager attention, so the bridge is exact)."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from interp.testing import train_tiny_tokenizer

    cfg = GPT2Config(n_layer=n_layers, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    model.save_pretrained(root)
    train_tiny_tokenizer().save_pretrained(root)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, "attn_implementation": "eager"}))
    return root


def inputs(vocab: int, diff_pos: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, metrics.LogitDiff]:
    """Clean prompts, corrupted ones differing at `diff_pos` in every prompt, and a logit-difference metric."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, vocab, (BATCH, LENGTH), generator=g)
    corrupted = clean.clone()
    corrupted[:, diff_pos] = (clean[:, diff_pos] + 1 + torch.randint(0, vocab - 5, (BATCH,), generator=g)) % vocab
    answers = torch.randint(4, vocab, (2, BATCH), generator=g)
    return clean, corrupted, metrics.LogitDiff(answers[0], answers[1])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def counted(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """Result, wall seconds and forward FLOPs of one call (FlopCounterMode's small dispatch cost is included)."""
    with FlopCounterMode(display=False) as counter:
        out, seconds = timed(fn)
    return out, seconds, int(counter.get_total_flops())


def sampled_cells(shape: tuple[int, int], n: int, axis: str) -> pd.DataFrame:
    """`n` grid cells spread evenly over a sweep (every cell when n is 0 or covers the grid)."""
    cells = list(itertools.product(*(range(k) for k in shape)))
    if 0 < n < len(cells):
        cells = [cells[round(i * (len(cells) - 1) / (n - 1))] for i in range(n)]
    return pd.DataFrame(cells, columns=["layer", axis])


def compare(name: str, path: Path, device: str, tl_cells: int) -> dict[str, Any]:
    """Both sweeps on one checkpoint: wall times, ratio, FLOPs and the largest disagreement."""
    bridge = TransformerBridge.boot_transformers(str(path), device=device)
    nt = NativeTransformer.from_pretrained(path, device=device)
    vocab = nt.cfg.d_vocab
    clean, corrupted, metric = inputs(vocab, DIFF_POS)
    clean, corrupted = clean.to(device), corrupted.to(device)
    out: dict[str, Any] = {"model": name, "path": str(path), "n_layers": nt.cfg.n_layers, "d_model": nt.cfg.d_model,
                           "n_heads": nt.cfg.n_heads, "d_vocab": vocab, "batch": BATCH, "tokens": LENGTH}
    _, forward_seconds, one_forward = counted(lambda: bridge(corrupted))
    for site, (setter, axis) in SWEEPS.items():
        shape = (nt.cfg.n_layers, LENGTH if axis == "pos" else nt.cfg.n_heads)
        cells = sampled_cells(shape, tl_cells, axis)
        (_, cache), _ = timed(lambda: bridge.run_with_cache(clean))  # warm-up of both TransformerLens paths, untimed
        tlp.generic_activation_patch(bridge, corrupted, cache, metric, patch_setter=setter, activation_name=site,
                                     index_df=cells.iloc[:1])
        (_, cache), cache_seconds = timed(lambda: bridge.run_with_cache(clean))
        tl_values, tl_cells_seconds = timed(lambda: tlp.generic_activation_patch(
            bridge, corrupted, cache, metric, patch_setter=setter, activation_name=site, index_df=cells))
        n_cells = shape[0] * shape[1]
        tl_seconds = cache_seconds + tl_cells_seconds * n_cells / len(cells)
        row: dict[str, Any] = {
            "transformer_lens_seconds": tl_seconds, "transformer_lens_cells_timed": len(cells),
            "transformer_lens_cells": n_cells, "transformer_lens_forwards": n_cells + 1,
            "transformer_lens_forward_flops": one_forward * (n_cells + 1),
        }
        activation_patch(nt, clean, corrupted, site=site, metric=metric)  # warm-up, not timed
        for diff_pos in DIFF_POSITIONS:
            corr = corrupted if diff_pos == DIFF_POS else inputs(vocab, diff_pos)[1].to(device)
            got, seconds, flops = counted(lambda: activation_patch(nt, clean, corr, site=site, metric=metric))
            key = "interp" if diff_pos == DIFF_POS else f"interp_diff_at_{diff_pos}"
            row[key] = {"seconds": seconds, "forward_flops": flops, "speedup": tl_seconds / seconds,
                        "flop_ratio": row["transformer_lens_forward_flops"] / flops, "variants_run": got.n_run,
                        "variants_skipped": got.n_skipped}
            if diff_pos == DIFF_POS:
                ours = got.raw[tuple(torch.tensor(cells[c].to_numpy()) for c in cells.columns)]
                row["max_abs_diff_on_timed_cells"] = float((ours.cpu() - tl_values.cpu().float()).abs().max())
        out[site] = row
        main_row = row["interp"]
        print(f"{name} {site}: TransformerLens {tl_seconds:.1f} s ({len(cells)}/{n_cells} cells timed), interp "
              f"{main_row['seconds']:.2f} s: x{main_row['speedup']:.1f}; forward FLOPs "
              f"{row['transformer_lens_forward_flops']:.3g} vs {main_row['forward_flops']:.3g} "
              f"(x{main_row['flop_ratio']:.1f}); max |diff| {row['max_abs_diff_on_timed_cells']:.2g}; "
              + ", ".join(f"diff at {d}: x{row[f'interp_diff_at_{d}']['speedup']:.1f}" for d in DIFF_POSITIONS
                          if d != DIFF_POS), flush=True)
    return out


def zoo_checkpoint(given: str | None) -> Path | None:
    """The zoo base run's last checkpoint (`--zoo` or `interp.zoo.default_zoo()`), None if no zoo is built."""
    from interp.checkpoints import discover

    if given is not None:
        root = Path(given)
    else:
        root = Path("data/zoo")
        if not (root / "manifest.json").is_file():
            from interp.zoo.build import cache_dir

            built = sorted(cache_dir().glob("full-seed0-*/manifest.json")) if cache_dir().is_dir() else []
            if not built:
                return None
            root = built[-1].parent
    return discover(root / "base")[-1].path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--zoo", default=None, help="zoo root (default data/zoo or the cached full zoo)")
    parser.add_argument("--quick", action="store_true", help="only a 2-layer GPT-2-shaped model, nothing written")
    parser.add_argument("--models", default="zoo,gpt2",
                        help="which to run (results for the others are kept from the previous file)")
    parser.add_argument("--tl-cells", type=int, default=24,
                        help="TransformerLens cells timed per sweep (its cost per cell is constant, so the full "
                             "sweep's time is extrapolated); 0 runs every cell")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = {"command": " ".join([".venv/bin/python", *sys.argv]), "device": args.device,
               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "load_average_at_start": os.getloadavg(), "platform": platform.platform(),
                           "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
               "models": []}
    out = Path(__file__).parent / "results" / f"patching-{args.device}.json"
    previous = json.loads(out.read_text())["models"] if out.is_file() and not args.quick else []
    models = {m["kind"]: m for m in previous if "kind" in m}
    if "zoo" in args.models and not args.quick:
        zoo = zoo_checkpoint(args.zoo)
        if zoo is None:
            print("no built zoo found: skipping the zoo checkpoint (build it with `interp zoo build --out data/zoo`)")
        else:
            models["zoo"] = {"kind": "zoo", "command": results["command"], **results["machine"],
                             **compare(f"zoo {zoo.parent.name}/{zoo.name}", zoo, args.device, args.tl_cells)}
    if "gpt2" in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            path = gpt2_small_dir(Path(tmp), 2 if args.quick else 12)
            models["gpt2"] = {"kind": "gpt2", "command": results["command"], **results["machine"],
                              **compare("gpt2-small-shaped random init", path, args.device, args.tl_cells)}
    if not args.quick:
        results["models"] = list(models.values())
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
