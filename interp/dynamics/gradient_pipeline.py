"""`interp gradients` end to end: load a checkpoint, encode the data, run the sweep, write results directories.

One condition writes `results.safetensors` (`nuclear.q` ... each [layer], `samples.*` [sample, layer], `loss`),
`summary.json` (MAD tables) and `report.html`. A comparison runs each condition into `OUT/a` and `OUT/b` (each
resumable on its own) and writes `OUT` with `a.*`/`b.*` curves, RD between them and both MAD tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.dynamics.gradient_data import encode_pairs, is_zoo_checkpoint, read_pairs, resolve_template
from interp.dynamics.gradient_report import figures, mad_markdown, relative_differences
from interp.dynamics.gradient_run import PARTIAL_FILE, LayerGradients, layer_gradients, summary_of
from interp.errors import InterpError
from interp.results import write_results


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


def run_condition(condition: Condition, out_dir: Path, options: Options) -> LayerGradients:
    """Gradient statistics of one condition, written as a results directory (resuming a partial run there)."""
    from transformers import AutoTokenizer

    from interp.models.convert import load_hf_causal_lm

    if not (condition.model / "config.json").is_file():
        raise InterpError(f"{condition.model} is not a checkpoint directory (no config.json)",
                          fix="pass a Hugging Face checkpoint directory, e.g. data/zoo/base/step_000300")
    dtype = getattr(torch, options.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise InterpError(f"unknown dtype {options.dtype!r}", fix="use float32, bfloat16 or float16")
    pairs = read_pairs(condition.data)[: options.limit]
    tokenizer = AutoTokenizer.from_pretrained(str(condition.model), local_files_only=True)
    template = resolve_template(options.template, condition.model, tokenizer)  # type: ignore[arg-type]
    bos = is_zoo_checkpoint(condition.model) if options.prepend_bos is None else options.prepend_bos
    samples = encode_pairs(tokenizer, pairs, template, options.max_length, bos)
    model = load_hf_causal_lm(condition.model, dtype=dtype).to(options.device)
    result = layer_gradients(model, samples, options.include_mlp, options.batch_size, partial_dir=out_dir,
                             desc=f"gradients {condition.label}")
    summary = {"model": str(condition.model), "data": str(condition.data), "label": condition.label,
               "template": template, "prepend_bos": bos, "max_length": options.max_length, "dtype": options.dtype,
               **summary_of(result)}
    write_results(out_dir, result.tensors(), summary, figures({condition.label: result}),
                  title=f"Layer gradients: {condition.label}", analysis="gradients")
    (out_dir / PARTIAL_FILE).unlink(missing_ok=True)
    return result


def compare_conditions(a: Condition, b: Condition, out_dir: Path, options: Options) -> dict[str, Any]:
    """Run both conditions (into OUT/a and OUT/b) and write the comparison; returns its summary."""
    if a.label == b.label:
        raise InterpError(f"both conditions are labelled {a.label!r}", fix="pass distinct --label-a and --label-b")
    results = {a.label: run_condition(a, out_dir / "a", options), b.label: run_condition(b, out_dir / "b", options)}
    ra, rb = results[a.label], results[b.label]
    tensors = {f"{side}.{key}": value for side, result in (("a", ra), ("b", rb))
               for key, value in result.curves().items()}
    summary = {
        "conditions": {"a": {"label": a.label, "model": str(a.model), "data": str(a.data), **summary_of(ra)},
                       "b": {"label": b.label, "model": str(b.model), "data": str(b.data), **summary_of(rb)}},
        "relative_difference": relative_differences(ra, rb),
        "mad_markdown": mad_markdown(results),
    }
    write_results(out_dir, tensors, summary, figures(results), title=f"Layer gradients: {a.label} vs {b.label}",
                  analysis="gradients")
    return summary
