"""`interp gradients` end to end: check everything, encode the data, run the sweep, write the results directory.

One condition writes `results.safetensors` (`nuclear.q` ... each [layer], `samples.*` [sample, layer], `loss`),
`summary.json` (MAD tables) and `report.html`. A comparison of two conditions writes `OUT` with `a.*`/`b.*` tensors,
RD between them and both MAD tables, and each condition's own results directory in `OUT/a` and `OUT/b`.

Before any compute: `--out` (`check_out`), the options, every checkpoint (`verify_checkpoint`; two models must be
compatible), the data (each sample within the model's context and with a response token). Sweeps save progress in
`OUT/partial/` (removed once the results are written), keyed by the weights' content, so a rerun resumes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from interp.dynamics.gradients.data import (
    TEMPLATES, Encoded, check_samples, encode_pairs, is_zoo_checkpoint, read_pairs, resolve_template, sample_sources,
)
from interp.dynamics.gradients.report import figures, mad_markdown, relative_differences
from interp.dynamics.gradients.run import LayerGradients, layer_gradients, summary_of
from interp.errors import InterpError
from interp.options import check_range
from interp.outdir import check_out, write_partial_settings
from interp.results import Axes, axes, input_identity, write_results

PARTIAL_DIR = "partial"
SIDES = ("a", "b")


@dataclass(frozen=True)
class Condition:
    """A model and a dataset to take gradients on, with the label shown in reports."""

    model: Path
    data: Path
    label: str


@dataclass(frozen=True)
class Options:
    template: str = "auto"
    include_mlp: bool = False
    batch_size: int = 8
    max_length: int = 1024
    prepend_bos: bool | None = None  # None: for zoo checkpoints only (trained with BOS first)
    limit: int | None = None
    device: str = "cpu"
    dtype: str = "float32"

    def check(self) -> None:
        """Refuse out-of-range options before any compute."""
        from interp.loading import resolve_device, resolve_dtype

        check_range("--batch-size", self.batch_size, 1)
        check_range("--max-length", self.max_length, 2)
        check_range("--limit", self.limit, 1)
        if self.template not in TEMPLATES:
            raise InterpError(f"unknown template {self.template!r}", fix=f"use one of {', '.join(TEMPLATES)}")
        resolve_dtype(self.dtype)
        resolve_device(self.device)


@dataclass(frozen=True)
class Prepared:
    """A checked condition: its checkpoint directory, encoded samples and the prompt format used."""

    condition: Condition
    root: Path
    samples: list[Encoded]
    template: str
    prepend_bos: bool


def check_layout(root: Path, include_mlp: bool) -> None:
    """A family without a native spec: its projections found generically (`gradient_generic`), before loading."""
    from interp.dynamics.gradients.generic import check_generic
    from interp.loading import read_config
    from interp.models.arch import spec_for

    if spec_for(read_config(root).get("model_type")) is None:
        check_generic(root, include_mlp)


def prepare(condition: Condition, options: Options) -> Prepared:
    """Every check of one condition that needs no weights: the checkpoint, its tokenizer, the data, the lengths."""
    from interp.checkpoints import read_summary
    from interp.loading import load_tokenizer, verify_checkpoint

    root = verify_checkpoint(condition.model)
    check_layout(root, options.include_mlp)
    tokenizer = load_tokenizer(root)
    pairs = read_pairs(condition.data)[: options.limit]
    template = resolve_template(options.template, root, tokenizer)  # type: ignore[arg-type]
    bos = is_zoo_checkpoint(root) if options.prepend_bos is None else options.prepend_bos
    samples = encode_pairs(tokenizer, pairs, template, options.max_length, bos, sample_sources(condition.data))
    check_samples(samples, read_summary(root).n_ctx, options.max_length)
    return Prepared(condition, root, samples, template, bos)


def settings_of(conditions: Sequence[Condition], options: Options) -> dict[str, Any]:
    """What `--out` is keyed by (`check_out`): the conditions' paths and labels, and the options."""
    return {"conditions": [{"model": str(c.model), "data": str(c.data), "label": c.label} for c in conditions],
            **asdict(options)}


def run_gradients(conditions: Sequence[Condition], out: Path, options: Options, force: bool = False
                  ) -> dict[str, Any]:
    """Gradient statistics of one condition, or of two compared; writes `out` and returns its summary."""
    from interp.checkpoints import check_compatible
    from interp.models.convert import load_hf_causal_lm

    settings = settings_of(conditions, options)
    out = check_out(out, "gradients", settings, force)
    options.check()
    if len(conditions) == 2 and conditions[0].label == conditions[1].label:
        raise InterpError(f"both conditions are labelled {conditions[0].label!r}",
                          fix="pass distinct --label-a and --label-b")
    prepared = [prepare(c, options) for c in conditions]
    if len(prepared) == 2 and prepared[0].root.resolve() != prepared[1].root.resolve():
        check_compatible(prepared[0].root, prepared[1].root)
        load_hf_causal_lm(prepared[1].root)  # non-finite weights in b are refused now, not after a's sweep
    write_partial_settings(out, "gradients", settings)
    results = [_sweep(p, out / PARTIAL_DIR / f"{side}.safetensors", options) for side, p in zip(SIDES, prepared)]
    parts = [_condition_results(p, r, options) for p, r in zip(prepared, results)]
    if len(parts) == 1:
        tensors, summary = parts[0]
        write_results(out, tensors, summary, figures({conditions[0].label: results[0]}),
                      title=f"Layer gradients: {conditions[0].label}", analysis="gradients",
                      **record(prepared, tensors), settings=settings)
    else:
        summary = _write_comparison(out, prepared, results, parts, settings)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    return summary


