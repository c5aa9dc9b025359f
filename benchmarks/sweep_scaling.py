"""Sweeps over checkpoints one after another, on 2 local worker processes, and on Ray with 2 workers, in one run.

What is timed: `interp patch` (its Python form, `interp.analyses.patch.run(Spec(...))`, on the CPU) with sites
`resid_pre,z` (the residual stream per layer and position, and every attention head), on (i) the zoo's base run (13
checkpoints, `interp.zoo.ensure_zoo() / "base"`, its induction task: 16 prompts) and (ii) a GPT-2-small-shaped run of
8 random-initialised checkpoints (12 layers, d_model 768, 12 heads, vocabulary 50257; `gpt2_small_dir` from
`benchmarks.patching_vs_transformer_lens`, then every matrix redrawn under seed 0..7; built in a temporary directory
and deleted after) on 8 prompts x 16 tokens that differ at token 4. Each model is swept four times, each into a
fresh output directory: sequentially (`Executor()`; also on 1 thread, below), with `--workers 2`
(`Executor(workers=2)`: a spawned process pool) and with `--ray` on a local Ray instance of 2 CPUs (one task per
CPU). results.safetensors should be the same
bytes for all; the benchmark records whether it is (and the largest difference if not).

Thread counts (this machine has 2 cores): the sequential sweep runs in this process on torch's default thread count
(2 here, recorded); each worker, process or Ray, runs on 1 torch thread (the executors set torch threads to
`cpus_per_task`, 1 by default). So "2 workers" is 2 checkpoints at a time on 1 core each, against 1 checkpoint at a
time on 2 cores: the ratio measures how much better torch uses a core per model than 2 threads per model, minus the
workers' start-up cost, not a doubling of hardware. A fourth sweep, sequential on 1 torch thread
(`sequential_1_thread`), separates the two: its ratio to the executors is their parallel speed-up at equal threads
per model, and its results are the reference for the executors' bytes at equal thread counts (a matmul's summation
order can depend on the thread count, so 2-thread and 1-thread results may differ in the last bits).

Also measured: the Ray start-up (`ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")`,
timed once; the Ray sweeps then find it initialised and do not start or stop it; `import ray` timed apart), the
start-up of the executors' workers (a map of `math.sqrt` over 4 calls: for the process pool each map spawns 2 fresh
processes that import torch; for Ray the first map starts its worker processes and the next finds them warm), and
the per-checkpoint split of one checkpoint's cost into load (`interp.analyses.patch.sweep._load`) and patch
(`patch_checkpoint`), in this process on 2 threads and on 1 (the workers' count). Every checkpoint file is read once
before any timing, so all sweeps find the weights in the page cache (loads are memory copies, not disk reads), and
every checkpoint's weights are hashed once before the sweeps (`weights_sha256`, which a sweep's driver computes and
caches: otherwise the first sweep alone would pay it), that time recorded apart.

The sweeps run in this order: both sequential ones and processes for both models, then Ray is started and both
models' Ray sweeps run (so the sequential and process sweeps run without Ray's daemons beside them). `wall_seconds` is
the whole `run(spec)` call (checks, a stat per checkpoint for its cached hash, the results and report written);
`total_seconds` is the checkpoint loop alone (summary.json's `timing.total_seconds`); the ratios are a reference
sweep's seconds over the mode's, for both (above 1: faster): the sequential sweep on 2 threads, and (suffix
`_vs_1_thread`) on 1. The zoo's hashes are usually cached by earlier runs already, so its `gb_per_second` there is a
stat's speed, not sha256's.

Run from the repository root: `.venv/bin/python -m benchmarks.sweep_scaling [--quick] [--zoo RUN]` (`--quick`: the
quick zoo and a 2-layer GPT-2-shaped run of 3 checkpoints, printed, nothing written); writes
benchmarks/results/sweep-scaling-cpu.json, the command line inside. This module imports only the standard library at
its top: a spawned worker imports it again (as `__mp_main__`), as it would the CLI's entry module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SITES = "resid_pre,z"
MODES = ("sequential", "sequential_1_thread", "processes", "ray")
REFERENCES = ("sequential", "sequential_1_thread")
WORKERS = 2
GPT2_PROMPTS, GPT2_TOKENS, GPT2_DIFF_POS = 8, 16, 4  # BOS + 15 words; the corrupted prompt differs at token 4
GPT2_ANSWER, GPT2_WRONG = " cat", " dog"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s result and its wall seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# --- the runs and their tasks ---------------------------------------------------------------------------------------

def redraw(weights: Path, seed: int) -> None:
    """Redraw every weight matrix (embeddings, attention and MLP matrices) of a GPT-2 safetensors file from a normal
    of mean 0 and that matrix's own standard deviation under `seed` (GPT-2's init, its scaled output projections
    included); layer-norm parameters and biases (constants at init) are kept. A random init with another seed."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(weights))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.ndim == 2:
            tensors[name] = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * tensor.std()
    save_file(tensors, str(weights), metadata=metadata)


