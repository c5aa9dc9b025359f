"""Lenses across training: the logit lens (nostalgebraist 2020) and a tuned lens (Belrose et al. 2023, "Eliciting
Latent Predictions from Transformers with the Tuned Lens") at every checkpoint of a run, layer and position: KL to
the model's final distribution, entropy, and for a task the answer's rank and probability, so one sees when during
training an answer becomes readable at each layer.

The tuned lens of each checkpoint is trained by interp on a training split of the prompts (`--heldout` of them, drawn
with `--seed`, are kept out of training; the held-out KL is the summary's headline) and saved as
`OUT/partial/lenses/<checkpoint>.safetensors` with the key of what it was trained from, so a rerun reuses it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, Bos, ExecutorSpec, Opt, Revisions, executor_of, settings_of, write
from interp.data.tokens import BOS_DEFAULT
from interp.errors import InterpError

if TYPE_CHECKING:
    from torch import Tensor

    from interp.results import Results

PARTIAL_DIR = "partial"  # per-checkpoint numbers, kept beside the results for reruns
LENS_DIR = "lenses"  # under PARTIAL_DIR (the part of a results directory a rerun keeps): one tuned lens a checkpoint
TASK_EXAMPLE = '{"clean": "The capital of France is", "answer": " Paris"}'


@dataclass(frozen=True)
class Spec(ExecutorSpec):
    """Logit lens and tuned lens at every checkpoint, layer and position: KL to the final distribution, entropy, and
    a task's answer rank and probability; tuned lenses trained on a training split of --prompts, saved in
    OUT/partial/lenses/."""

    run: Annotated[Path, Arg("A run directory of checkpoints (or one checkpoint), or a hub id (org/name) in the "
                             "Hugging Face cache (see --revisions).")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    prompts: Annotated[Path, Opt("Prompts (text, one a line, or JSONL {\"prompt\": ...}): the lenses are read at "
                                 "every position, and the tuned lens is trained on those not held out.",
                                 ("--prompts",))]
    task: Annotated[Optional[Path], Opt(f"JSONL task, one {TASK_EXAMPLE} a line (a patching task works): the "
                                        "answer (one token) is read after each prompt.", ("--task",))] = None
    heldout: Annotated[float, Opt("Fraction of the prompts (0 to 0.9) kept out of tuned-lens training; the summary's "
                                  "KL is measured on them (on the training prompts when 0).")] = 0.25
    steps: Annotated[int, Opt("Adam steps training each checkpoint's tuned lens (1 to 100000).")] = 250
    lr: Annotated[float, Opt("Adam learning rate of the tuned lens (0 to 1, exclusive of 0).")] = 1e-3
    lens_batch: Annotated[int, Opt("Token positions per Adam step (at least 1).")] = 512
    seed: Annotated[int, Opt("Seed for the held-out split and the training batches.")] = 0
    revisions: Revisions = None
    bos: Bos = BOS_DEFAULT
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False
    device: Annotated[str, Opt("cpu, cuda, cuda:N or auto.")] = "cpu"


@dataclass(frozen=True)
class Inputs:
    """What every checkpoint is read on: right-padded prompts (causal attention: padding after a token never changes
    it), which prompts train the lens, and the task's prompts and answer ids (None without a task)."""

    tokens: Tensor
    mask: Tensor
    train: Tensor
    task_tokens: Optional[Tensor]
    task_last: Optional[Tensor]
    answers: Optional[Tensor]
    steps: int
    lr: float
    batch: int
    seed: int

    def digest(self, *parts: Any) -> str:
        """sha256 of the given tensors and values (a lens or unit key)."""
        hashed = hashlib.sha256()
        for part in parts:
            hashed.update(part.numpy().tobytes() + str(tuple(part.shape)).encode() if hasattr(part, "numpy")
                          else json.dumps(part, sort_keys=True).encode())
        return hashed.hexdigest()

    def lens_key(self, weights: str) -> str:
        """What a checkpoint's tuned lens depends on: its weights, the training tokens and the training settings."""
        return self.digest(weights, self.tokens[self.train], self.mask[self.train],
                           [self.steps, self.lr, self.batch, self.seed])

    def unit_key(self, lens_key: str) -> str:
        """What a checkpoint's numbers depend on: its lens and every token read."""
        task = [t for t in (self.task_tokens, self.task_last, self.answers) if t is not None]
        return self.digest(lens_key, self.tokens, self.mask, self.train, *task)


