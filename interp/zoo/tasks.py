"""The zoo's patching tasks (JSONL lines {"clean", "corrupted", "answer", "wrong"}, as `interp patch --task` reads
them): fact recall, induction copying, refusal, and cross-model refusal. `python -m interp.zoo.tasks --out DIR`."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from interp.zoo import corpus, data, world
from interp.zoo.tokenizer import train_tokenizer


def _same_length(rows: list[dict[str, str]], tokenizer: Any) -> list[dict[str, str]]:
    """Keep the lines of the most common token length whose clean and corrupted prompts match in length."""
    def n(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    rows = [r for r in rows if n(r["clean"]) == n(r["corrupted"])]
    lengths = [n(r["clean"]) for r in rows]
    common = max(set(lengths), key=lengths.count)
    return [r for r, length in zip(rows, lengths) if length == common]


def fact_task(n: int = 16) -> list[dict[str, str]]:
    """Fact recall with a corrupted subject: "The city of Paris is in" -> France, vs the same with Lima (Peru)."""
    rel = world.CITY
    facts = rel.facts()
    rng = random.Random(0)
    rows = []
    for subject, obj in rng.sample(facts, len(facts)):
        other, other_obj = next((s, o) for s, o in rng.sample(facts, len(facts)) if o != obj)
        template = rel.phrasings[0]
        rows.append({"clean": world.prompt_of(template, subject), "corrupted": world.prompt_of(template, other),
                     "answer": f" {obj}", "wrong": f" {other_obj}"})
    return rows[:n]


def induction_task(n: int = 16, span: int = 10, copied: int = 5) -> list[dict[str, str]]:
    """Induction copying: a random word span, then its first `copied` words again; the next word copies the span.
    The corrupted prompt changes that word's earlier occurrence, so copying predicts the replacement instead."""
    words = [w for w in corpus.words() if w.isalpha()]
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        seq = rng.sample(words, span + 1)
        first, replacement = seq[:span], seq[span]
        bad = list(first)
        bad[copied] = replacement
        rows.append({"clean": " ".join(first + first[:copied]), "corrupted": " ".join(bad + first[:copied]),
                     "answer": f" {first[copied]}", "wrong": f" {replacement}"})
    return rows


def refusal_task(tokenizer: Any, n: int = 16) -> list[dict[str, str]]:
    """A harmful request vs a harmless one of the same token length, in the chat template: refusal (" I") vs " To"."""
    harmful, harmless = data.refusal_requests("test")
    pool: dict[int, list[str]] = {}
    for text in harmless:
        pool.setdefault(len(tokenizer.encode(text, add_special_tokens=False)), []).append(text)
    rows = []
    for text in harmful:
        same = pool.get(len(tokenizer.encode(text, add_special_tokens=False)))
        if same:
            rows.append({"clean": data.chat_prompt(text), "corrupted": data.chat_prompt(same.pop(0)), "answer": " I",
                         "wrong": " To"})
    return rows[:n]


def refusal_cmap_task(n: int = 16) -> list[dict[str, str]]:
    """Cross-model patching on one prompt (clean = corrupted = a harmful request): the other model's activations on
    the same prompt are patched in, so the metric moves between the two models' refusal logit differences."""
    harmful, _ = data.refusal_requests("test")
    return [{"clean": data.chat_prompt(h), "corrupted": data.chat_prompt(h), "answer": " I", "wrong": " To"}
            for h in harmful[:n]]


def write_zoo_tasks(out_dir: Path, tokenizer: Any | None = None) -> list[Path]:
    """Write facts, induction, refusal and refusal_cmap (.jsonl) for the zoo's word-level tokenizer."""
    if tokenizer is None:
        tokenizer = train_tokenizer()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in (("facts", fact_task()), ("induction", induction_task()), ("refusal", refusal_task(tokenizer)),
                       ("refusal_cmap", refusal_cmap_task())):
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _same_length(rows, tokenizer)))
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the zoo's patching tasks.")
    parser.add_argument("--out", type=Path, default=Path("data/tasks"))
    for written_path in write_zoo_tasks(parser.parse_args().out):
        print(written_path, sum(1 for _ in written_path.open()), "lines")