def gpt2_run(root: Path, n_layers: int, n_checkpoints: int) -> Path:
    """A run directory of `n_checkpoints` GPT-2-small-shaped checkpoints (step_000000, step_001000, ...), checkpoint
    i a random init under seed i."""
    from benchmarks.patching_vs_transformer_lens import gpt2_small_dir

    run = root / "gpt2-run"
    first = gpt2_small_dir(run / "step_000000", n_layers)
    for i in range(1, n_checkpoints):
        shutil.copytree(first, run / f"step_{i * 1000:06d}")
    for i in range(n_checkpoints):
        redraw(run / f"step_{i * 1000:06d}" / "model.safetensors", seed=i)
    return run


def one_token_words(tokenizer: Any) -> list[str]:
    """Words that the tokenizer encodes, after a space, as one token."""
    words = sorted(k[1:] for k in tokenizer.get_vocab() if k.startswith("Ġ") and k[1:].isalpha() and len(k) > 2)
    return [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]


def gpt2_task(tokenizer: Any, path: Path, n_prompts: int = GPT2_PROMPTS, n_tokens: int = GPT2_TOKENS,
              diff_pos: int = GPT2_DIFF_POS, seed: int = 0) -> Path:
    """A task file of `n_prompts` lines of `n_tokens` tokens with BOS (random one-token words after "the"), the
    corrupted prompt another word at token `diff_pos`; every line is checked to tokenise to that length."""
    words = one_token_words(tokenizer)
    rng = random.Random(seed)
    rows = []
    for _ in range(n_prompts):
        clean = ["the"] + rng.choices(words, k=n_tokens - 2)
        corrupted = list(clean)
        corrupted[diff_pos - 1] = rng.choice([w for w in words if w != clean[diff_pos - 1]])
        rows.append({"clean": " ".join(clean), "corrupted": " ".join(corrupted), "answer": GPT2_ANSWER,
                     "wrong": GPT2_WRONG})
    for row in rows:
        for field in ("clean", "corrupted"):
            if len(tokenizer.encode(row[field], add_special_tokens=False)) != n_tokens - 1:
                raise ValueError(f"{row[field]!r} does not tokenise to {n_tokens - 1} tokens")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def zoo_task(run: Path, out_dir: Path) -> Path:
    """The zoo's induction task, written for this run's tokenizer."""
    from interp.loading import load_tokenizer
    from interp.zoo.tasks import write_zoo_tasks

    written = write_zoo_tasks(out_dir, load_tokenizer(run_checkpoints(run)[0].path))
    return next(p for p in written if p.stem == "induction")


def run_checkpoints(run: Path) -> list[Any]:
    """The run's checkpoints, in step order."""
    from interp.checkpoints import run_checkpoints as found

    return found(run)


def warm_page_cache(run: Path) -> int:
    """Read every file of the run once (so no timed sweep reads the disk); the bytes read."""
    total = 0
    for path in sorted(run.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                while block := handle.read(1 << 24):
                    total += len(block)
    return total


def prehash(run: Path) -> dict[str, float]:
    """Hash every checkpoint's weights as a sweep's driver does before it loads anything (`weights_sha256`, kept in
    the user's cache, so only the first sweep of a run would pay it): the seconds, timed here once so that no timed
    sweep pays it, and the bytes (a run whose hashes were already cached costs a stat per file)."""
    from interp.checkpoints import weights_sha256
    from interp.loading import weight_files

    ckpts = run_checkpoints(run)
    size = sum(f.stat().st_size for c in ckpts for f in weight_files(c.path))
    _, seconds = timed(lambda: [weights_sha256(c.path) for c in ckpts])
    return {"seconds": seconds, "bytes": size, "gb_per_second": size / seconds / 1e9}


def describe(run: Path, task: Path) -> dict[str, Any]:
    """The run's architecture, checkpoint count and weight bytes, and the task's shape."""
    from interp.checkpoints import read_summary

    ckpts = run_checkpoints(run)
    model = read_summary(ckpts[0].path)
    weights = sum(p.stat().st_size for p in ckpts[0].path.glob("*.safetensors"))
    lines = task.read_text().splitlines()
    return {"run": str(run), "n_checkpoints": len(ckpts), "n_layers": model.n_layers, "d_model": model.d_model,
            "n_heads": model.n_heads, "d_vocab": model.d_vocab, "n_params": model.n_params,
            "weights_bytes_per_checkpoint": weights, "task": task.name, "n_prompts": len(lines)}


# --- what is timed --------------------------------------------------------------------------------------------------

def spec_for(run: Path, task: Path, out: Path, mode: str) -> Any:
    """The `interp patch` Spec of one sweep: sites resid_pre,z on the CPU, on the executor `mode` names."""
    from interp.analyses.patch import Spec

    executor = {"processes": {"workers": WORKERS}, "ray": {"ray": "local"}}.get(mode, {})
    return Spec(run=run, task=task, out=out, sites=SITES, device="cpu", **executor)


def sweep(run: Path, task: Path, out: Path, mode: str) -> dict[str, Any]:
    """One timed sweep into the fresh directory `out`: wall and loop seconds, seconds per checkpoint, and the
    results file's bytes (kept apart for the comparison, not written to the JSON)."""
    from interp.analyses.patch import run as patch
    from interp.results import TENSORS_FILE

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1 if mode == "sequential_1_thread" else threads)
    try:
        results, wall = timed(lambda: patch(spec_for(run, task, out, mode)))
    finally:
        torch.set_num_threads(threads)
    timing = results.summary["timing"]
    per = timing["seconds_per_checkpoint"]
    print(f"  {mode}: {wall:.1f} s wall, {timing['total_seconds']:.1f} s loop, {statistics.mean(per):.2f} s per "
          f"checkpoint (in its worker)", flush=True)
    return {"wall_seconds": wall, "total_seconds": timing["total_seconds"], "seconds_per_checkpoint": per,
            "mean_seconds_per_checkpoint": statistics.mean(per), "n_prompts": results.summary["n_prompts"],
            "tokens": len(results.summary["prompt_tokens"]["clean"]),
            "shapes": results.summary["shapes"], "_bytes": (out / TENSORS_FILE).read_bytes()}


