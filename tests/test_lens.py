"""Lenses across training (interp/dynamics/lenses.py, `interp lens`).

Oracles: TransformerLens 4.3's own `logit_lens` on the bridge, torch.nn.functional / torch.distributions / argsort on
hand-built logits, an unpadded per-prompt recomputation of the results' numbers, and the zoo (the tuned lens beats
the logit lens at every layer but the last, where both are the model's output)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

import interp
from interp.analyses import run as run_analysis
from interp.dynamics import lenses
from interp.dynamics.lenses import (
    TunedLens, answer_rank_prob, entropy, kl_to_final, lens_logits, load_lens, residual_stack, save_lens,
)
from interp.executors import KEY
from interp.testing import tiny_checkpoint
from clitools import assert_user_error, run

PROMPTS = ["the cat sees the ball", "my friend likes the moon and the river", "a dog", "the old man calls a child",
           "one bird finds the teacher", "the river remembers"]
TASK = [{"clean": "the cat sees the", "answer": " ball"}, {"clean": "my friend likes a", "answer": " moon"}]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-checkpoint tiny run, a prompt file and a task file."""
    base = tmp_path_factory.mktemp("lens")
    for seed, step in enumerate((10, 20)):
        tiny_checkpoint("llama", base / "run" / f"step_{step:06d}", seed=seed)
    (base / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (base / "task.jsonl").write_text("".join(json.dumps(line) + "\n" for line in TASK))
    return {"run": base / "run", "prompts": base / "prompts.txt", "task": base / "task.jsonl", "root": base}


@pytest.fixture(scope="module")
def results(files: dict[str, Path]) -> interp.results.Results:
    return run_analysis("lens", run=files["run"], prompts=files["prompts"], task=files["task"],
                        out=files["root"] / "out", steps=40, heldout=0.34)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_logit_lens_equals_transformer_lens(arch: str, tiny_dir: Callable[[str], Path]) -> None:
    from transformer_lens.tools.analysis.logit_lens import logit_lens

    model = interp.load(tiny_dir(arch), backend="transformer_lens", device="cpu")
    tokens = model.to_tokens(PROMPTS[:1])
    theirs = logit_lens(model.bridge, tokens, positions=None, return_type="logits")
    assert theirs.labels[-1] == "final_post" and len(theirs.labels) == model.summary.n_layers + 1
    native = interp.load(tiny_dir(arch), backend="native", device="cpu")
    for hooked in (model, native):
        stack, _ = residual_stack(hooked, tokens)
        torch.testing.assert_close(lens_logits(hooked, stack).detach(), theirs.readout.values.detach(),
                                   atol=1e-4, rtol=0)


def test_kl_entropy_rank_against_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    lens_rows, final = torch.randn(3, 5, 11, generator=g) * 3, torch.randn(3, 5, 11, generator=g) * 3
    answer = torch.randint(0, 11, (3, 5), generator=g)
    kl = F.kl_div(lens_rows.log_softmax(-1), final.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl_to_final(lens_rows, final), kl)
    torch.testing.assert_close(entropy(lens_rows), torch.distributions.Categorical(logits=lens_rows).entropy())
    rank, prob = answer_rank_prob(lens_rows, answer)
    order = lens_rows.argsort(-1, descending=True)
    assert torch.equal(rank, (order == answer[..., None]).int().argmax(-1))
    torch.testing.assert_close(prob, F.softmax(lens_rows, -1).gather(-1, answer[..., None])[..., 0])


def test_tuned_lens_starts_at_identity_and_keeps_the_final_entry(tiny_dir: Callable[[str], Path],
                                                                  tmp_path: Path) -> None:
    model = interp.load(tiny_dir("llama"), backend="native", device="cpu")
    stack, final = residual_stack(model, model.to_tokens(PROMPTS[:2]))
    fresh = TunedLens(model.summary.n_layers, model.summary.d_model)
    torch.testing.assert_close(fresh(stack).detach(), stack)
    rows = stack.flatten(1, 2)
    lens, loss = lenses.train_tuned_lens(model, rows, final.flatten(0, 1), steps=30, lr=1e-3, batch=8, seed=0)
    assert loss[-1] < loss[0]
    assert torch.equal(lens(stack)[-1], stack[-1])
    tuned = lens_logits(model, stack, lens).detach()
    assert float(kl_to_final(tuned[-1], final).max()) < 1e-5
    save_lens(tmp_path / "l.safetensors", lens, "k1", loss)
    assert load_lens(tmp_path / "l.safetensors", "k2") is None
    loaded, loaded_loss = load_lens(tmp_path / "l.safetensors", "k1")
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded_loss, loss)


