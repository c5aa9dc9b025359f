"""Layer-wise gradients of instruction/response pairs (Li, Li & Zhou 2025, "What Happened in LLMs Layers when Trained
for Fast vs. Slow Thinking: A Gradient Perspective"): per layer and projection, the nuclear norm, sigma_1 ratio and
Frobenius norm of each sample's gradient of its response-only loss, their MAD across layers, and the relative
difference of two conditions (two datasets, or two checkpoints).

One condition writes `results.safetensors` (`nuclear.q` ... each [layer], `samples.*` [sample, layer], `loss`),
`summary.json` (MAD tables) and `report.html`. A comparison of two conditions writes `OUT` with `a.*`/`b.*` tensors,
RD between them and both MAD tables, and each condition's own results directory in `OUT/a` and `OUT/b`.

Before any compute: `--out` (`check_out`), the options, every checkpoint (`verify_checkpoint`; two models must be
compatible), the data (each sample within the model's context and with a response token). Sweeps save progress in
`OUT/partial/` (removed once the results are written), keyed by the weights' content, so a rerun resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

from interp.analyses.unit import Analysis, Arg, Bos, ExecutorSpec, Opt, executor_of, settings_of, write
from interp.data.tokens import BOS_DEFAULT
from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.dynamics.gradients.data import Encoded
    from interp.dynamics.gradients.run import LayerGradients
    from interp.results import Axes, Results

PARTIAL_DIR = "partial"
SIDES = ("a", "b")


@dataclass(frozen=True)
class Spec(ExecutorSpec):
    """Gradient nuclear norm, sigma_1 ratio and Frobenius norm per layer and projection; MAD tables; comparisons."""

    model: Annotated[Path, Arg("Checkpoint directory (Hugging Face layout).")]
    data: Annotated[Path, Opt('JSONL of {"instruction": str, "response": str}.', ("--data",))]
    out: Annotated[Path, Opt("Results directory (an interrupted run there is resumed).", ("--out",))]
    data_b: Annotated[Optional[Path], Opt("Compare with this dataset (condition b).", ("--data-b",))] = None
    model_b: Annotated[Optional[Path], Opt("Compare with this checkpoint (condition b).", ("--model-b",))] = None
    label_a: Annotated[Optional[str], Opt("Name of condition a in reports.", ("--label-a",))] = None
    label_b: Annotated[Optional[str], Opt("Name of condition b in reports.", ("--label-b",))] = None
    template: Annotated[str, Opt("auto | plain (instruction + newline) | chat (the tokenizer's, or that of the data "
                                 "source that chat-tuned the checkpoint).", ("--template",))] = "auto"
    bos: Bos = BOS_DEFAULT
    mlp: Annotated[bool, Opt("Also the MLP matrices (gate/up/down).", ("--mlp",))] = False
    batch_size: Annotated[int, Opt("Samples per forward/backward pass (at least 1).", ("--batch-size",))] = 8
    max_length: Annotated[int, Opt("Truncate samples to this many tokens (at least 2).", ("--max-length",))] = 1024
    limit: Annotated[Optional[int], Opt("Use only the first N samples (at least 1).", ("--limit",))] = None
    device: Annotated[str, Opt("cpu, cuda, cuda:N or auto.", ("--device",))] = "cpu"
    dtype: Annotated[str, Opt("float32, bfloat16, float16 or float64.", ("--dtype",))] = "float32"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


@dataclass(frozen=True)
class Condition:
    """A model and a dataset to take gradients on, with the label shown in reports."""

    model: Path
    data: Path
    label: str


@dataclass(frozen=True)
class Prepared:
    """A checked condition: its checkpoint directory, encoded samples, the prompt format used and the BOS token put
    first (None when --no-bos or the tokenizer has none)."""

    condition: Condition
    root: Path
    samples: list[Encoded]
    template: str
    bos_token: str | None


def conditions(spec: Spec) -> list[Condition]:
    """Condition a, and b when --data-b or --model-b is given; labels default to the data file's stem (two datasets)
    or the checkpoint's `run/step` (two checkpoints)."""
    if spec.data_b is None and spec.model_b is None:
        return [Condition(spec.model, spec.data, spec.label_a or spec.data.stem)]
    b_model, b_data = spec.model_b or spec.model, spec.data_b or spec.data

    def name(m: Path, d: Path) -> str:
        return f"{m.parent.name}/{m.name}" if b_data == spec.data else d.stem

    return [Condition(spec.model, spec.data, spec.label_a or name(spec.model, spec.data)),
            Condition(b_model, b_data, spec.label_b or name(b_model, b_data))]


