"""What a checkpoint can be opened with and analysed by, and why not, from its config alone (no weights read).

`interp info` prints it for a checkpoint; `python -m interp.support --markdown` prints the README's table of families x
backends x analyses. Every cell is backed by a test on a tiny random checkpoint (tests/test_support_matrix.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

from interp.models.arch import spec_for, specs
from interp.models.native import NativeConfig


@dataclass(frozen=True)
class Cell:
    """One backend or analysis for one model: whether it works, and how (or why not)."""

    name: str
    ok: bool
    how: str


def backends(config: dict[str, Any]) -> list[Cell]:
    """native, transformer_lens and nnsight for a checkpoint's config.json."""
    from interp.models.backends.generic_sites import unopenable

    spec = spec_for(config.get("model_type"))
    if spec is not None:
        return [Cell("native", True, f"{spec.label} spec"), Cell("transformer_lens", True, "TransformerBridge adapter"),
                Cell("nnsight", True, "site table from the spec")]
    why = unopenable(config)
    return [Cell("native", False, "no native spec for this model_type"),
            Cell("transformer_lens", why is None, "TransformerBridge adapter" if why is None else why),
            Cell("nnsight", why is None, "site table from the bridge adapter" if why is None else why)]


def native_config(config: dict[str, Any]) -> NativeConfig | None:
    """The `NativeConfig` a native family gives this config.json, None for a model without a native spec."""
    from transformers import AutoConfig

    spec = spec_for(config.get("model_type"))
    if spec is None:
        return None
    settings = {k: v for k, v in config.items() if k != "model_type"}
    return spec.config(AutoConfig.for_model(config["model_type"], **settings), torch.float32)


def analyses(config: dict[str, Any]) -> list[Cell]:
    """Each analysis: native families run all of them on interp's own forward; other models run what needs hooks
    only, on a hook backend (patching by the exact hooked path)."""
    cfg = native_config(config)
    if cfg is not None:
        cells = [Cell("patch", True, "fast engine (variants batched on the model's own blocks)")]
        cells += [Cell(name, True, "native") for name in HOOK_ANALYSES + ("tuco", "induction")]
        cells.append(Cell("path patching", not cfg.post_norms, "native" if not cfg.post_norms else
                          "the attention output is normalised before it is added, so not linear in z"))
        return cells
    hooks = any(cell.ok for cell in backends(config)[1:])
    none = "no backend opens this model"
    cells = [Cell("patch", hooks, "exact hooked path (one forward per batch of variants)" if hooks else none)]
    cells += [Cell(name, hooks, NOTES.get(name, "hook backend") if hooks else none) for name in HOOK_ANALYSES]
    cells += [Cell(name, False, f"needs a native family ({why})") for name, why in NATIVE_ONLY.items()]
    return cells


HOOK_ANALYSES = ("cache", "directions", "knowledge", "gradients")
NOTES = {"knowledge": "hook backend, exact hooked patching; maps only (entropy neurons need the native weights)",
         "directions": "hook backend (refusal: equal-length batches, generation one full forward per token)"}
NATIVE_ONLY = {"tuco": "one model's blocks run on the other's residual stream",
               "induction": "patterns clamped inside the model's own attention",
               "path patching": "a sender head's write added inside the engine"}


def tiny_config(family: str) -> dict[str, Any]:
    """config.json of the family's tiny test model (what the table's row stands for)."""
    import transformers

    spec = specs()[family]
    class_name, settings = spec.tiny
    config = getattr(transformers, class_name)(**settings)
    return {**config.to_dict(), "architectures": [spec.config(config, torch.float32).architecture]}


def markdown_table() -> str:
    """Families x backends x analyses, the README's support table."""
    other = {"model_type": "gptj", "architectures": ["GPTJForCausalLM"]}
    rows = [(f"{spec.label} (`{'`, `'.join(spec.model_types)}`)", tiny_config(family))
            for family, spec in specs().items()]
    rows.append(("any other causal LM the TransformerLens bridge opens (GPT-J, Mixtral, OLMoE, ...)", other))
    cells = [(label, backends(config) + analyses(config)) for label, config in rows]
    columns = [c.name for c in cells[0][1]]
    lines = ["| family | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_mark(c) for c in row) + " |" for label, row in cells]
    return "\n".join(lines)


def _mark(cell: Cell) -> str:
    if not cell.ok:
        return "no"
    return "hooked" if cell.how.startswith("exact hooked") else "yes"


def report(config: dict[str, Any]) -> list[str]:
    """`interp info`'s support lines: each backend and analysis, and how or why not."""
    return [f"{c.name:<18}{'yes' if c.ok else 'no '}  {c.how}" for c in backends(config) + analyses(config)]


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        print(markdown_table())
