"""Attention patterns across a training run, with each head's induction and previous-token scores (Olsson et al.
2022, "In-context Learning and Induction Heads"; scores as TransformerLens's head_detector, computed by
`interp.dynamics.induction`, so they equal what `interp induction scores --no-clamps` writes for the same probe).

For every checkpoint, prompt, layer and head: the pattern `blocks.{l}.attn.hook_pattern` [query, key] read with
`run_with_cache` on the native backend (the TransformerLens bridge for a family interp does not implement; scores
then are left out, as `interp induction` needs interp's own forward). Each prompt runs alone, unpadded; in the
[checkpoint, prompt, layer, head, query, key] tensor the rows and columns past a prompt's length are zero
(`prompt_lengths` says where each prompt ends). Deviation: a clamped run's clamps are not applied (the views show
the checkpoints' own attention).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, Bos, ExecutorSpec, Opt, Revisions, executor_of, settings_of, write
from interp.data.tokens import BOS_DEFAULT
from interp.errors import InterpError

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

    from interp.results import Results

PARTIAL_DIR = "partial"  # per-checkpoint patterns and scores, kept beside the results for reruns
SCORES = ("induction", "previous_token")  # the head scores shown beside each pattern
PATTERN_AXES = ("checkpoint", "prompt", "layer", "head", "query", "key")
MAX_PATTERN_BYTES = 2 << 30  # the float32 patterns tensor a results directory may hold


@dataclass(frozen=True)
class Spec(ExecutorSpec):
    """Attention pattern of every head at every checkpoint on the prompts, with each head's induction and
    previous-token scores; writes patterns [checkpoint, prompt, layer, head, query, key] and the scores."""

    run: Annotated[Path, Arg("A run directory of checkpoints (or one checkpoint), or a hub id (org/name) in the "
                             "Hugging Face cache (see --revisions).")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False
    prompt: Annotated[tuple[str, ...], Opt("A prompt to read the patterns on (repeatable).", ("--prompt",))] = ()
    prompts: Annotated[Optional[Path], Opt("Prompt file (text, one a line, or JSONL {\"prompt\": ...}), read after "
                                           "any --prompt.", ("--prompts",))] = None
    layers: Annotated[Optional[str], Opt("Comma-separated layers to keep (default: all).", ("--layers",))] = None
    revisions: Revisions = None
    seq_len: Annotated[int, Opt("Length T of the induction probe's repeated random segment [BOS, r_1..r_T, "
                                "r_1..r_T] (as interp induction scores).")] = 50
    batch: Annotated[int, Opt("Sequences in the induction probe (at least 1).")] = 10
    seed: Annotated[int, Opt("Seed for the induction probe's random tokens.")] = 0
    bos: Bos = BOS_DEFAULT
    device: Annotated[str, Opt("cpu, cuda, cuda:N or auto.")] = "cpu"

    @classmethod
    def for_prompt(cls, results: Results, prompt: str) -> Spec:
        """The Spec reading `prompt` on the run, checkpoints, layers, probe and BOS policy `results` recorded, into a
        sibling directory named by a hash of those settings and the prompt (the explorer's "new prompt"); refused
        before any compute when the prompt is blank or the checkpoints are no longer those the results read."""
        summary, probe = results.summary, results.summary["probe"] or {}
        digest = hashlib.sha256(json.dumps([summary["settings_sha256"], prompt]).encode()).hexdigest()[:16]
        spec = cls(run=Path(summary["run"]), out=results.path.parent / f"{results.path.name[:200]}-prompt-{digest}",
                   prompt=(prompt,), layers=summary["layers_option"], revisions=summary["revisions"],
                   bos=summary["tokenization"]["bos"], **{key: probe[key] for key in ("seq_len", "batch", "seed")
                                                          if key in probe})
        prompt_texts(spec)
        check_recorded_checkpoints(summary)
        return spec


def check_recorded_checkpoints(summary: dict[str, Any]) -> None:
    """Refuse a run whose checkpoints are no longer those `summary` recorded: one moved or deleted, one added or
    removed, or other weights at a recorded path."""
    from interp.checkpoints import run_checkpoints, weights_sha256

    recorded = [entry for entry in summary["inputs"] if entry["role"] == "checkpoint"]
    rerun = f"rerun `interp attention` on {summary['run']} as it is now"
    for entry in recorded:
        if not Path(entry["path"]).is_dir():
            raise InterpError(f"checkpoint {entry['path']}, which these results read, is no longer there",
                              fix=f"move it back, or {rerun}")
    found = [str(c.path) for c in run_checkpoints(summary["run"], summary["revisions"])]
    if found != [entry["path"] for entry in recorded]:
        raise InterpError(f"{summary['run']} now holds {len(found)} checkpoint(s), not the {len(recorded)} these "
                          "results read", fix=rerun)
    for entry in recorded:
        if weights_sha256(entry["path"]) != entry["sha256"]:
            raise InterpError(f"the weights of {entry['path']} changed since these results were written", fix=rerun)


def prompt_texts(spec: Spec) -> list[str]:
    """The --prompt texts, then the --prompts file's; an empty or blank prompt, or none at all, is refused."""
    from interp.data.prompts import read_prompts

    texts = [*spec.prompt, *(read_prompts(spec.prompts) if spec.prompts is not None else [])]
    if not texts:
        raise InterpError("no prompt was given", fix="pass --prompt TEXT or --prompts FILE")
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise InterpError(f"prompt {number} is empty", fix="give every prompt some text")
    return texts


@dataclass(frozen=True)
class Inputs:
    """What every checkpoint is read on: the prompts' token ids, the layers kept, the backend, and the induction
    probe (None on a backend without interp's own forward)."""

    ids: list[list[int]]
    layers: list[int]
    backend: str
    probe: Any  # interp.dynamics.induction.Probe, or None

    def key(self, checkpoint: Path) -> str:
        """What a checkpoint's unit depends on: the prompts, layers, backend and (through `interp induction`'s key)
        the probe, the weights' content and config.json."""
        from interp.analyses.induction import cache_key
        from interp.checkpoints import weights_sha256
        from interp.dynamics.clamping import ClampSet

        scored = cache_key(self.probe, ClampSet(), checkpoint) if self.probe else weights_sha256(checkpoint)
        return hashlib.sha256(repr((self.ids, self.layers, self.backend, scored)).encode()).hexdigest()


def pattern_names(layers: list[int]) -> list[str]:
    """The attention pattern hooks of `layers`."""
    return [f"blocks.{layer}.attn.hook_pattern" for layer in layers]


def check_size(shape: list[int]) -> None:
    """Refuse a float32 patterns tensor of [checkpoints, prompts, layers, heads, positions] (x positions again, the
    keys) larger than MAX_PATTERN_BYTES."""
    size = 4 * math.prod(shape) * shape[-1]
    if size > MAX_PATTERN_BYTES:
        raise InterpError(f"the patterns of {shape[0]} checkpoints x {shape[1]} prompts x {shape[2]} layers x "
                          f"{shape[3]} heads x {shape[4]}^2 positions would take {size / 2**30:.1f} GiB (at most "
                          f"{MAX_PATTERN_BYTES / 2**30:.0f})", fix="pass --layers, fewer or shorter prompts, or a "
                                                                   "run with fewer checkpoints (--revisions)")


def check_pattern_hooks(checkpoint: Path, backend: str, layers: list[int], device: str) -> None:
    """Refuse, before the sweep, a hook backend that fires no attention pattern hook for this family (the
    TransformerLens bridge of GPT-J, for one): it loads the first checkpoint, since the bridge's hooks are known only
    then."""
    from interp.loading import load
    from interp.models.auto_backend import model_type_of

    fired = set(load(checkpoint, backend=backend, device=device).hook_names())
    missing = [name for name in pattern_names(layers) if name not in fired]
    if missing:
        raise InterpError(f"{checkpoint} ({model_type_of(checkpoint)!r}) has no hook {missing[0]} on the {backend} "
                          "backend, so its attention patterns cannot be read",
                          fix="use a family interp implements natively, or one whose TransformerLens bridge fires "
                              "attn.hook_pattern")


def prompt_patterns(model: Any, ids: list[list[int]], layers: list[int]
                    ) -> Float[Tensor, "prompt layer head query key"]:
    """Each prompt's `hook_pattern` of the kept layers, run alone (no padding), zero-filled to the longest prompt."""
    import torch

    names = pattern_names(layers)
    width = max(len(seq) for seq in ids)
    out = torch.zeros(len(ids), len(layers), model.summary.n_heads, width, width)
    for i, seq in enumerate(ids):
        _, cache = model.run_with_cache(torch.tensor([seq], device=model.device), names=names)
        out[i, :, :, : len(seq), : len(seq)] = torch.stack([cache[name][0].float().cpu() for name in names])
    return out


def attend_checkpoint(checkpoint: Path, inputs: Inputs, device: str) -> dict[str, Tensor]:
    """One checkpoint's patterns and (native backend) its heads' induction and previous-token scores, by
    `interp.dynamics.induction.checkpoint_scores` (a sweep unit: it runs on any executor)."""
    from interp.dynamics.induction import checkpoint_scores
    from interp.loading import load

    model = load(checkpoint, backend=inputs.backend, device=device)
    out = {"patterns": prompt_patterns(model, inputs.ids, inputs.layers)}
    if inputs.probe is not None:
        scores = checkpoint_scores(model.native(), inputs.probe)
        out |= {name: scores[name][inputs.layers] for name in SCORES}
    return out


def run(spec: Spec) -> Results:
    """Read every checkpoint's attention patterns on the prompts, score its heads, and write the results directory.

    Checked before any checkpoint is read: `out`, the options, every checkpoint (weights match config.json,
    tokenizer) and their compatibility, `--layers` against the model, the prompts (none empty, each within the
    context), `--seq-len` against the context. One model is loaded at a time per worker; each checkpoint's numbers
    are kept in `out/partial/`, keyed by what they depend on, so a rerun reuses them.
    """
    import torch

    from interp.checkpoints import Run, read_summary, run_location, vouch
    from interp.data.tokens import check_bos, encode
    from interp.dynamics.induction import make_probe
    from interp.executors import Unit, run_units
    from interp.loading import load_tokenizer, resolve_device
    from interp.models.auto_backend import auto_backend
    from interp.options import check_context, check_range, parse_int_list
    from interp.outdir import check_out, write_partial_settings
    from interp.results import input_identity

    s, settings = spec, {**settings_of(spec), "run": run_location(spec.run)}
    out = check_out(s.out, UNIT.name, settings, s.force)
    executor = executor_of(spec)
    check_range("--batch", s.batch, 1)
    device = executor.device(s.device) or str(resolve_device(s.device))
    ckpts = Run.verified(s.run, s.revisions).checkpoints
    shape = read_summary(ckpts[0].path)
    layers = parse_int_list("--layers", s.layers, 0, shape.n_layers - 1) or list(range(shape.n_layers))
    tokenizer = load_tokenizer(ckpts[0].path)
    check_bos(tokenizer, s.bos)
    texts = prompt_texts(s)
    ids = [encode(tokenizer, text, s.bos) for text in texts]
    check_context(ids, texts, shape.n_ctx, source="--prompt/--prompts")
    bos = tokenizer.bos_token_id
    check_range("--seq-len", s.seq_len, 1, (shape.n_ctx - int(bos is not None)) // 2)
    backend = auto_backend(ckpts[0].path, "; patterns only: the induction scores need interp's own forward")
    probe = (make_probe(shape.d_vocab, shape.n_ctx, bos, tokenizer.all_special_ids, s.seq_len, s.batch, seed=s.seed)
             if backend == "native" else None)
    inputs = Inputs(ids, sorted(set(layers)), backend, probe)
    check_size([len(ckpts), len(ids), len(inputs.layers), shape.n_heads, max(map(len, ids))])
    if backend != "native":
        check_pattern_hooks(ckpts[0].path, backend, inputs.layers, device)
    steps = [c.step if c.step is not None else i for i, c in enumerate(ckpts)]
    records, identical = vouch(ckpts)
    units = [Unit(c.label, inputs.key(c.path), attend_checkpoint, (c.path, inputs, device)) for c in ckpts]
    with executor.opened():
        per_ckpt = run_units(units, out / PARTIAL_DIR, executor, f"attention {ckpts[0].run}", "checkpoint",
                             claim=lambda: write_partial_settings(out, UNIT.name, settings))
    tensors = {name: torch.stack([found[name] for found in per_ckpt]) for name in per_ckpt[0]}
    tensors |= {"steps": torch.tensor(steps), "prompt_lengths": torch.tensor([len(seq) for seq in ids])}
    summary = {
        "method": "attention patterns (blocks.{l}.attn.hook_pattern) with induction and previous-token scores "
                  "(Olsson et al. 2022; TransformerLens head_detector; no clamps)",
        "run": run_location(s.run), "steps": steps, "checkpoints": records, "identical_weights": identical,
        "revisions": s.revisions, "backend": backend, "layers": inputs.layers, "layers_option": s.layers,
        "prompts": texts, "tokens": [[tokenizer.decode([t]) for t in seq] for seq in ids],
        "pattern_padding": "each prompt runs alone (no padding); rows and columns past its length are zero",
        "scores": list(SCORES) if probe is not None else [],
        "probe": None if probe is None else {"repeated_tokens": list(probe.repeats.shape), "seq_len": s.seq_len,
                                             "batch": s.batch, "seed": s.seed, "bos_id": bos},
    }
    if probe is not None:
        summary["top_heads"] = {name: top_head(tensors[name][-1], inputs.layers) for name in SCORES}
    identity = [input_identity("checkpoint", c.path, step=c.step, revision=c.revision) for c in ckpts]
    results = write(UNIT, out, tensors, summary, title=f"attention: {ckpts[0].run}",
                    axes=tensor_axes(tensors, steps, inputs.layers),
                    tokenization={"bos": s.bos, "padding": None},
                    inputs=identity + ([input_identity("prompts", s.prompts)] if s.prompts is not None else []),
                    settings=settings)
    for line in report(results.summary):
        print(line)
    return results


def top_head(scores: Tensor, layers: list[int]) -> dict[str, Any]:
    """The head with the highest score in a [layer, head] tensor whose rows are `layers`."""
    row, head = divmod(int(scores.argmax()), scores.shape[1])
    return {"layer": layers[row], "head": head, "score": float(scores.max())}


def tensor_axes(tensors: dict[str, Any], steps: list[int], layers: list[int]) -> dict[str, Any]:
    """Patterns [checkpoint, prompt, layer, head, query, key], scores [checkpoint, layer, head], `steps`
    [checkpoint], `prompt_lengths` [prompt]."""
    from interp.results import axes

    named = {"patterns": PATTERN_AXES, "steps": ("checkpoint",), "prompt_lengths": ("prompt",)}
    return {name: axes(*named.get(name, ("checkpoint", "layer", "head")), checkpoint=steps, layer=layers)
            for name in tensors}


def report(summary: dict[str, Any]) -> list[str]:
    """What `interp attention` prints: what was read, and the top induction and previous-token heads at the last
    checkpoint."""
    lines = [f"{len(summary['prompts'])} prompt(s), layers {summary['layers']}, {len(summary['steps'])} checkpoint(s) "
             f"on the {summary['backend']} backend"]
    for name, best in summary.get("top_heads", {}).items():
        lines.append(f"highest {name} score at step {summary['steps'][-1]}: L{best['layer']}H{best['head']} "
                     f"{best['score']:.3f}")
    return lines


def figures(results: Results) -> list[Any]:
    """The top induction head's pattern on the first prompt at the last checkpoint (or layer 0 head 0 without
    scores), and each score's per-head curves over checkpoints."""
    import plotly.graph_objects as go

    from interp.analyses.widgets import lines, plotly_text, unique_labels

    t, summary = results.tensors, results.summary
    layers, steps = summary["layers"], summary["steps"]
    best = summary.get("top_heads", {}).get("induction", {"layer": layers[0], "head": 0})
    n = int(t["prompt_lengths"][0])
    labels = [plotly_text(x) for x in unique_labels(summary["tokens"][0])]
    pattern = t["patterns"][-1, 0, layers.index(best["layer"]), best["head"], :n, :n]
    shown = [go.Figure(go.Heatmap(z=pattern.tolist(), x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1),
                       layout={"title": f"L{best['layer']}H{best['head']} at step {steps[-1]}, prompt 1",
                               "xaxis_title": "key", "yaxis_title": "query", "yaxis_autorange": "reversed"})]
    for name in summary["scores"]:
        curves = {f"L{layer}H{h}": t[name][:, i, h] for i, layer in enumerate(layers) for h in range(t[name].shape[2])}
        shown.append(lines(curves, steps, f"{name} score per head", "step", "score"))
    return shown


UNIT = Analysis(name="attention", title="Attention patterns", command=("attention",), spec=Spec, run=run,
                figures=figures, page="interp.analyses.attention.page",
                example="attention RUN --prompt 'the cat sat on the mat. the cat sat on' --out results/attention")
