"""Patching tasks: JSONL lines {"clean", "corrupted", "answer", "wrong"}, validated and tokenised.

Every clean prompt must tokenise to the length of its corrupted twin, and all lines of a task to one length (the
position axis of the results is shared). Answers are encoded as written (write " Paris" for byte-level BPE) and
their first token is the one the metric reads. Degenerate lines are refused by number: answer and wrong words with
one first token, identical clean and corrupted prompts (except for cross-model patching), prompts longer than the
model's context. The zoo's own tasks: `python -m interp.zoo.patching_tasks --out data/tasks`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from interp.data.jsonl import numbered_records
from interp.data.tokens import BOS_DEFAULT, encode
from interp.errors import InterpError

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

    @property
    def tokens_sha256(self) -> str:
        """sha256 of the token ids the sweep reads (a resumed checkpoint is keyed by these, not the file's bytes)."""
        digest = hashlib.sha256()
        for ids in (self.clean, self.corrupted, self.answer_ids, self.wrong_ids):
            digest.update(str(tuple(ids.shape)).encode() + ids.to(torch.int64).numpy().tobytes())
        return digest.hexdigest()


def read_lines(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The task's lines with their line numbers, each checked to hold the four string fields."""
    return numbered_records(path, FIELDS, '{"clean": ..., "corrupted": ..., "answer": ..., "wrong": ...}')


def _check_line(where: str, row: dict[str, str], ids: dict[str, list[int]], tokenizer: Any, n_ctx: int | None,
                d_vocab: int | None, same_prompts: bool) -> None:
    """Refuse a degenerate line: an empty or shared first answer token, identical prompts, a prompt past `n_ctx`, a
    token id outside the model's `d_vocab` (a tokenizer with tokens the embedding does not have)."""
    answer, wrong = ids["answer"], ids["wrong"]
    if not answer or not wrong:
        raise InterpError(f"{where}: empty answer or wrong token", fix="give both a non-empty word")
    if answer[0] == wrong[0]:
        raise InterpError(f"{where}: answer {row['answer']!r} and wrong {row['wrong']!r} start with the same token "
                          f"{tokenizer.decode(answer[:1])!r}, so the metric cannot tell them apart",
                          fix="give an answer and a wrong word whose first tokens differ (the metric reads those)")
    if ids["clean"] == ids["corrupted"] and not same_prompts:
        raise InterpError(f"{where}: the clean and corrupted prompts are the same tokens, so patching changes nothing",
                          fix="make the corrupted prompt differ from the clean one (identical prompts are for "
                              "cross-model patching with --source)")
    longest = max(len(ids["clean"]), len(ids["corrupted"]))
    if n_ctx is not None and longest > n_ctx:
        raise InterpError(f"{where}: the prompt is {longest} tokens, longer than the model's context of {n_ctx}",
                          fix=f"shorten the prompts to at most {n_ctx} tokens (BOS included)")
    outside = [i for field in FIELDS for i in ids[field] if d_vocab is not None and not 0 <= i < d_vocab]
    if outside:
        token = tokenizer.convert_ids_to_tokens(outside[0])
        raise InterpError(f"{where}: token {token!r} has id {outside[0]}, outside the model's vocabulary of {d_vocab}",
                          fix="use the tokenizer the model was trained with (or resize its embedding and re-save)")


def load_task(path: Path, tokenizer: Any, bos: bool = BOS_DEFAULT, n_ctx: int | None = None,
              d_vocab: int | None = None, same_prompts: bool = False) -> Task:
    """Tokenise a task file, refusing by line number: clean and corrupted lengths that differ (or differ from line
    1's), answer and wrong words with one first token, identical clean and corrupted prompts (unless
    `same_prompts`: cross-model patching), prompts longer than the model's context `n_ctx` and token ids outside
    its vocabulary `d_vocab`. With `bos` the prompts (not the answers) start with BOS (`interp.data.tokens`)."""
    path = Path(path)
    lines = read_lines(path)
    clean, corrupted, answers, wrongs = [], [], [], []
    bad, width = [], None
    for number, row in lines:
        ids = {f: encode(tokenizer, row[f], bos=bos and f in ("clean", "corrupted")) for f in FIELDS}
        _check_line(f"{path} line {number}", row, ids, tokenizer, n_ctx, d_vocab, same_prompts)
        c, k = ids["clean"], ids["corrupted"]
        width = width if width is not None else len(c)
        if len(c) != len(k) or len(c) != width:
            bad.append(f"{number} (clean {len(c)}, corrupted {len(k)} tokens)")
        clean.append(c), corrupted.append(k), answers.append(ids["answer"][0]), wrongs.append(ids["wrong"][0])
    if bad:
        raise InterpError(f"{path}: lines {', '.join(bad[:10])} do not tokenise to line 1's {width} tokens",
                          fix="make clean and corrupted prompts (and all lines) the same length in tokens")
    return Task(torch.tensor(clean), torch.tensor(corrupted), torch.tensor(answers), torch.tensor(wrongs),
                [row for _, row in lines],
                hashlib.sha256(path.read_bytes()).hexdigest())