def read_task(path: Path, tokenizer: Any, bos: bool, d_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """The task's prompts, their one-token answers' ids and the answers as written; an answer that is not exactly one
    token of the model's vocabulary is refused by line number."""
    from interp.data.jsonl import numbered_records
    from interp.data.tokens import encode

    prompts, answers, written = [], [], []
    for number, row in numbered_records(path, ("clean", "answer"), TASK_EXAMPLE):
        ids = encode(tokenizer, row["answer"], bos=False)
        if len(ids) != 1 or not 0 <= ids[0] < d_vocab:
            raise InterpError(f"{path} line {number}: the answer {row['answer']!r} is {len(ids)} tokens, not one "
                              "token of the model's vocabulary", fix="give an answer that encodes to one token (with "
                                                                     "its leading space, e.g. \" Paris\")")
        prompts.append(row["clean"]), answers.append(ids[0]), written.append(row["answer"])
    return prompts, answers, written


def encoded(tokenizer: Any, texts: list[str], bos: bool, n_ctx: int, source: str) -> tuple[Tensor, Tensor]:
    """Right-padded tokens and mask of texts that each fit the context."""
    from interp.data.tokens import encode, pad
    from interp.options import check_context

    ids = [encode(tokenizer, text, bos=bos) for text in texts]
    check_context(ids, texts, n_ctx, source=source)
    return pad(tokenizer, ids, side="right")


def lens_checkpoint(checkpoint: Path, inputs: Inputs, lens_file: Path, lens_key: str, device: str
                    ) -> dict[str, Tensor]:
    """One checkpoint's lens numbers (a sweep unit: it runs on any executor); its tuned lens read from `lens_file`
    when trained from the same inputs, else trained here on the training prompts' real tokens."""
    import torch

    from interp.dynamics.lenses import (
        answer_stats, lens_stats, load_lens, masked_mean, residual_stack, train_tuned_lens,
    )
    from interp.loading import load

    model = load(checkpoint, backend="native", device=device)
    tokens, mask = inputs.tokens.to(model.device), inputs.mask.bool().to(model.device)
    stack, final = residual_stack(model, tokens)
    found = load_lens(lens_file, lens_key)
    if found is None:
        train = torch.zeros_like(mask).index_fill(0, inputs.train.to(model.device), True) & mask
        lens, loss = train_tuned_lens(model, stack[:, train], final[train], inputs.steps, inputs.lr, inputs.batch,
                                      inputs.seed)
    else:
        lens, loss = found
    lens = lens.to(model.device)
    evaluated = torch.ones_like(mask).index_fill(0, inputs.train.to(model.device), False) & mask
    evaluated = evaluated if bool(evaluated.any()) else mask
    out = {"weight": lens.weight.detach(), "bias": lens.bias.detach(), "lens_loss": loss}
    for name, values in lens_stats(model, stack, final, lens).items():
        out[name] = masked_mean(values, mask)
        if name.startswith("kl_"):
            out[f"eval_{name}"] = values[:, evaluated].mean(-1)
    if inputs.task_tokens is not None:
        task_stack, _ = residual_stack(model, inputs.task_tokens.to(model.device))
        last = task_stack[:, torch.arange(task_stack.shape[1]), inputs.task_last.to(model.device)]
        out |= answer_stats(model, last, inputs.answers.to(model.device), lens)
    return out


def checked_run(path: Path, revisions: Optional[str]) -> tuple[Any, ...]:
    """The run's checkpoints, each verified (weights match config.json, tokenizer), compatible with each other and
    of a family interp's own forward implements (the lenses read its final norm and unembedding)."""
    from interp.checkpoints import Run
    from interp.models.auto_backend import require_native

    opened = Run.verified(path, revisions)
    require_native(opened.checkpoints[0].path, "interp lens", "its lenses read the final norm and unembedding of "
                   "interp's own forward")
    return opened.checkpoints


def split(n: int, heldout: float, seed: int) -> Tensor:
    """Indices of the training prompts: all but floor(n * heldout) drawn with `seed`, in order."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[int(n * heldout):].sort().values


def run(spec: Spec) -> Results:
    """Read every checkpoint through both lenses and write the results directory.

    Checked before any checkpoint is read: `out`, the options, every checkpoint (weights match config.json,
    tokenizer) and their compatibility, the prompts (a readable, non-empty file, each within the context), the task
    (each answer one token). One model is loaded at a time per worker; each checkpoint's numbers are kept in
    `out/partial/` and its tuned lens in `out/partial/lenses/`, keyed by what they depend on, so reruns reuse them.
    Prints the held-out KL per layer of both lenses at the last checkpoint.
    """
    import torch

    from interp.checkpoints import read_summary, run_location, vouch, weights_sha256
    from interp.data.prompts import read_prompts
    from interp.dynamics.lenses import LENSES, TunedLens, load_lens, save_lens
    from interp.executors import Unit, run_units
    from interp.loading import load_tokenizer, resolve_device
    from interp.options import check_range
    from interp.outdir import check_out, write_partial_settings
    from interp.results import input_identity

    s, settings = spec, {**settings_of(spec), "run": run_location(spec.run)}
    out = check_out(s.out, UNIT.name, settings, s.force)
    executor = executor_of(spec)
    check_range("--heldout", s.heldout, 0.0, 0.9)
    check_range("--steps", s.steps, 1, 100_000)
    check_range("--lr", s.lr, 1e-12, 1.0)
    check_range("--lens-batch", s.lens_batch, 1)
    device = executor.device(s.device) or str(resolve_device(s.device))
    ckpts = checked_run(s.run, s.revisions)
    shape = read_summary(ckpts[0].path)
    tokenizer = load_tokenizer(ckpts[0].path)
    prompts = read_prompts(s.prompts)
    tokens, mask = encoded(tokenizer, prompts, s.bos, shape.n_ctx, str(s.prompts))
    task = read_task(s.task, tokenizer, s.bos, shape.d_vocab) if s.task is not None else None
    task_tokens, task_mask = encoded(tokenizer, task[0], s.bos, shape.n_ctx, str(s.task)) if task else (None, None)
    inputs = Inputs(tokens, mask, split(len(prompts), s.heldout, s.seed), task_tokens,
                    task_mask.sum(1) - 1 if task_mask is not None else None,
                    torch.tensor(task[1]) if task else None, s.steps, s.lr, s.lens_batch, s.seed)
    steps = [c.step if c.step is not None else i for i, c in enumerate(ckpts)]
    records, identical = vouch(ckpts)
    write_partial_settings(out, UNIT.name, settings)
    lens_dir = out / PARTIAL_DIR / LENS_DIR
    lens_keys = [inputs.lens_key(weights_sha256(c.path)) for c in ckpts]
    units = [Unit(c.label, inputs.unit_key(key), lens_checkpoint,
                  (c.path, inputs, lens_dir / f"{c.label}.safetensors", key, device))
             for c, key in zip(ckpts, lens_keys)]
    with executor.opened():
        per_ckpt = run_units(units, out / PARTIAL_DIR, executor, f"lenses {ckpts[0].run}", "checkpoint")
    for c, key, found in zip(ckpts, lens_keys, per_ckpt):
        if load_lens(lens_dir / f"{c.label}.safetensors", key) is None:
            lens = TunedLens(shape.n_layers, shape.d_model)
            lens.load_state_dict({"weight": found["weight"], "bias": found["bias"]})
            save_lens(lens_dir / f"{c.label}.safetensors", lens, key, found["lens_loss"])
    tensors = {name: torch.stack([found[name] for found in per_ckpt]) for name in per_ckpt[0]
               if name not in ("weight", "bias")}
    tensors |= {"steps": torch.tensor(steps), "prompts_at_pos": mask.sum(0)}
    summary = {
        "method": "logit lens (nostalgebraist 2020) and tuned lens (Belrose et al. 2023): KL(final || lens) in nats",
        "run": run_location(s.run), "steps": steps, "checkpoints": records, "identical_weights": identical,
        "layers": "layer l is the residual stream entering block l; layer n_layers the final residual stream",
        "prompts": len(prompts), "training_prompts": inputs.train.tolist(),
        "eval_split": "held-out prompts" if len(prompts) > len(inputs.train) else "training prompts (none held out)",
        "tuned_lens": {"trained_on": "real tokens of the training prompts", "optimiser": "Adam", "steps": s.steps,
                       "lr": s.lr, "batch_tokens": s.lens_batch, "files": str(lens_dir)},
        "final_checkpoint": {name: tensors[f"eval_kl_{name}"][-1].tolist() for name in LENSES},
        "middle_layer": {"layer": shape.n_layers // 2, **{name: tensors[f"eval_kl_{name}"][:, shape.n_layers // 2]
                                                          .tolist() for name in LENSES}},
    }
    if task:
        summary["task"] = {"answers": task[2], "readable_step": readable_steps(tensors, steps)}
    inputs_ = [input_identity("checkpoint", c.path, step=c.step, revision=c.revision) for c in ckpts]
    inputs_ += [input_identity("prompts", s.prompts)] + ([input_identity("task", s.task)] if task else [])
    results = write(UNIT, out, tensors, summary, title=f"lenses: {ckpts[0].run}", axes=tensor_axes(tensors, steps),
                    tokenization={"bos": s.bos, "padding": "right"}, inputs=inputs_, settings=settings)
    for line in report(results.summary):
        print(line)
    return results


def readable_steps(tensors: dict[str, Tensor], steps: list[int]) -> dict[str, list[Optional[int]]]:
    """Per lens and layer, the first step from which the answer is the top prediction for at least half the task's
    prompts at every later checkpoint (None: never)."""
    from interp.dynamics.lenses import LENSES

    found = {}
    for name in LENSES:
        readable = ((tensors[f"answer_rank_{name}"] == 0).float().mean(-1) >= 0.5).flip(0).cumprod(0).flip(0)
        found[name] = [next((steps[i] for i in range(len(steps)) if readable[i, layer]), None)
                       for layer in range(readable.shape[1])]
    return found


def tensor_axes(tensors: dict[str, Any], steps: list[int]) -> dict[str, Any]:
    """[checkpoint, layer, pos] per-position means, [checkpoint, layer] held-out KL, [checkpoint, layer, prompt] task
    readouts, [checkpoint, step] lens training loss, [checkpoint] steps, [pos] prompt counts."""
    from interp.results import axes

    layers = list(range(next(t for n, t in tensors.items() if n.startswith("eval_kl")).shape[1]))
    named = {"kl": ("layer", "pos"), "entropy": ("layer", "pos"), "eval": ("layer",), "answer": ("layer", "prompt"),
             "lens": ("train_step",), "steps": ()}
    found = {name: axes("checkpoint", *named[name.split("_")[0]], checkpoint=steps, layer=layers)
             for name in tensors if name != "prompts_at_pos"}
    return found | {"prompts_at_pos": axes("pos")}


def report(summary: dict[str, Any]) -> list[str]:
    """What `interp lens` prints: held-out KL per layer of both lenses at the last checkpoint, and the middle layer's
    KL across training."""
    final, middle = summary["final_checkpoint"], summary["middle_layer"]

    def both(values: dict[str, Any]) -> str:
        """"logit a b c | tuned d e f" of a {lens: per-layer KL} record."""
        return " | ".join(f"{name} " + " ".join(f"{v:.3f}" for v in values[name]) for name in ("logit", "tuned"))

    lines = [f"KL(final || lens) on {summary['eval_split']} at step {summary['steps'][-1]}, per layer: {both(final)}",
             f"layer {middle['layer']} KL across steps {summary['steps']}: {both(middle)}"]
    if "task" in summary:
        lines.append("first step the answer is top-1 for half the prompts, per layer: "
                     f"{summary['task']['readable_step']}")
    return lines


def figures(results: Results) -> list[Any]:
    """Held-out KL per layer at the last checkpoint, KL and (with a task) mean answer rank over checkpoint x layer, and
    layer x position KL with a slider over checkpoints."""
    import plotly.express as px
    import torch

    from interp.base_vs_post.figures import layer_curves
    from interp.dynamics.lenses import LENSES

    t, steps = results.tensors, results.summary["steps"]
    shown = [layer_curves({name: t[f"eval_kl_{name}"][-1] for name in LENSES},
                          f"KL(final || lens) on {results.summary['eval_split']}, step {steps[-1]}", "KL (nats)")]
    grids = {"KL(final || lens)": "eval_kl"} | ({"mean answer rank": "answer_rank"} if "answer_rank_logit" in t else {})
    for title, prefix in grids.items():
        values = torch.stack([t[f"{prefix}_{name}"].float() for name in LENSES])
        values = values.mean(-1) if prefix == "answer_rank" else values
        shown.append(px.imshow(values.transpose(1, 2).numpy(), facet_col=0, aspect="auto", origin="lower",
                               labels={"x": "checkpoint", "y": "layer", "color": title},
                               x=[str(step) for step in steps], title=title))
    per_pos = torch.stack([t[f"kl_{name}"] for name in LENSES], dim=1)
    shown.append(px.imshow(per_pos.numpy(), animation_frame=0, facet_col=1, aspect="auto", origin="lower",
                           labels={"animation_frame": "checkpoint", "x": "position", "y": "layer", "color": "KL"},
                           title=f"KL per layer and position; slider: checkpoint index (steps {steps})"))
    for fig in shown[1:]:
        fig.for_each_annotation(lambda note: note.update(text=f"{list(LENSES)[int(note.text.split('=')[-1])]} lens"))
    return shown


UNIT = Analysis(name="lens", title="Lenses across training", command=("lens",), spec=Spec, run=run, figures=figures,
                page="interp.analyses.lens.page", example="lens RUN --prompts prompts.txt --out results/lens")
