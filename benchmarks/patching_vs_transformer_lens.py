"""TransformerLens's `patching` module against interp's engine, same model and inputs, in one run.

Sweeps: the residual stream (`get_act_patch_resid_pre`, layers x positions) and attention heads over all positions
(`get_act_patch_attn_head_out_all_pos`, layers x heads), on (i) a zoo checkpoint and (ii) a random-initialised
GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, vocabulary 50257), batch 8 x 32 tokens, fp32.
The corrupted prompts differ from the clean ones at one position (8 of 32, as when a subject is swapped after a
shared prefix); interp is also timed on prompts that differ at position 0, its worst case (TransformerLens's cost
does not depend on where prompts differ). Forward FLOPs are counted with `torch.utils.flop_counter`.

TransformerLens's cost per cell is the same for every cell (one full forward), so on CPU it is by default timed on 24
cells per sweep spread over the grid and its full-sweep time extrapolated (`--tl-cells 0` times every cell; on this
shared 2-core CPU a full GPT-2-small sweep takes about an hour). Its results are compared with interp's on the timed
cells.

On CUDA (`--device cuda`): the default is `--tl-cells 0`, every cell timed and compared (a GPT-2-small run is 530
bridge forwards of 8 x 32 tokens, seconds on a modern GPU, so nothing is extrapolated); every timed region is bracketed
by `torch.cuda.synchronize()`; TF32 is off (true fp32, so the differences are comparable with the CPU run's); interp's
forward FLOPs are counted in a separate untimed run (FlopCounterMode's per-operation dispatch cost is not small next to
GPU kernels) that doubles as a warm-up (Triton compiles each new kernel specialisation there, not in a timed run); and
each interp sweep is timed `--repeats` times (default 3 on CUDA, 1 on CPU), the median reported.

`--backends torch,triton` times interp's engine with each patching backend (`activation_patch(..., backend=...)`) in
the same run, on the same model and inputs: per backend its times, speedups and the largest difference from
TransformerLens; for the others also the largest difference from the first backend's sweep and
`seconds_ratio_vs_<first>` (the first backend's time over this one's: above 1 is faster).
The top-level `interp*` entries and `max_abs_diff_on_timed_cells` stay those of the first backend listed. Triton needs
a CUDA device (or TRITON_INTERPRET=1 on CPU, for debugging only: the interpreter's times mean nothing).

Run from the repository root: `.venv/bin/python -m benchmarks.patching_vs_transformer_lens [--device cpu|cuda]
[--zoo PATH] [--tl-cells N] [--quick] [--backends torch,triton] [--repeats N]` (or the file as a script); writes
benchmarks/results/patching-<device>.json, the command line inside.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

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


def sync(device: str) -> None:
    """Wait for queued GPU work, so wall time covers the kernels and not only their launches."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def counted(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, float, int]:
    """Result, wall seconds and forward FLOPs of one call (FlopCounterMode's small dispatch cost is included)."""
    with FlopCounterMode(display=False) as counter:
        out, seconds = timed(fn, device)
    return out, seconds, int(counter.get_total_flops())


def measured(fn: Callable[[], Any], device: str, repeats: int) -> tuple[Any, float, int, list[float]]:
    """Result, wall seconds, forward FLOPs and every timing of `fn`.

    CPU with one repeat: `counted` (timed under the FLOP counter, as the CPU results were measured). Otherwise the
    FLOPs come from an untimed counted run (also a warm-up) and the time is the median of `repeats` plain runs."""
    if torch.device(device).type != "cuda" and repeats == 1:
        out, seconds, flops = counted(fn, device)
        return out, seconds, flops, [seconds]
    with FlopCounterMode(display=False) as counter:
        fn()
    times = []
    for _ in range(repeats):
        out, seconds = timed(fn, device)
        times.append(seconds)
    return out, statistics.median(times), int(counter.get_total_flops()), times


def sampled_cells(shape: tuple[int, int], n: int, axis: str) -> pd.DataFrame:
    """`n` grid cells spread evenly over a sweep (every cell when n is 0 or covers the grid)."""
    cells = list(itertools.product(*(range(k) for k in shape)))
    if 0 < n < len(cells):
        cells = [cells[round(i * (len(cells) - 1) / (n - 1))] for i in range(n)]
    return pd.DataFrame(cells, columns=["layer", axis])