def check_options(spec: Spec) -> None:
    """Refuse out-of-range options before any compute."""
    from interp.dynamics.gradients.data import TEMPLATES
    from interp.loading import resolve_device, resolve_dtype
    from interp.options import check_range

    check_range("--batch-size", spec.batch_size, 1)
    check_range("--max-length", spec.max_length, 2)
    check_range("--limit", spec.limit, 1)
    if spec.template not in TEMPLATES:
        raise InterpError(f"unknown template {spec.template!r}", fix=f"use one of {', '.join(TEMPLATES)}")
    resolve_dtype(spec.dtype)
    resolve_device(spec.device)


def check_layout(root: Path, include_mlp: bool) -> None:
    """A family without a native spec: its projections found generically (`gradients.generic`), before loading."""
    from interp.dynamics.gradients.generic import check_generic
    from interp.loading import read_config
    from interp.models.arch import spec_for

    if spec_for(read_config(root).get("model_type")) is None:
        check_generic(root, include_mlp)


def prepare(condition: Condition, spec: Spec) -> Prepared:
    """Every check of one condition that needs no weights: the checkpoint, its tokenizer, the data, the lengths."""
    from interp.checkpoints import read_summary
    from interp.dynamics.gradients.data import (
        check_samples, encode_pairs, read_pairs, resolve_template, sample_sources, source_chat_template,
    )
    from interp.loading import load_tokenizer, verify_checkpoint

    root = verify_checkpoint(condition.model)
    check_layout(root, spec.mlp)
    tokenizer = load_tokenizer(root)
    pairs = read_pairs(condition.data)[: spec.limit]
    template = resolve_template(spec.template, root, tokenizer)  # type: ignore[arg-type]
    samples = encode_pairs(tokenizer, pairs, template, spec.max_length, spec.bos, sample_sources(condition.data),
                           source_chat_template(root))
    check_samples(samples, read_summary(root).n_ctx, spec.max_length)
    return Prepared(condition, root, samples, template, tokenizer.bos_token if spec.bos else None)


def run(spec: Spec) -> Results:
    """Gradient statistics of one condition, or of two compared, written as a results directory (and `OUT/a`,
    `OUT/b` for a comparison); prints the MAD table."""
    import shutil

    from interp.checkpoints import check_compatible
    from interp.models.convert import load_hf_causal_lm
    from interp.outdir import check_out, write_partial_settings

    settings = settings_of(spec)
    out = check_out(spec.out, UNIT.name, settings, spec.force)
    check_options(spec)
    executor = executor_of(spec)
    conds = conditions(spec)
    if len(conds) == 2 and conds[0].label == conds[1].label:
        raise InterpError(f"both conditions are labelled {conds[0].label!r}",
                          fix="pass distinct --label-a and --label-b")
    prepared = [prepare(c, spec) for c in conds]
    if len(prepared) == 2 and prepared[0].root.resolve() != prepared[1].root.resolve():
        check_compatible(prepared[0].root, prepared[1].root)
        load_hf_causal_lm(prepared[1].root)  # non-finite weights in b are refused now, not after a's sweep
    write_partial_settings(out, UNIT.name, settings)
    device = executor.device(spec.device) or spec.device
    calls = [(p, out / PARTIAL_DIR / f"{side}.safetensors", replace(spec, device=device))
             for side, p in zip(SIDES, prepared)]
    swept = executor.results(sweep, calls, desc="conditions", unit="condition")
    parts = [condition_results(p, r, spec) for p, r in zip(prepared, swept)]
    if len(parts) == 1:
        tensors, summary = parts[0]
        results = write(UNIT, out, tensors, summary, title=f"Layer gradients: {conds[0].label}",
                        **record(prepared, tensors, spec.bos), settings=settings)
    else:
        results = write_comparison(out, prepared, swept, parts, spec.bos, settings)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    print(results.summary["mad_markdown"])
    return results


def sweep(prepared: Prepared, partial: Path, spec: Spec) -> LayerGradients:
    """Load the checkpoint (refusing non-finite weights) and run the resumable sweep."""
    from interp.checkpoints import weights_sha256
    from interp.dynamics.gradients.run import layer_gradients
    from interp.loading import read_config, resolve_device, resolve_dtype
    from interp.models.convert import load_hf_causal_lm

    model = load_hf_causal_lm(prepared.root, dtype=resolve_dtype(spec.dtype)).to(resolve_device(spec.device))
    identity = json.dumps({"weights_sha256": weights_sha256(prepared.root), "config": read_config(prepared.root),
                           "dtype": spec.dtype}, sort_keys=True)
    return layer_gradients(model, prepared.samples, spec.mlp, spec.batch_size, partial=partial,
                           identity=identity, name=str(prepared.condition.model))


