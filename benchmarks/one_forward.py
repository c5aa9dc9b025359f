"""The patching engine before and after it ran on the model's own blocks (issue #18, "one forward"), side by side.

The same sweeps (every site the engine has, fp32, batch 8 x 32 tokens, prompts differing at position 8) run in two
source trees, the current one and an older checkout given by `--old` (a `git worktree` of the commit before the
change), alternating old/new `--repeats` times in fresh processes on the same checkpoints: (i) a zoo checkpoint and
(ii) a random-initialised GPT-2-small-shaped model (12 layers). Reports each tree's median seconds per site, the ratio
(old / new: above 1 means the new engine is faster) and whether the results are bit-identical.

Run from the repository root: `git worktree add /tmp/interp-old <commit> && .venv/bin/python -m benchmarks.one_forward
--old /tmp/interp-old [--new TREE] [--zoo CHECKPOINT] [--repeats 3]`; writes benchmarks/results/one-forward-cpu.json,
the command line inside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.patching_vs_transformer_lens import gpt2_small_dir, zoo_checkpoint

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern")
ROOT = Path(__file__).resolve().parent.parent

WORKER = r'''
import json, sys, time, torch
from patching import Patcher, metrics
from interp.models.native import NativeTransformer
path, out, sites = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
torch.set_num_threads(2)
nt = NativeTransformer.from_pretrained(path)
g = torch.Generator().manual_seed(0)
vocab = nt.cfg.d_vocab
clean = torch.randint(4, vocab, (8, 32), generator=g)
corrupted = clean.clone()
corrupted[:, 8] = (clean[:, 8] + 1 + torch.randint(0, vocab - 5, (8,), generator=g)) % vocab
answers = torch.randint(4, vocab, (2, 8), generator=g)
patcher = Patcher(nt, clean, corrupted, metrics.LogitDiff(answers[0], answers[1]), sites)
seconds, raw = {}, {}
for site in sites:
    start = time.perf_counter()
    raw[site] = patcher.sweep(site).raw
    seconds[site] = time.perf_counter() - start
torch.save(raw, out + ".pt")
json.dump(seconds, open(out + ".json", "w"))
'''


def run_tree(tree: Path, checkpoint: Path, out: Path, sites: tuple[str, ...]) -> tuple[dict[str, float], dict]:
    """One worker process with `tree` first on the import path; its seconds per site and raw results."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", WORKER, str(checkpoint), str(out), ",".join(sites)], env=env, check=True,
                   cwd=tree)
    return json.loads(out.with_suffix(".json").read_text()), torch.load(out.with_suffix(".pt"))


def compare(name: str, checkpoint: Path, old: Path, new: Path, repeats: int, sites: tuple[str, ...], tmp: Path
            ) -> dict:
    times: dict[str, dict[str, list[float]]] = {"old": {s: [] for s in sites}, "new": {s: [] for s in sites}}
    results = {}
    for r in range(repeats):
        for label, tree in (("old", old), ("new", new)):
            seconds, raw = run_tree(tree, checkpoint, tmp / f"{name}-{label}-{r}", sites)
            for site in sites:
                times[label][site].append(seconds[site])
            results[label] = raw
    rows = {}
    for site in sites:
        old_s, new_s = (statistics.median(times[label][site]) for label in ("old", "new"))
        diff = (results["old"][site] - results["new"][site]).abs().max().item()
        rows[site] = {"old_seconds": round(old_s, 3), "new_seconds": round(new_s, 3),
                      "ratio_old_over_new": round(old_s / new_s, 3),
                      "bit_identical": bool(torch.equal(results["old"][site], results["new"][site])),
                      "max_abs_diff": diff}
    total = {label: sum(statistics.median(times[label][s]) for s in sites) for label in ("old", "new")}
    return {"checkpoint": str(checkpoint), "sites": rows, "old_seconds_total": round(total["old"], 3),
            "new_seconds_total": round(total["new"], 3), "ratio_old_over_new": round(total["old"] / total["new"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="source tree of the engine before the change")
    parser.add_argument("--new", type=Path, default=ROOT, help="source tree after it (default: this checkout)")
    parser.add_argument("--zoo", type=Path, default=None, help="a zoo checkpoint (default: the quick zoo's last)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    zoo = zoo_checkpoint(str(args.zoo) if args.zoo else None)
    report = {"command": " ".join(["python", *sys.orig_argv[1:]]),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 2,
              "batch": 8, "length": 32, "diff_pos": 8}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        report["zoo"] = compare("zoo", zoo, args.old, args.new, args.repeats, SITES, tmp_path)
        gpt2 = gpt2_small_dir(tmp_path / "gpt2-small", 12)
        report["gpt2_small"] = compare("gpt2", gpt2, args.old, args.new, args.repeats, ("resid_pre", "z"),
                                     tmp_path)
    out = ROOT / "benchmarks" / "results" / "one-forward-cpu.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k in ("zoo", "gpt2_small")}, indent=1)[:3000])


if __name__ == "__main__":
    main()