def compare(name: str, path: Path, device: str, tl_cells: int, backends: tuple[str, ...] = ("torch",),
            repeats: int = 1) -> dict[str, Any]:
    """Both sweeps on one checkpoint: wall times, ratio, FLOPs and the largest disagreement, for each backend."""
    bridge = TransformerBridge.boot_transformers(str(path), device=device)
    nt = NativeTransformer.from_pretrained(path, device=device)
    vocab = nt.cfg.d_vocab
    clean, corrupted, metric = inputs(vocab, DIFF_POS)
    clean, corrupted = clean.to(device), corrupted.to(device)
    out: dict[str, Any] = {"model": name, "path": str(path), "n_layers": nt.cfg.n_layers, "d_model": nt.cfg.d_model,
                           "n_heads": nt.cfg.n_heads, "d_vocab": vocab, "batch": BATCH, "tokens": LENGTH}
    _, forward_seconds, one_forward = counted(lambda: bridge(corrupted), device)
    first = backends[0]
    for site, (setter, axis) in SWEEPS.items():
        shape = (nt.cfg.n_layers, LENGTH if axis == "pos" else nt.cfg.n_heads)
        cells = sampled_cells(shape, tl_cells, axis)
        (_, cache), _ = timed(lambda: bridge.run_with_cache(clean), device)  # warm-up of both TransformerLens paths
        tlp.generic_activation_patch(bridge, corrupted, cache, metric, patch_setter=setter, activation_name=site,
                                     index_df=cells.iloc[:1])
        (_, cache), cache_seconds = timed(lambda: bridge.run_with_cache(clean), device)
        tl_values, tl_cells_seconds = timed(lambda: tlp.generic_activation_patch(
            bridge, corrupted, cache, metric, patch_setter=setter, activation_name=site, index_df=cells), device)
        tl_values = tl_values.cpu().float()
        n_cells = shape[0] * shape[1]
        tl_seconds = cache_seconds + tl_cells_seconds * n_cells / len(cells)
        row: dict[str, Any] = {
            "transformer_lens_seconds": tl_seconds, "transformer_lens_cells_timed": len(cells),
            "transformer_lens_cells": n_cells, "transformer_lens_forwards": n_cells + 1,
            "transformer_lens_forward_flops": one_forward * (n_cells + 1),
        }
        index = tuple(torch.tensor(cells[c].to_numpy()) for c in cells.columns)
        per_backend: dict[str, dict[str, Any]] = {}
        first_raw: dict[int, torch.Tensor] = {}
        for backend in backends:
            activation_patch(nt, clean, corrupted, site=site, metric=metric, backend=backend)  # warm-up, not timed
            entry: dict[str, Any] = {}
            for diff_pos in DIFF_POSITIONS:
                corr = corrupted if diff_pos == DIFF_POS else inputs(vocab, diff_pos)[1].to(device)
                got, seconds, flops, times = measured(
                    lambda: activation_patch(nt, clean, corr, site=site, metric=metric, backend=backend), device,
                    repeats)
                result = {"seconds": seconds, "forward_flops": flops, "speedup": tl_seconds / seconds,
                          "flop_ratio": row["transformer_lens_forward_flops"] / flops, "variants_run": got.n_run,
                          "variants_skipped": got.n_skipped}
                if repeats > 1:
                    result["seconds_each_run"] = times
                if backend != first:
                    result["seconds_ratio_vs_" + first] = per_backend[first][f"diff_at_{diff_pos}"]["seconds"] / seconds
                    result["max_abs_diff_vs_" + first] = float((got.raw - first_raw[diff_pos]).abs().max())
                else:
                    first_raw[diff_pos] = got.raw
                entry[f"diff_at_{diff_pos}"] = result
                if diff_pos == DIFF_POS:
                    vs_tl = float((got.raw[index] - tl_values).abs().max())
            entry["max_abs_diff_vs_transformer_lens_on_timed_cells"] = vs_tl
            per_backend[backend] = entry
        # The first backend's numbers under the keys the CPU results have always used.
        for diff_pos in DIFF_POSITIONS:
            key = "interp" if diff_pos == DIFF_POS else f"interp_diff_at_{diff_pos}"
            row[key] = {k: v for k, v in per_backend[first][f"diff_at_{diff_pos}"].items() if k != "seconds_each_run"}
        row["max_abs_diff_on_timed_cells"] = per_backend[first]["max_abs_diff_vs_transformer_lens_on_timed_cells"]
        if backends != ("torch",) or repeats > 1:
            row["backends"] = per_backend
        out[site] = row
        for backend in backends:
            main_row = per_backend[backend][f"diff_at_{DIFF_POS}"]
            versus = (f"; {main_row['seconds_ratio_vs_' + first]:.2f}x the speed of {first}, max |diff| from it "
                      f"{main_row['max_abs_diff_vs_' + first]:.2g}" if backend != first else "")
            print(f"{name} {site} [{backend}]: TransformerLens {tl_seconds:.2f} s ({len(cells)}/{n_cells} cells "
                  f"timed), interp {main_row['seconds']:.3f} s: x{main_row['speedup']:.1f}; forward FLOPs "
                  f"{row['transformer_lens_forward_flops']:.3g} vs {main_row['forward_flops']:.3g} "
                  f"(x{main_row['flop_ratio']:.1f}); max |diff| vs TransformerLens "
                  f"{per_backend[backend]['max_abs_diff_vs_transformer_lens_on_timed_cells']:.2g}{versus}; "
                  + ", ".join(f"diff at {d}: x{per_backend[backend][f'diff_at_{d}']['speedup']:.1f}"
                              for d in DIFF_POSITIONS if d != DIFF_POS), flush=True)
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
    parser.add_argument("--tl-cells", type=int, default=None,
                        help="TransformerLens cells timed per sweep (its cost per cell is constant, so the full "
                             "sweep's time is extrapolated); 0 runs every cell (default 24 on CPU, 0 on CUDA)")
    parser.add_argument("--backends", default="torch",
                        help="comma-separated patching backends to time side by side: torch, triton, auto")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per interp sweep, median reported (default 1 on CPU, 3 on CUDA)")
    args = parser.parse_args()
    on_cuda = torch.device(args.device).type == "cuda"
    tl_cells = args.tl_cells if args.tl_cells is not None else (0 if on_cuda else 24)
    repeats = args.repeats if args.repeats is not None else (3 if on_cuda else 1)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    torch.set_grad_enabled(False)
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32, as on CPU
    python = sys.executable
    if Path(python).is_relative_to(Path.cwd()):  # the checkout's venv: .venv/bin/python, as the CPU runs record it
        python = os.path.relpath(python)
    else:
        python = Path(python).name
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "load_average_at_start": os.getloadavg(), "platform": platform.platform(),
                               "torch": torch.__version__,
                               "gpu": torch.cuda.get_device_name(args.device) if on_cuda else None}
    if on_cuda:
        import transformer_lens
        import transformers
        import triton

        machine.update({"cuda": torch.version.cuda, "triton": triton.__version__,
                        "transformers": transformers.__version__,
                        "transformer_lens": getattr(transformer_lens, "__version__", None), "tf32": False,
                        "backends": list(backends), "repeats": repeats, "tl_cells": tl_cells})
    results = {"command": " ".join([python, *sys.orig_argv[1:]]), "device": args.device, "machine": machine,
               "models": []}
    out = Path(__file__).parent / "results" / f"patching-{torch.device(args.device).type}.json"
    previous = json.loads(out.read_text())["models"] if out.is_file() and not args.quick else []
    models = {m["kind"]: m for m in previous if "kind" in m}
    if "zoo" in args.models and not args.quick:
        zoo = zoo_checkpoint(args.zoo)
        if zoo is None:
            print("no built zoo found: skipping the zoo checkpoint (build it with `interp zoo build --out data/zoo`)")
        else:
            models["zoo"] = {"kind": "zoo", "command": results["command"], **results["machine"],
                             **compare(f"zoo {zoo.parent.name}/{zoo.name}", zoo, args.device, tl_cells, backends,
                                     repeats)}
    if "gpt2" in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            path = gpt2_small_dir(Path(tmp), 2 if args.quick else 12)
            models["gpt2"] = {"kind": "gpt2", "command": results["command"], **results["machine"],
                              **compare("gpt2-small-shaped random init", path, args.device, tl_cells, backends,
                                      repeats)}
    if not args.quick:
        results["models"] = list(models.values())
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