def condition_results(prepared: Prepared, result: LayerGradients, spec: Spec
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One condition's tensors and summary."""
    from interp.analyses.gradients.report import mad_markdown
    from interp.checkpoints import weights_sha256
    from interp.dynamics.gradients.run import summary_of

    c = prepared.condition
    summary = {"label": c.label, "model": str(c.model), "data": str(c.data),
               "weights_sha256": weights_sha256(prepared.root), "template": prepared.template,
               "bos": spec.bos, "max_length": spec.max_length, "dtype": spec.dtype,
               **summary_of(result), "mad_markdown": mad_markdown({c.label: result})}
    return result.tensors(), summary


def write_comparison(out: Path, prepared: list[Prepared], swept: list[LayerGradients],
                     parts: list[tuple[dict[str, Any], dict[str, Any]]], bos: bool, settings: dict[str, Any]
                     ) -> Results:
    """`OUT` with both conditions side by side, then each condition's own directory `OUT/a`, `OUT/b`."""
    from interp.analyses.gradients.report import mad_markdown, relative_differences

    labelled = {p.condition.label: r for p, r in zip(prepared, swept)}
    tensors = {f"{side}.{key}": value for side, (side_tensors, _) in zip(SIDES, parts)
               for key, value in side_tensors.items()}
    summary = {"conditions": {side: side_summary for side, (_, side_summary) in zip(SIDES, parts)},
               "relative_difference": relative_differences(*swept), "mad_markdown": mad_markdown(labelled)}
    results = write(UNIT, out, tensors, summary, title=f"Layer gradients: {' vs '.join(labelled)}",
                    **record(prepared, tensors, bos), settings=settings)
    for side, p, (side_tensors, side_summary) in zip(SIDES, prepared, parts):
        write(UNIT, out / side, side_tensors, side_summary, title=f"Layer gradients: {p.condition.label}",
              **record([p], side_tensors, bos), settings=settings)
    return results


def tensor_axes(name: str) -> Axes:
    """Axes of a gradient tensor (`a.`/`b.` prefixes aside): curves [layer], `samples.*` [sample, layer], `loss` and
    `n_response` [sample] (samples in the data file's order)."""
    from interp.results import axes

    if name.endswith(("loss", "n_response")):
        return axes("sample")
    return axes("sample", "layer") if "samples." in name else axes("layer")


def record(prepared: Sequence[Prepared], tensors: dict[str, Any], bos: bool) -> dict[str, Any]:
    """`write`'s axes, tokenisation (--bos, the BOS token put first, per condition where they differ; right
    padding) and inputs (each condition's checkpoint and data file, roles prefixed `a.`/`b.` in a comparison)."""
    from interp.results import input_identity

    tokens = {side: p.bos_token for side, p in zip(SIDES, prepared)}
    prefixes = [f"{side}." if len(prepared) == 2 else "" for side in SIDES]
    inputs = [input_identity(f"{prefix}{role}", path) for prefix, p in zip(prefixes, prepared)
              for role, path in (("model", p.root), ("data", p.condition.data))]
    return {"axes": {name: tensor_axes(name) for name in tensors},
            "tokenization": {"bos": bos, "bos_token": tokens["a"] if len(set(tokens.values())) == 1 else tokens,
                             "padding": "right"},
            "inputs": inputs}


def figures(results: Results) -> list[Any]:
    """Nuclear-norm, sigma_1-ratio and Frobenius curves per projection (one line per condition), then the MAD
    table, drawn from the per-sample tensors written."""
    from interp.analyses.gradients.report import condition_figures
    from interp.dynamics.gradients.run import LayerGradients

    s, t = results.summary, results.tensors
    if "conditions" not in s:
        return condition_figures({s["label"]: LayerGradients.from_tensors(t)})
    return condition_figures({s["conditions"][side]["label"]: LayerGradients.from_tensors(
        {k.removeprefix(f"{side}."): v for k, v in t.items() if k.startswith(f"{side}.")}) for side in SIDES})


UNIT = Analysis(name="gradients", title="Layer gradients", command=("gradients",), spec=Spec, run=run,
                figures=figures, page="interp.analyses.gradients.page",
                example="gradients MODEL --data DATA.jsonl --out results/gradients")
