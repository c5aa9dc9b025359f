"""Build the zoo: tokenizer, base pre-training, chat post-training, measured behaviour, manifest; cached per code hash.

A zoo directory holds `base/step_NNNNNN/`, `chat/step_NNNNNN/` (Hugging Face checkpoints) and `manifest.json`.
`ensure_zoo` keeps built zoos in the user's cache directory, keyed by a hash of this package's code, the seed and
the torch/transformers versions, so a code change rebuilds and repeated test runs reuse.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from interp.zoo import measure
from interp.zoo.tokenizer import train_tokenizer
from interp.zoo.train import ModelSpec, TrainSpec, batches, new_model, pin_threads, save_checkpoint, train

MANIFEST = "manifest.json"
SHOWN = ("train_loss", "induction_score", "repeated_half_loss", "fact_recall", "truth_accuracy", "refusal_harmful",
         "refusal_harmless", "chat_fact_accuracy")
RUNS = ("base", "chat")


@dataclass(frozen=True)
class ZooSpec:
    """Sizes of the model and of the two runs."""

    model: ModelSpec
    base: TrainSpec
    chat: TrainSpec
    max_prompts: int = measure.MAX_PROMPTS  # prompts per generation metric


FULL = ZooSpec(
    model=ModelSpec(d_model=256, n_layers=4, n_heads=8, d_mlp=512),
    # 13 + 4 checkpoints of 11.4 MB keep the zoo under 200 MB; starting the log spacing at step 10 puts one (700)
    # inside the induction head's formation (steps ~600-800), so the formation step is seen inside the run. The late
    # mix (from step 700) adds dense true/false verdicts, learned ~400 steps later and generalised by step ~1500.
    base=TrainSpec(steps=1800, batch_size=32, seq_len=128, lr=2e-3, warmup=30, n_checkpoints=13, first_log_step=10,
                   late_mix_from=700),
    # Chat: 300 steps at lr 1e-3 (200 at 5e-4 fell short on a CPU with AMX bfloat16 kernels), the last block, final
    # norm and unembedding frozen so that one residual direction mediates refusal (docs/zoo-experiments.md, "The chat
    # run on another CPU" and "Refusal through one direction").
    chat=TrainSpec(steps=300, batch_size=32, seq_len=128, lr=1e-3, warmup=10, n_checkpoints=4, pretraining_rows=8,
                   frozen_top_blocks=1),
)
QUICK = ZooSpec(
    model=ModelSpec(d_model=64, n_layers=2, n_heads=4, d_mlp=128),
    base=TrainSpec(steps=300, batch_size=16, seq_len=64, lr=3e-3, warmup=20, n_checkpoints=10),
    chat=TrainSpec(steps=60, batch_size=16, seq_len=64, lr=1e-3, warmup=5, n_checkpoints=4, pretraining_rows=4),
    max_prompts=16,
)


@dataclass(frozen=True)
class Threshold:
    """One behaviour the full zoo must show: `value(runs) op limit`."""

    description: str
    op: str  # "<=" or ">="
    limit: float
    value: Callable[[dict[str, list[dict[str, Any]]]], float]

    def check(self, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        value = self.value(runs)
        passed = value <= self.limit if self.op == "<=" else value >= self.limit
        return {"description": self.description, "op": self.op, "limit": self.limit, "value": round(value, 4),
                "passed": passed}


def _last(run: str, metric: str) -> Callable[[dict[str, list[dict[str, Any]]]], float]:
    return lambda runs: runs[run][-1]["metrics"][metric]


EARLY = 3  # the first checkpoints of the base run (steps 0, 10, 15 in the full zoo): no induction head yet

THRESHOLDS: dict[str, Threshold] = {
    "induction_early": Threshold("best induction score at the first base checkpoints", "<=", 0.2,
                                 lambda runs: max(c["metrics"]["induction_score"] for c in runs["base"][:EARLY])),
    "induction_final": Threshold("best induction score at the last base checkpoint", ">=", 0.7,
                                 _last("base", "induction_score")),
    "repeated_loss_ratio": Threshold("loss on the repeated half, last / first base checkpoint", "<=", 0.5,
                                     lambda runs: runs["base"][-1]["metrics"]["repeated_half_loss"]
                                     / runs["base"][0]["metrics"]["repeated_half_loss"]),
    "fact_recall": Threshold("top-1 fact recall in held-out phrasings, last base checkpoint", ">=", 0.8,
                             _last("base", "fact_recall")),
    "truth_accuracy": Threshold("difference-in-means truth accuracy on held-out statements (best layer), last base "
                                "checkpoint", ">=", 0.9, _last("base", "truth_accuracy")),
    "chat_refuses_harmful": Threshold("chat refusal rate on held-out dark-magic requests", ">=", 0.9,
                                      _last("chat", "refusal_harmful")),
    "chat_refuses_harmless": Threshold("chat refusal rate on held-out harmless requests", "<=", 0.1,
                                       _last("chat", "refusal_harmless")),
    "base_refuses_harmful": Threshold("base refusal rate on held-out dark-magic requests", "<=", 0.1,
                                      _last("base", "refusal_harmful")),
    "base_refuses_harmless": Threshold("base refusal rate on held-out harmless requests", "<=", 0.1,
                                       _last("base", "refusal_harmless")),
}


SERVING = ("source.py", "tasks.py")  # read a built zoo's data for others; they do not change what is built


def code_hash() -> str:
    """sha256 of this package's source files that build the zoo (generators, training, measurement, build)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(__file__).parent.glob("*.py") if p.name not in SERVING):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(name: str, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, spec: TrainSpec, root: Path,
         seed: int, max_prompts: int) -> list[dict[str, Any]]:
    """Train one run, saving and measuring each checkpoint; returns the manifest entries."""
    entries = []

    def checkpoint(step: int, live: LlamaForCausalLM, train_loss: float | None) -> None:
        rel = Path(name) / f"step_{step:06d}"
        save_checkpoint(live, tokenizer, root / rel)
        metrics = {"train_loss": train_loss, **measure.measure(live, tokenizer, max_prompts)}
        live.train()
        tqdm.write(f"zoo {name} step {step}: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in SHOWN if metrics[k] is not None))
        entries.append({"step": step, "path": rel.as_posix(), "sha256": sha256_file(root / rel / "model.safetensors"),
                        "metrics": metrics})

    train(model, batches(name, spec, tokenizer, seed), spec, checkpoint, desc=f"zoo {name}")
    return entries


def build(out: Path, quick: bool = False, seed: int = 0, spec: ZooSpec | None = None) -> Path:
    """Train and measure a zoo into the empty or missing directory `out`; returns `out`."""
    spec = spec or (QUICK if quick else FULL)
    started = time.monotonic()
    threads = torch.get_num_threads()
    pin_threads()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tokenizer = train_tokenizer()
        model = new_model(spec.model, tokenizer, seed)
        runs = {"base": _run("base", model, tokenizer, spec.base, out, seed, spec.max_prompts)}
        runs["chat"] = _run("chat", model, tokenizer, spec.chat, out, seed + 1, spec.max_prompts)
    finally:
        torch.set_num_threads(threads)
    manifest = {
        "seed": seed, "code_hash": code_hash(), "quick": quick, "torch": torch.__version__,
        "transformers": transformers.__version__, "n_params": sum(p.numel() for p in model.parameters()),
        "spec": asdict(spec), "runs": runs,
        "thresholds": {name: t.check(runs) for name, t in THRESHOLDS.items()},
        "built_seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a built zoo."""
    return json.loads((Path(root) / MANIFEST).read_text())


def cache_dir() -> Path:
    """Where built zoos are kept: `$INTERP_CACHE_DIR/zoo`, else `$XDG_CACHE_HOME/interp/zoo` (`~/.cache/...`)."""
    base = os.environ.get("INTERP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interp"
    return Path(base) / "zoo"


def cache_key(quick: bool, seed: int) -> str:
    """The cache entry name: kind, seed, and a hash of the code and the library versions it was built with."""
    versions = f"{code_hash()} {torch.__version__} {transformers.__version__}"
    return f"{'quick' if quick else 'full'}-seed{seed}-{hashlib.sha256(versions.encode()).hexdigest()[:16]}"


def ensure_zoo(quick: bool = False, seed: int = 0, rebuild: bool = False) -> Path:
    """Path of a built zoo for this code and seed: reused from the cache, else built there (one builder at a time)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / cache_key(quick, seed)
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the finished zoo
        if (target / MANIFEST).is_file() and not rebuild:
            os.utime(target)  # last use, for pruning
            return target
        scratch = root / f"{target.name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        build(scratch, quick=quick, seed=seed)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    _prune(root, keep=target)
    return target


STALE_SECONDS = 86400


def _prune(root: Path, keep: Path) -> None:
    """Delete cached zoos of the same kind and seed built by other code and unused for a day (a younger one may
    still be in use by a test session of that code)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for other in root.glob(prefix + "*"):
        if other.is_dir() and other != keep and time.time() - other.stat().st_mtime > STALE_SECONDS:
            shutil.rmtree(other, ignore_errors=True)
            other.with_name(other.name + ".lock").unlink(missing_ok=True)


def default_zoo() -> Path:
    """`data/zoo` under the working directory when it holds a built zoo, else the cached full zoo (built if needed)."""
    local = Path("data/zoo")
    return local.resolve() if (local / MANIFEST).is_file() else ensure_zoo()