def test_results_against_unpadded_recomputation(results: interp.results.Results, files: dict[str, Path]) -> None:
    t, s = results.tensors, results.summary
    assert s["steps"] == [10, 20] and t["kl_logit"].shape[:2] == (2, 3)
    model = interp.load(files["run"] / "step_000020", backend="native", device="cpu")
    lens = load_lens(files["root"] / "out" / "partial" / "lenses" / "step_000020.safetensors",
                     _lens_key(files, "step_000020"))[0]
    width = t["kl_logit"].shape[-1]
    sums, counts = torch.zeros(2, 3, width), torch.zeros(width)
    for prompt in PROMPTS:
        stack, final = residual_stack(model, model.to_tokens([prompt]))
        for i, chosen in enumerate((None, lens)):
            logits = lens_logits(model, stack, chosen).detach()[:, 0]
            kl = F.kl_div(logits.log_softmax(-1), final[0].log_softmax(-1), log_target=True, reduction="none").sum(-1)
            sums[i, :, : kl.shape[1]] += kl
        counts[: stack.shape[2]] += 1
    torch.testing.assert_close(t["kl_logit"][-1], sums[0] / counts, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(t["kl_tuned"][-1], sums[1] / counts, atol=1e-5, rtol=1e-4)
    assert torch.equal(t["prompts_at_pos"], counts.long())
    assert float(t["eval_kl_logit"][:, -1].abs().max()) < 1e-5 and float(t["eval_kl_tuned"][:, -1].abs().max()) < 1e-5
    for row, line in enumerate(TASK):
        tokens = model.to_tokens([line["clean"]])
        answer = model.tokenizer(line["answer"], add_special_tokens=False)["input_ids"][0]
        order = model(tokens)[0, -1].argsort(descending=True)
        assert int(t["answer_rank_logit"][-1, -1, row]) == int((order == answer).nonzero()[0, 0])


def _lens_key(files: dict[str, Path], label: str) -> str:
    """The key the run saved the lens under (read back from the file, checked by `load_lens` with it)."""
    from safetensors import safe_open

    path = files["root"] / "out" / "partial" / "lenses" / f"{label}.safetensors"
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()[KEY]


def test_rerun_reuses_the_saved_lenses(results: interp.results.Results, files: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a saved lens was trained again")

    monkeypatch.setattr(lenses, "train_tuned_lens", refuse)
    copy = shutil.copytree(results.path, files["root"] / "rerun")
    again = run_analysis("lens", run=files["run"], prompts=files["prompts"], out=copy, steps=40, heldout=0.34,
                         force=True)  # no task now: the numbers are recomputed, the lenses reused
    torch.testing.assert_close(again.tensors["kl_tuned"], results.tensors["kl_tuned"])
    assert "answer_rank_logit" not in again.tensors


@pytest.mark.parametrize("bad, needle", [
    (["--prompts", "missing.txt"], "does not exist"),
    (["--prompts", "empty.txt"], "holds no prompts"),
    (["--task", "long.jsonl"], "not one token"),
    (["--heldout", "0.95"], "--heldout"),
    (["--steps", "0"], "--steps"),
    (["--lr", "0"], "--lr"),
    (["--lens-batch", "0"], "--lens-batch"),
])
def test_hostile_inputs_refused_before_compute(bad: list[str], needle: str, files: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "long.jsonl").write_text(json.dumps({"clean": "the cat", "answer": " the cat sees the ball"}) + "\n")
    bad = [str(tmp_path / b) if b.endswith((".txt", ".jsonl")) else b for b in bad]
    argv = ["lens", files["run"], "--prompts", files["prompts"], "--out", tmp_path / "out", *bad]
    assert_user_error(run(argv, capsys), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.zoo
def test_tuned_lens_beats_logit_lens_on_the_zoo(zoo: Path, tmp_path: Path) -> None:
    from interp.data.prompts import write_prompts
    from interp.data.sources import source_of

    final = sorted((zoo / "base").glob("step_*"))[-1]
    prompts = write_prompts(tmp_path / "heldout.jsonl", [s.text for s in source_of(final).truth_statements("test")])
    found = run_analysis("lens", run=final, prompts=prompts, out=tmp_path / "out")
    logit, tuned = found.tensors["eval_kl_logit"][-1], found.tensors["eval_kl_tuned"][-1]
    print("zoo base final: KL logit", [round(v, 3) for v in logit.tolist()], "tuned",
          [round(v, 3) for v in tuned.tolist()])
    assert bool((tuned[:-1] < logit[:-1]).all())
    assert float(logit[-1]) < 1e-5 and float(tuned[-1]) < 1e-5


def test_workers_give_the_same_numbers(results: interp.results.Results, files: dict[str, Path]) -> None:
    spread = run_analysis("lens", run=files["run"], prompts=files["prompts"], task=files["task"],
                          out=files["root"] / "workers", steps=40, heldout=0.34, workers=2)
    for name, value in results.tensors.items():
        torch.testing.assert_close(spread.tensors[name], value, msg=name)


def test_page_shows_the_stored_numbers(results: interp.results.Results, monkeypatch: pytest.MonkeyPatch) -> None:
    from apptools import explorer

    at = explorer(results.path.parent, monkeypatch, results.path)
    assert at.header[0].value == "Lenses across training" and not at.error
    shown = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    torch.testing.assert_close(torch.tensor(shown[0]["data"][0]["z"]), results.tensors["kl_logit"][-1])
    torch.testing.assert_close(torch.tensor(shown[2]["data"][1]["y"]), results.tensors["eval_kl_tuned"][:, 0])
    at.select_slider(key="lens_ckpt").set_value("step 10").run()
    shown = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    torch.testing.assert_close(torch.tensor(shown[1]["data"][0]["z"]), results.tensors["kl_tuned"][0])
    assert torch.equal(torch.tensor(shown[3]["data"][0]["z"]).long(), results.tensors["answer_rank_logit"][0])


def test_readable_step_is_the_first_of_a_lasting_top1_majority() -> None:
    from interp.analyses.lens import readable_steps

    rank = torch.tensor([[[0, 3], [2, 2]], [[5, 5], [0, 0]], [[0, 1], [0, 4]], [[0, 0], [0, 9]]])  # [ckpt, layer, prompt]
    found = readable_steps({"answer_rank_logit": rank, "answer_rank_tuned": rank + 1}, [0, 10, 20, 30])
    assert found == {"logit": [20, 10], "tuned": [None, None]}
