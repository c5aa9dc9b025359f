"""`interp patch` against hostile input: every case is one line `error: ... (fix: ...)`, exit 2, said before any
compute, with nothing written anywhere (neither --out nor beside it, nor in the zoo)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from clitools import assert_unchanged, assert_user_error, edit_config, edit_weights, truncate, run, tree_state
from interp.results import axes, write_results

TINY_LINES = [
    {"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"},
    {"clean": "my friend likes the moon", "corrupted": "my friend likes a moon", "answer": ".", "wrong": " the"},
]
ZOO_LINES = [
    {"clean": "The city of Mombasa is in", "corrupted": "The city of Arequipa is in", "answer": " Kenya",
     "wrong": " Peru"},
    {"clean": "The city of Nairobi is in", "corrupted": "The city of Recife is in", "answer": " Kenya",
     "wrong": " Brazil"},
]


@dataclass
class Env:
    """Where a case builds its inputs (`tmp/inputs`), the quick zoo, and the tiny checkpoint factory."""

    tmp: Path
    zoo: Path
    tiny: Callable[[str], Path]

    @property
    def ckpt(self) -> Path:
        """One trained zoo checkpoint (Llama-style, word-level tokenizer, 256-token context)."""
        return self.zoo / "base" / "step_000300"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def copy(self, arch: str, name: str) -> Path:
        """A writable copy of a tiny checkpoint, to break."""
        return Path(shutil.copytree(self.tiny(arch), self.tmp / "inputs" / name))

    def task(self, lines: list[dict[str, str]], name: str = "task.jsonl") -> Path:
        path = self.tmp / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return path

    def argv(self, target: Path | None = None, task: Path | None = None, *extra: str, out: Path | None = None
             ) -> list[str]:
        """`interp patch` on the zoo checkpoint and its fact task unless told otherwise."""
        task = task if task is not None else self.task(ZOO_LINES)
        return ["patch", target or self.ckpt, "--task", task, "--out", out or self.out, "--sites", "resid_pre",
                "--device", "cpu", *extra]


def write(path: Path, name: str, text: str) -> Path:
    (path / name).write_text(text)
    return path


def remove(path: Path, *names: str) -> Path:
    for name in names:
        (path / name).unlink()
    return path


def overflowing(path: Path) -> Path:
    """Finite weights whose logits overflow float32: every lm_head entry near the largest float, a large norm."""
    def change(w: dict[str, torch.Tensor]) -> None:
        w["lm_head.weight"].fill_(3e38)
        w["model.norm.weight"].fill_(100.0)

    return edit_weights(path, change)


def swap_two_tokens(path: Path) -> Path:
    """The same vocabulary size and shapes, but two tokens trade ids: another tokenizer."""
    data = json.loads((path / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (path / "tokenizer.json").write_text(json.dumps(data))
    return path


def extra_token(path: Path) -> Path:
    """A tokenizer with one token more than the model's embedding has rows."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.add_tokens(["<|extra|>"])
    tokenizer.save_pretrained(str(path))
    return path


def run_of(env: Env, *archs_or_dirs: str | Path) -> Path:
    """A run directory whose step_000100, step_000200, ... are copies of the given tiny checkpoints (or dirs)."""
    root = env.tmp / "inputs" / "run"
    for i, item in enumerate(archs_or_dirs, start=1):
        src = env.tiny(item) if isinstance(item, str) else item
        shutil.copytree(src, root / f"step_{100 * i:06d}")
    return root


def results_of(env: Env, analysis: str) -> Path:
    out = env.tmp / "other"
    write_results(out, {"x": torch.zeros(2)}, {"note": "kept"}, analysis=analysis, axes={"x": axes("x")},
                  tokenization={"bos": None, "padding": None}, inputs=[], settings={"a": 1})
    return out