def compare_conditions(a: Condition, b: Condition, out_dir: Path, options: Options, force: bool = False
                       ) -> dict[str, Any]:
    """Run both conditions and write the comparison (and `OUT/a`, `OUT/b`); returns its summary."""
    return run_gradients([a, b], out_dir, options, force)


def _sweep(prepared: Prepared, partial: Path, options: Options) -> LayerGradients:
    """Load the checkpoint (refusing non-finite weights) and run the resumable sweep."""
    from interp.checkpoints import weights_sha256
    from interp.loading import read_config, resolve_device, resolve_dtype
    from interp.models.convert import load_hf_causal_lm

    model = load_hf_causal_lm(prepared.root, dtype=resolve_dtype(options.dtype)).to(resolve_device(options.device))
    identity = json.dumps({"weights_sha256": weights_sha256(prepared.root), "config": read_config(prepared.root),
                           "dtype": options.dtype}, sort_keys=True)
    return layer_gradients(model, prepared.samples, options.include_mlp, options.batch_size, partial=partial,
                           identity=identity, name=str(prepared.condition.model))


def _condition_results(prepared: Prepared, result: LayerGradients, options: Options
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One condition's tensors and summary."""
    from interp.checkpoints import weights_sha256

    c = prepared.condition
    summary = {"label": c.label, "model": str(c.model), "data": str(c.data),
               "weights_sha256": weights_sha256(prepared.root), "template": prepared.template,
               "prepend_bos": prepared.prepend_bos, "max_length": options.max_length, "dtype": options.dtype,
               **summary_of(result), "mad_markdown": mad_markdown({c.label: result})}
    return result.tensors(), summary


def _write_comparison(out: Path, prepared: list[Prepared], results: list[LayerGradients],
                      parts: list[tuple[dict[str, Any], dict[str, Any]]], settings: dict[str, Any]) -> dict[str, Any]:
    """`OUT` with both conditions side by side, then each condition's own directory `OUT/a`, `OUT/b`."""
    labelled = {p.condition.label: r for p, r in zip(prepared, results)}
    tensors = {f"{side}.{key}": value for side, (side_tensors, _) in zip(SIDES, parts)
               for key, value in side_tensors.items()}
    summary = {"conditions": {side: side_summary for side, (_, side_summary) in zip(SIDES, parts)},
               "relative_difference": relative_differences(*results), "mad_markdown": mad_markdown(labelled)}
    labels = " vs ".join(labelled)
    write_results(out, tensors, summary, figures(labelled), title=f"Layer gradients: {labels}", analysis="gradients",
                  **record(prepared, tensors), settings=settings)
    for side, p, r, (side_tensors, side_summary) in zip(SIDES, prepared, results, parts):
        write_results(out / side, side_tensors, side_summary, figures({p.condition.label: r}),
                      title=f"Layer gradients: {p.condition.label}", analysis="gradients",
                      **record([p], side_tensors), settings=settings)
    return summary


def tensor_axes(name: str) -> Axes:
    """Axes of a gradient tensor (`a.`/`b.` prefixes aside): curves [layer], `samples.*` [sample, layer], `loss` and
    `n_response` [sample] (samples in the data file's order)."""
    if name.endswith(("loss", "n_response")):
        return axes("sample")
    return axes("sample", "layer") if "samples." in name else axes("layer")


def record(prepared: Sequence[Prepared], tensors: dict[str, Any]) -> dict[str, Any]:
    """`write_results`' axes, tokenisation (BOS per condition when they differ; right padding) and inputs (each
    condition's checkpoint and data file, roles prefixed `a.`/`b.` in a comparison)."""
    bos = {side: p.prepend_bos for side, p in zip(SIDES, prepared)}
    prefixes = [f"{side}." if len(prepared) == 2 else "" for side in SIDES]
    inputs = [input_identity(f"{prefix}{role}", path) for prefix, p in zip(prefixes, prepared)
              for role, path in (("model", p.root), ("data", p.condition.data))]
    return {"axes": {name: tensor_axes(name) for name in tensors},
            "tokenization": {"bos": bos["a"] if len(set(bos.values())) == 1 else bos, "padding": "right"},
            "inputs": inputs}
