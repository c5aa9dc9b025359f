"""Induction heads across a training run (Olsson et al. 2022, "In-context Learning and Induction Heads"; scores as
TransformerLens's head_detector; clamps as Singh et al. 2024, "What needs to go right for an induction head?"):
every head's induction, previous-token, duplicate-token, prefix-matching and copying score at every checkpoint of a
run, the step at which each induction head formed, and the in-context-learning score and loss curves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, ExecutorSpec, Opt, Revisions, executor_of, settings_of, write
from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.results import Results

PARTIAL_DIR = "partial"  # per-checkpoint scores, kept beside the results for reruns


@dataclass(frozen=True)
class Spec(ExecutorSpec):
    """Scores of every head at every checkpoint, the formation step of each induction head, and the ICL curve."""

    run: Annotated[Path, Arg("A run directory of checkpoints (or one checkpoint), or a hub id (org/name) in the "
                             "Hugging Face cache (see --revisions).")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    revisions: Revisions = None
    seq_len: Annotated[int, Opt("Length T of the repeated random segment [BOS, r_1..r_T, r_1..r_T]; 2T+1 tokens "
                                "must fit the model's context.")] = 50
    batch: Annotated[int, Opt("Sequences per probe batch (at least 1).")] = 10
    text: Annotated[Optional[Path], Opt("Documents (one per line) for the ICL score; default: repeats.")] = None
    threshold: Annotated[float, Opt("A head whose induction score reaches this (0 to 1) is an induction head.")] = 0.4
    seed: Annotated[int, Opt("Seed for the random probe tokens.")] = 0
    clamps: Annotated[bool, Opt("Apply the clamps a clamped training run recorded in run.json.")] = True
    device: Annotated[str, Opt("cpu, cuda, cuda:N or auto.")] = "cpu"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


def documents(text: Path, tokenizer: Any, length: int, batch: int) -> Any:
    """`batch` windows of `length` tokens packed from the file's documents (one per line), BOS/EOS between them."""
    import torch

    try:
        lines = text.expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InterpError(f"--text {text} cannot be read as UTF-8 text ({err})",
                          fix="pass a UTF-8 text file with one document per line") from err
    docs = [line.strip() for line in lines if line.strip()]
    stream: list[int] = []
    for ids in (tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []):
        stream += [t for t in (tokenizer.bos_token_id, *ids, tokenizer.eos_token_id) if t is not None]
    n = min(batch, len(stream) // length)
    if n == 0:
        raise InterpError(f"{text} holds {len(stream)} tokens, fewer than one window of {length}",
                          fix="pass a longer text file (one document per line)")
    return torch.tensor(stream[: n * length]).reshape(n, length)


def cache_key(probe: Any, clamps: Any, checkpoint: Path) -> str:
    """What a checkpoint's scores depend on: the probe tokens, the clamps, the weights' content and config.json."""
    import hashlib

    from interp.checkpoints import weights_sha256
    from interp.loading import read_config

    digest = hashlib.sha256()
    for tokens in (probe.repeats, probe.prefix, probe.icl):
        if tokens is not None:
            digest.update(str(tuple(tokens.shape)).encode() + tokens.numpy().tobytes())
    digest.update(json.dumps([probe.early, probe.late, [str(c) for c in clamps.clamps], weights_sha256(checkpoint),
                              read_config(checkpoint)], sort_keys=True).encode())
    return digest.hexdigest()


def score_checkpoint(checkpoint: Path, probe: Any, clamps: Any, device: str) -> dict[str, Any]:
    """Scores of one checkpoint (a sweep unit: it runs on any executor); a non-finite score is an error naming the
    checkpoint."""
    import torch

    from interp.dynamics.induction import checkpoint_scores
    from interp.models.native import NativeTransformer

    nt = NativeTransformer.from_pretrained(checkpoint, device=torch.device(device))
    scores = checkpoint_scores(nt, probe, clamps.forward if clamps.clamps else None)
    for name, value in scores.items():
        if not bool(torch.isfinite(value).all()):
            raise InterpError(f"{checkpoint}: the {name} score is not finite", fix="check that checkpoint's weights "
                              "(its probe loss overflows or its attention is degenerate)")
    return scores


def top_heads(scores: Any, k: int = 5) -> list[dict[str, Any]]:
    """The k heads with the highest score in a [layer, head] tensor, best first."""
    n_heads = scores.shape[1]
    order = scores.flatten().argsort(descending=True)[:k].tolist()
    return [{"layer": i // n_heads, "head": i % n_heads, "score": float(scores.flatten()[i])} for i in order]


def run(spec: Spec) -> Results:
    """Score every checkpoint of the run, detect formation, and write the results directory.

    Everything is checked before any checkpoint is scored: `out`, the options, every checkpoint (weights match
    config.json, tokenizer), that they are compatible, `seq_len` against the context, the clamps; checkpoints with
    identical weights are warned about (`interp.checkpoints.vouch`). Each checkpoint's scores are kept in
    `out/partial/` keyed by the probe and the weights' content, so a rerun reuses them; one model is loaded at a
    time. Prints when each induction head formed (or the top heads' scores and why none did).
    """
    import torch

    from interp.checkpoints import Run, read_summary, run_location, vouch
    from interp.dynamics.clamping import ClampSet, read_run_clamps
    from interp.dynamics.formation import detect_formation
    from interp.dynamics.induction import SCORE_NAMES, make_probe
    from interp.loading import load_tokenizer, resolve_device
    from interp.models.auto_backend import require_native
    from interp.options import check_range
    from interp.executors import Unit, run_units
    from interp.outdir import check_out, write_partial_settings
    from interp.results import input_identity

    s, settings = spec, {**settings_of(spec), "run": run_location(spec.run)}
    out = check_out(s.out, UNIT.name, settings, s.force)
    executor = executor_of(spec)
    check_range("--batch", s.batch, 1)
    check_range("--threshold", s.threshold, 0.0, 1.0)
    device = executor.device(s.device) or str(resolve_device(s.device))
    checkpoints = Run.verified(s.run, s.revisions)
    ckpts = checkpoints.checkpoints
    require_native(ckpts[0].path, "interp induction", "its scores and clamps run on interp's own forward, which "
                   "replaces attention patterns inside the computation")
    shape = read_summary(ckpts[0].path)
    tokenizer = load_tokenizer(ckpts[0].path)
    bos = tokenizer.bos_token_id
    check_range("--seq-len", s.seq_len, 1, (shape.n_ctx - int(bos is not None)) // 2)
    clamps = read_run_clamps(checkpoints.path) if s.clamps else ClampSet()
    clamps.check(shape.n_layers, shape.n_heads)
    docs = documents(s.text, tokenizer, min(shape.n_ctx, 512), s.batch) if s.text is not None else None
    probe = make_probe(shape.d_vocab, shape.n_ctx, bos, tokenizer.all_special_ids, s.seq_len, s.batch,
                       documents=docs, seed=s.seed)
    steps = [c.step if c.step is not None else i for i, c in enumerate(ckpts)]
    records, identical = vouch(ckpts)
    units = [Unit(c.label, cache_key(probe, clamps, c.path), score_checkpoint, (c.path, probe, clamps, device))
             for c in ckpts]
    with executor.opened():
        per_ckpt = run_units(units, out / PARTIAL_DIR, executor, f"induction scores {ckpts[0].run}", "checkpoint",
                             claim=lambda: write_partial_settings(out, UNIT.name, settings))
    tensors = {name: torch.stack([scores[name] for scores in per_ckpt]) for name in per_ckpt[0]}
    tensors["steps"] = torch.tensor(steps)
    formation = detect_formation(steps, tensors["induction"], tensors["icl_score"], s.threshold,
                                 exclude=clamps.pattern_clamped)
    heads = formation.to_json()
    if len(steps) < 2:
        heads["note"] = "formation needs at least two checkpoints; top_heads gives the scores of this one"
    final = {name: {"best_head": [int(i) for i in divmod(int(tensors[name][-1].argmax()), tensors[name].shape[2])],
                    "best_score": float(tensors[name][-1].max())} for name in SCORE_NAMES}
    summary = {
        "method": "induction-head scores and formation (Olsson et al. 2022; TransformerLens head_detector; "
                  "Singh et al. 2024 clamps)",
        "run": run_location(s.run), "steps": steps, "checkpoints": records, "identical_weights": identical,
        "clamps": [str(c) for c in clamps.clamps], "clamped_heads_excluded": sorted(clamps.pattern_clamped),
        "probe": {"repeated_tokens": list(probe.repeats.shape), "prefix_matching": list(probe.prefix.shape),
                  "icl_source": probe.icl_source, "icl_early_tokens": probe.early, "icl_late_tokens": probe.late,
                  "text": str(s.text) if s.text else None, "seed": s.seed, "bos_id": bos},
        "induction_heads": heads,
        "top_heads": top_heads(tensors["induction"][-1]),
        "final_checkpoint": final,
        "loss_by_position": "the loss at position pos is that of predicting token pos + 1",
    }
    inputs = [input_identity("checkpoint", c.path, step=c.step, revision=c.revision) for c in ckpts]
    results = write(UNIT, out, tensors, summary, title=f"induction heads: {ckpts[0].run}",
                    axes=tensor_axes(tensors, steps), tokenization={"bos": bos is not None, "padding": None},
                    inputs=inputs + ([input_identity("text", s.text)] if s.text is not None else []),
                    settings=settings)
    for line in report(results.summary):
        print(line)
    return results


def tensor_axes(tensors: dict[str, Any], steps: list[int]) -> dict[str, Any]:
    """Scores [checkpoint, layer, head]; `loss_by_position` [checkpoint, pos]; the rest [checkpoint] (ticks: steps)."""
    from interp.results import axes

    by_ndim = {1: ("checkpoint",), 2: ("checkpoint", "pos"), 3: ("checkpoint", "layer", "head")}
    return {name: axes(*by_ndim[value.ndim], checkpoint=steps) for name, value in tensors.items()}


def report(summary: dict[str, Any]) -> list[str]:
    """What `interp induction` prints: formation of each induction head, or the top heads' scores and why none."""
    heads, steps = summary["induction_heads"], summary["steps"]
    top = ", ".join(f"L{h['layer']}H{h['head']} {h['score']:.3f}" for h in summary["top_heads"])
    if len(steps) < 2:
        return [f"one checkpoint (step {steps[0]}): formation needs at least two checkpoints; "
                f"highest induction scores: {top}"]
    lines = [f"L{h['layer']}H{h['head']}: forms at step {h['step']} (from {h['previous_step']}), score "
             f"{h['first_score']:.2f} -> {h['final_score']:.2f}, aligned with ICL drop: {h['aligned_with_icl']}"
             for h in heads["heads"]]
    if not lines:
        lines.append(f"no head reached induction score {heads['threshold']}; highest at step {steps[-1]}: {top}")
    return [*lines, f"steepest ICL-score drop at step {heads['icl_drop_step']}"]


def figures(results: Results) -> list[Any]:
    """Every score per head against the step (formation marked), the ICL score and loss curves, and layer x head
    heatmaps of the induction and previous-token scores over checkpoints."""
    from interp.analyses.induction.curves import heatmaps, loss_curves, score_curves
    from interp.dynamics.formation import FormationReport
    from interp.dynamics.induction import SCORE_NAMES

    t, steps = results.tensors, results.summary["steps"]
    formation = FormationReport.from_json(results.summary["induction_heads"])
    scores = {name: t[name] for name in SCORE_NAMES}
    return [*score_curves(steps, scores, formation), loss_curves(steps, t["icl_score"], t["loss"], formation),
            *heatmaps(steps, {k: scores[k] for k in ("induction", "previous_token")})]


UNIT = Analysis(name="induction", title="Induction heads", command=("induction", "scores"), spec=Spec, run=run,
                figures=figures, page="interp.analyses.induction.page",
                example="induction scores RUN --out results/induction")