def split(run: Path, task_path: Path, threads: int) -> dict[str, float]:
    """Load and patch seconds of the run's last checkpoint in this process on `threads` torch threads: the two parts
    of a sweep's per-checkpoint cost."""
    import torch

    from interp.analyses.patch import sweep as patch_sweep
    from interp.checkpoints import read_summary
    from interp.loading import load_tokenizer
    from patching.tasks import load_task

    ckpt = run_checkpoints(run)[-1]
    settings = patch_sweep.Settings(sites=tuple(SITES.split(",")), device="cpu").checked()
    summary = read_summary(ckpt.path)
    task = load_task(task_path, load_tokenizer(ckpt.path), settings.prepend_bos, n_ctx=summary.n_ctx,
                     d_vocab=summary.d_vocab)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, load_seconds = timed(lambda: patch_sweep._load(ckpt, "cpu"))
        _, patch_seconds = timed(lambda: patch_sweep.patch_checkpoint(model, None, task, settings))
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "load_seconds": load_seconds, "patch_seconds": patch_seconds,
            "load_fraction": load_seconds / (load_seconds + patch_seconds)}


def trivial_map_seconds(executor: Any, n_calls: int = 4) -> float:
    """Seconds for `executor` to map math.sqrt over `n_calls` numbers: the start-up cost of its workers (spawning
    them and importing torch there), the work itself being nothing."""
    def go() -> list[Any]:
        with executor.opened():
            return list(executor.map(math.sqrt, [(float(i),) for i in range(n_calls)]))

    return timed(go)[1]


def start_ray() -> dict[str, float]:
    """Import Ray and start a local instance of WORKERS CPUs on the loopback; the seconds of each."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray, import_seconds = timed(lambda: __import__("ray"))
    _, init_seconds = timed(lambda: ray.init(num_cpus=WORKERS, include_dashboard=False, _node_ip_address="127.0.0.1",
                                             log_to_driver=False))
    return {"ray_version": ray.__version__, "import_ray_seconds": import_seconds, "ray_init_seconds": init_seconds}


def same_bytes(a: bytes, b: bytes) -> dict[str, Any]:
    """Whether two results.safetensors are the same bytes, with the largest difference of any tensor when not."""
    from safetensors.torch import load as load_bytes

    if a == b:
        return {"identical": True}
    x, y = load_bytes(a), load_bytes(b)
    return {"identical": False, "same_tensor_names": sorted(x) == sorted(y),
            "max_abs_diff": max(float((x[k].double() - y[k].double()).abs().max()) for k in x if k in y)}


def compared(sweeps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """For each mode but the sequential one: the ratios sequential (2 threads) / mode and sequential on 1 thread /
    mode (loop and wall seconds; above 1: faster), and its results.safetensors against both sequential sweeps'."""
    out: dict[str, Any] = {}
    for mode in MODES[1:]:
        entry: dict[str, Any] = {}
        for ref in REFERENCES:
            if ref == mode:
                continue
            suffix = "" if ref == "sequential" else "_vs_1_thread"
            entry[f"ratio_total_seconds{suffix}"] = sweeps[ref]["total_seconds"] / sweeps[mode]["total_seconds"]
            entry[f"ratio_wall_seconds{suffix}"] = sweeps[ref]["wall_seconds"] / sweeps[mode]["wall_seconds"]
            entry[f"results_bytes{suffix or '_vs_sequential'}"] = same_bytes(sweeps[ref]["_bytes"],
                                                                              sweeps[mode]["_bytes"])
        out[mode] = entry
    return out


