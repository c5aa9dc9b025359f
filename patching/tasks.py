"""Patching tasks: JSONL lines {"clean", "corrupted", "answer", "wrong"}, validated and tokenised; zoo task writer.

Every clean prompt must tokenise to the length of its corrupted twin, and all lines of a task to one length (the
position axis of the results is shared). Answers are encoded as written (write " Paris" for byte-level BPE) and
their first token is the one the metric reads. `python -m patching.tasks --out data/tasks` writes the zoo tasks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError
from interp.jsonl import read_records

FIELDS = ("clean", "corrupted", "answer", "wrong")


@dataclass
class Task:
    """A tokenised task: prompt pairs of one length, and each line's answer and wrong token."""

    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    answer_ids: Int[Tensor, "batch"]
    wrong_ids: Int[Tensor, "batch"]
    lines: list[dict[str, str]]
    sha256: str


def read_lines(path: Path) -> list[dict[str, str]]:
    """The task's lines, each checked to hold the four string fields."""
    return read_records(path, FIELDS, '{"clean": ..., "corrupted": ..., "answer": ..., "wrong": ...}')


def _encode(tokenizer: Any, text: str, prepend_bos: bool) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [tokenizer.bos_token_id, *ids] if prepend_bos and tokenizer.bos_token_id is not None else ids


def load_task(path: Path, tokenizer: Any, prepend_bos: bool = True) -> Task:
    """Tokenise a task file; a line whose clean and corrupted lengths differ, or whose length differs from line 1's,
    is reported by number."""
    path = Path(path)
    lines = read_lines(path)
    clean, corrupted, answers, wrongs = [], [], [], []
    bad, width = [], None
    for number, row in enumerate(lines, start=1):
        c, k = _encode(tokenizer, row["clean"], prepend_bos), _encode(tokenizer, row["corrupted"], prepend_bos)
        a, w = (tokenizer.encode(row[f], add_special_tokens=False) for f in ("answer", "wrong"))
        if not a or not w:
            raise InterpError(f"{path} line {number}: empty answer or wrong token", fix="give both a non-empty word")
        width = width if width is not None else len(c)
        if len(c) != len(k) or len(c) != width:
            bad.append(f"{number} (clean {len(c)}, corrupted {len(k)} tokens)")
        clean.append(c), corrupted.append(k), answers.append(a[0]), wrongs.append(w[0])
    if bad:
        raise InterpError(f"{path}: lines {', '.join(bad[:10])} do not tokenise to line 1's {width} tokens",
                          fix="make clean and corrupted prompts (and all lines) the same length in tokens")
    return Task(torch.tensor(clean), torch.tensor(corrupted), torch.tensor(answers), torch.tensor(wrongs), lines,
                hashlib.sha256(path.read_bytes()).hexdigest())


# --- zoo tasks --------------------------------------------------------------------------------------------------
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
    from interp.zoo import world

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
    from interp.zoo import corpus

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
    from interp.zoo import data

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
    from interp.zoo import data

    harmful, _ = data.refusal_requests("test")
    return [{"clean": data.chat_prompt(h), "corrupted": data.chat_prompt(h), "answer": " I", "wrong": " To"}
            for h in harmful[:n]]


def write_zoo_tasks(out_dir: Path, tokenizer: Any | None = None) -> list[Path]:
    """Write facts, induction, refusal and refusal_cmap (.jsonl) for the zoo's word-level tokenizer."""
    if tokenizer is None:
        from interp.zoo.tokenizer import train_tokenizer

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