def previous_patch(env: Env) -> Path:
    """A finished patch results directory (made by `interp patch` with --metric prob)."""
    from interp.cli import main

    with pytest.raises(SystemExit) as done:
        main([str(a) for a in env.argv(None, None, "--metric", "prob", out=env.tmp / "done")])
    assert done.value.code == 0
    return env.tmp / "done"


def long_prompt(n: int) -> dict[str, str]:
    words = " ".join(["the cat"] * n)
    return {"clean": words + " sees", "corrupted": words + " finds", "answer": " the", "wrong": " a"}


Case = Callable[[Env], tuple[list[str], tuple[str, ...]]]
CASES: dict[str, Case] = {
    # --- output directory --------------------------------------------------------------------------------------
    "out is a checkpoint": lambda e: (e.argv(out=e.copy("gpt2", "ck")), ("is a model checkpoint directory",)),
    "out is a run": lambda e: (e.argv(out=run_of(e, "llama")), ("holds model checkpoints",)),
    "out is a checkpoint, forced": lambda e: (e.argv(None, None, "--force", out=e.copy("gpt2", "ck")),
                                              ("is a model checkpoint directory",)),
    "out holds another analysis": lambda e: (e.argv(out=results_of(e, "tuco")), ("results of `tuco`",)),
    "out holds patch with other settings": lambda e: (e.argv(out=previous_patch(e)), ("made with other settings",)),
    "out holds foreign files": lambda e: (e.argv(out=e.task(TINY_LINES, "notes/a.txt").parent),
                                          ("interp did not write", "a.txt")),
    "out is a file": lambda e: (e.argv(out=e.task(TINY_LINES, "f.txt")), ("is a file, not a directory",)),
    "out under a file": lambda e: (e.argv(out=e.task(TINY_LINES, "f.txt") / "out"), ("is under", "f.txt")),
    # --- broken checkpoints (target) -----------------------------------------------------------------------------
    "config says 3 layers, weights hold 2": lambda e: (e.argv(edit_config(e.copy("gpt2", "c"), n_layer=3),
                                                              e.task(TINY_LINES)), ("do not match config.json",
                                                                                    "missing", "h.2.")),
    "one tensor deleted": lambda e: (e.argv(edit_weights(e.copy("llama", "c"), lambda w: w.pop(
        "model.layers.1.mlp.up_proj.weight")), e.task(TINY_LINES)), ("missing", "layers.1.mlp.up_proj.weight")),
    "one tensor reshaped": lambda e: (e.argv(edit_weights(e.copy("gpt2", "c"), lambda w: w.update(
        {"transformer.h.0.mlp.c_fc.weight": w["transformer.h.0.mlp.c_fc.weight"].reshape(256, 64).clone()})),
        e.task(TINY_LINES)), ("another shape", "h.0.mlp.c_fc.weight")),
    "one tensor too many": lambda e: (e.argv(edit_weights(e.copy("llama", "c"), lambda w: w.update(
        {"model.layers.9.extra.weight": torch.zeros(2)})), e.task(TINY_LINES)), ("does not describe",)),
    "NaN weights": lambda e: (e.argv(edit_weights(e.copy("llama", "c"), lambda w: w[
        "model.layers.0.self_attn.q_proj.weight"].fill_(float("nan"))), e.task(TINY_LINES)),
        ("holds NaN", "q_proj")),
    "truncated safetensors": lambda e: (e.argv(truncate(e.copy("gpt2", "c")), e.task(TINY_LINES)),
                                        ("model.safetensors is damaged",)),
    "missing tokenizer": lambda e: (e.argv(remove(e.copy("gpt2", "c"), "tokenizer.json", "tokenizer_config.json"),
                                           e.task(TINY_LINES)), ("has no tokenizer",)),
    "invalid config.json": lambda e: (e.argv(write(e.copy("gpt2", "c"), "config.json", "{not json"),
                                             e.task(TINY_LINES)), ("config.json is not readable JSON",)),
    "config without weights": lambda e: (e.argv(remove(e.copy("gpt2", "c"), "model.safetensors"), e.task(TINY_LINES)),
                                         ("has config.json but no weights",)),
    "unsupported architecture": lambda e: (e.argv(edit_config(e.copy("gpt2", "c"), model_type="bert"),
                                                  e.task(TINY_LINES)),
                                           ("model_type 'bert'", "bidirectional", "GPT-2 (gpt2)")),
    "broken second checkpoint of a run": lambda e: (e.argv(run_of(e, "llama", edit_weights(e.copy("llama", "c"),
        lambda w: w.pop("lm_head.weight"))), e.task(TINY_LINES)), ("step_000200", "missing", "lm_head.weight")),
    # --- mismatched checkpoints --------------------------------------------------------------------------------
    "run mixing llama and gpt2": lambda e: (e.argv(run_of(e, "llama", "gpt2"), e.task(TINY_LINES)),
                                            ("checkpoints differ", "step_000100", "step_000200", "architecture")),
    "source with another tokenizer": lambda e: (e.argv(e.tiny("llama"), e.task(TINY_LINES), "--source",
                                                       str(swap_two_tokens(e.copy("llama", "s")))),
                                                ("different tokenizer",)),
    "source of another architecture": lambda e: (e.argv(e.tiny("llama"), e.task(TINY_LINES), "--source",
                                                        str(e.tiny("qwen2"))), ("checkpoints differ",)),
    "source is broken": lambda e: (e.argv(e.tiny("gpt2"), e.task(TINY_LINES), "--source",
                                          str(truncate(e.copy("gpt2", "s")))), ("damaged",)),
    "source run of another length": lambda e: (e.argv(run_of(e, "llama", "llama", "llama"), e.task(TINY_LINES),
                                                      "--source", str(e.zoo / "base")), ("has 10 checkpoints",)),
    # --- degenerate tasks ----------------------------------------------------------------------------------------
    "clean == corrupted": lambda e: (e.argv(None, e.task([ZOO_LINES[0], {**ZOO_LINES[1], "corrupted": ZOO_LINES[1][
        "clean"]}])), ("task.jsonl line 2", "same tokens")),
    "answer == wrong": lambda e: (e.argv(None, e.task([{**ZOO_LINES[0], "wrong": " Kenya"}])),
                                  ("task.jsonl line 1", "same token")),
    "answer == wrong after tokenisation": lambda e: (e.argv(None, e.task([ZOO_LINES[0], {**ZOO_LINES[1], "answer":
        "Kenya ", "wrong": " Kenya"}])), ("line 2", "same token 'Kenya'")),
    "prompt longer than GPT-2's context": lambda e: (e.argv(e.tiny("gpt2"), e.task([long_prompt(70)])),
                                                     ("line 1", "longer than the model's context of 128")),
    "prompt longer than the zoo's context": lambda e: (e.argv(None, e.task([{
        **ZOO_LINES[0], "clean": "The city of Mombasa " * 70 + "is in", "corrupted": "The city of Recife " * 70
        + "is in"}])), ("line 1", "context of 256")),
    "token outside the model's vocabulary": lambda e: (e.argv(extra_token(e.copy("gpt2", "c")), e.task([{
        **TINY_LINES[0], "clean": "the cat sees <|extra|>", "corrupted": "the dog sees <|extra|>"}])),
        ("line 1", "'<|extra|>' has id 384", "vocabulary of 384")),
    "clean and corrupted lengths differ": lambda e: (e.argv(None, e.task([ZOO_LINES[0], {
        **ZOO_LINES[1], "corrupted": "The city of Recife is"}])), ("lines 2 ", "do not tokenise")),
    "empty task": lambda e: (e.argv(None, e.task([])), ("holds no lines",)),
    "missing task": lambda e: (e.argv(None, e.tmp / "inputs" / "nope.jsonl"), ("does not exist",)),
    "task line without a field": lambda e: (e.argv(None, e.task([{"clean": "a"}])), ("needs string fields",)),
    # --- options -----------------------------------------------------------------------------------------------
    "--sites ,": lambda e: (e.argv(None, None, "--sites", ","), ("--sites", "names nothing")),
    "--sites unknown": lambda e: (e.argv(None, None, "--sites", "resid_pre,resid_mdi"), ("unknown name 'resid_mdi'",)),
    "--sites resid_mid on GPT-NeoX": lambda e: (e.argv(e.tiny("gpt_neox"), e.task(TINY_LINES), "--sites",
                                                       "resid_mid"), ("resid_mid does not exist",)),
    "--batch-size 0": lambda e: (e.argv(None, None, "--batch-size", "0"), ("--batch-size is 0", "at least 1")),
    "--batch-size -3": lambda e: (e.argv(None, None, "--batch-size", "-3"), ("--batch-size is -3",)),
    "--device cuda without one": lambda e: (e.argv(None, None, "--device", "cuda"), ("no usable CUDA GPU",)),
    "--device unknown": lambda e: (e.argv(None, None, "--device", "potato"), ("unknown device 'potato'",)),
    "--metric unknown": lambda e: (e.argv(None, None, "--metric", "accuracy"), ("unknown metric 'accuracy'",)),
    "--metric module missing": lambda e: (e.argv(None, None, "--metric", "no_such_module_x:f"),
                                          ("cannot be imported", "ModuleNotFoundError")),
    "--metric function missing": lambda e: (e.argv(None, None, "--metric", "json:no_such_fn"),
                                            ("cannot be imported", "AttributeError")),
    "--metric not a function": lambda e: (e.argv(None, None, "--metric", "json:__name__"), ("is not a function",)),
    "custom metric over batches": lambda e: (e.argv(None, None, "--metric", "torch:sum", "--batch-size", "1"),
                                             ("custom metric cannot be averaged",)),
    "--max-memory 0": lambda e: (e.argv(None, None, "--max-memory", "0"), ("--max-memory is 0",)),
    "--max-memory nonsense": lambda e: (e.argv(None, None, "--max-memory", "."), ("cannot read --max-memory",)),
    "--backend unknown": lambda e: (e.argv(None, None, "--backend", "cuda"), ("unknown patching backend 'cuda'",)),
    # --- degenerate metrics, found after the clean and corrupted runs, before any sweep ------------------------------
    "identical clean and corrupted metrics": lambda e: (e.argv(None, e.task([{**ZOO_LINES[0], "corrupted": ZOO_LINES[
        0]["clean"]}]), "--source", str(e.ckpt)), ("step_000300", "the same logit_diff", "undefined")),
    "non-finite metric": lambda e: (e.argv(overflowing(e.copy("llama", "c")), e.task(TINY_LINES)),
                                    ("inputs/c", "not finite", "task line 1")),
}


# Found when the checkpoint is loaded (NaN weights) or its clean and corrupted runs are done, before any patching:
# the checkpoint loop's progress line may come first.
AFTER_LOAD = {"NaN weights", "identical clean and corrupted metrics", "non-finite metric"}


@pytest.mark.parametrize("case", list(CASES))
def test_patch_refuses_hostile_input(case: str, tmp_path: Path, zoo_quick: Path, tiny_dir: Callable[[str], Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    if case == "--device cuda without one" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = Env(tmp_path, zoo_quick, tiny_dir)
    argv, needles = CASES[case](env)
    out = Path(argv[argv.index("--out") + 1])
    existed, before, zoo_before = out.exists(), tree_state(tmp_path), tree_state(zoo_quick)
    assert_user_error(run(argv, capsys), *needles, after_progress=case in AFTER_LOAD)
    assert out.exists() == existed  # no results (not even an empty directory or partial/) were written
    assert_unchanged(tmp_path, before)
    assert_unchanged(zoo_quick, zoo_before)