# --- the run --------------------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """This machine, and the torch threads each kind of sweep ran on."""
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "torch": torch.__version__, "load_average_at_start": os.getloadavg(),
            "threads": {"sequential": torch.get_num_threads(), "sequential_1_thread": 1,
                        "processes": "2 workers x 1 torch thread",
                        "ray": "2 workers x 1 torch thread (ray.init num_cpus=2, 1 CPU per task)"}}


def prepare(root: Path, quick: bool, zoo: Path | None) -> dict[str, tuple[Path, Path]]:
    """(run, task) for the zoo base run and the GPT-2-shaped run, built under `root`."""
    from interp.loading import load_tokenizer
    from interp.zoo import ensure_zoo

    zoo_run = zoo if zoo is not None else ensure_zoo(quick=quick) / "base"
    gpt2 = gpt2_run(root, n_layers=2 if quick else 12, n_checkpoints=3 if quick else 8)
    tokenizer = load_tokenizer(run_checkpoints(gpt2)[0].path)
    return {"zoo": (zoo_run, zoo_task(zoo_run, root / "zoo-tasks")),
            "gpt2": (gpt2, gpt2_task(tokenizer, root / "gpt2-task.jsonl"))}


def measure(root: Path, runs: dict[str, tuple[Path, Path]]) -> dict[str, Any]:
    """Every number: per-checkpoint splits, worker start-up, Ray start-up, and the three sweeps of each run."""
    from interp.executors import Executor

    models: dict[str, dict[str, Any]] = {}
    for kind, (run, task) in runs.items():
        models[kind] = {"kind": kind, **describe(run, task), "page_cache_bytes_read": warm_page_cache(run),
                        "weights_sha256_before_sweeps": prehash(run),
                        "per_checkpoint_split": [split(run, task, t) for t in (2, 1)], "sweeps": {}}
        print(f"{kind}: split {models[kind]['per_checkpoint_split']}", flush=True)
    overheads = {"process_pool_trivial_map_seconds": [trivial_map_seconds(Executor(workers=WORKERS))
                                                      for _ in range(2)]}
    try:
        for mode in MODES:
            if mode == "ray":
                overheads |= start_ray()
                ray = Executor(ray="local")
                overheads["ray_trivial_map_cold_seconds"] = trivial_map_seconds(ray)
                overheads["ray_trivial_map_warm_seconds"] = trivial_map_seconds(ray)
            for kind, (run, task) in runs.items():
                print(f"{kind}:", flush=True)
                models[kind]["sweeps"][mode] = sweep(run, task, root / f"out-{kind}-{mode}", mode)
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
    print(f"overheads: {overheads}", flush=True)
    for entry in models.values():
        entry["versus_sequential"] = compared(entry["sweeps"])
        for result in entry["sweeps"].values():
            del result["_bytes"]
    return {"overheads": overheads, "models": list(models.values())}


def command_line() -> str:
    """How this run was started, with the checkout's venv python relative to the repository root."""
    python = sys.executable
    python = os.path.relpath(python) if Path(python).is_relative_to(Path.cwd()) else Path(python).name
    return " ".join([python, *sys.orig_argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the quick zoo and a 2-layer GPT-2-shaped run of 3 checkpoints; nothing written")
    parser.add_argument("--zoo", type=Path, default=None, help="the zoo base run (default ensure_zoo() / 'base')")
    args = parser.parse_args()
    import torch

    torch.set_grad_enabled(False)
    results: dict[str, Any] = {"command": command_line(), "device": "cpu", "sites": SITES, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-") as tmp:
        results |= measure(Path(tmp), prepare(Path(tmp), args.quick, args.zoo))
    for model in results["models"]:
        for mode, entry in model["versus_sequential"].items():
            print(f"{model['kind']} {mode}: x{entry['ratio_total_seconds']:.2f} (loop), "
                  f"x{entry['ratio_wall_seconds']:.2f} (wall), bytes vs sequential "
                  f"{entry['results_bytes_vs_sequential']}, vs 1 thread {entry.get('results_bytes_vs_1_thread')}")
    if args.quick:
        print(json.dumps(results, indent=2))
        return
    out = Path(__file__).parent / "results" / "sweep-scaling-cpu.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
