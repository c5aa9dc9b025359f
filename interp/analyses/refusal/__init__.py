"""Refusal directions of a base and a post-trained model (Du et al. 2025, section 1.3; Arditi et al. 2024): the
difference in means of harmful and harmless requests per layer, its base/post cosine, and refusal scores when each
model's direction is ablated from harmful requests or added to harmless ones, in its own model and transferred.
Without --data, the default data source's requests, chat template and refusal judge (`interp.data.sources`: the
zoo's); with --data, the reference refusal prefixes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, Opt, settings_of, write
from interp.data.tokens import BOS_DEFAULT, BOS_HELP

if TYPE_CHECKING:
    from interp.data.judges import Judge
    from interp.results import Results


@dataclass(frozen=True)
class Spec:
    """Refusal directions per layer, base/post cosine, and refusal scores under ablation and addition.

    Writes direction_base and direction_post [layer, d_model], cosine [layer], baseline [model, kind],
    ablation and addition [owner, model]. A model that refuses none of the harmful requests gets a warning.
    """

    base: Annotated[Path, Arg("Base checkpoint directory.")]
    post: Annotated[Path, Arg("Post-trained checkpoint directory (same architecture and tokenizer).")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    data: Annotated[Optional[Path], Opt("A directory holding these four files: harmful_train.json and "
                                        "harmless_train.json (directions), harmful_val.json and harmless_val.json "
                                        "(refusal scores), each a JSON list of {\"instruction\": \"...\", "
                                        "\"category\": ...} objects (Arditi et al.'s refusal_direction layout); "
                                        "default: the zoo's requests.", ("--data",))] = None
    layer: Annotated[Optional[int], Opt("Layer of the direction and of addition (default: chosen with --pos on the "
                                        "post model by Arditi et al.'s selection on training requests).")] = None
    pos: Annotated[Optional[int], Opt("Token position of the direction, from the end of the prompt (-1: last; "
                                      "default: chosen with the layer).")] = None
    coeff: Annotated[Optional[float], Opt(
        "Addition coefficient on the unit direction at each of resid_pre/mid/post (default: |mean difference|/3 of the "
        "steered model).")] = None
    n_train: Annotated[int, Opt("Harmful and harmless instructions for the direction (each).")] = 128
    n_test: Annotated[int, Opt("Harmful and harmless instructions for the refusal scores (each).")] = 100
    max_new_tokens: Annotated[int, Opt("Greedy tokens generated per instruction.")] = 16
    template: Annotated[Optional[str], Opt("Prompt template with {instruction} (default: the zoo's, or the "
                                           "tokenizer's chat template, or 'User: ...\\nAssistant:').")] = None
    batch_size: Annotated[int, Opt("Prompts per batch.")] = 32
    bos: Annotated[bool, Opt(BOS_HELP + " (A tokenizer's own chat template writes its own.)",
                             ("--bos/--no-bos",))] = BOS_DEFAULT
    device: Annotated[str, Opt("torch device, e.g. cpu or cuda.")] = "cpu"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


Requests = tuple[list[str], list[str]]  # (harmful, harmless)


def refusal_data(data: Path | None, n_train: int, n_test: int) -> tuple[Requests, Requests, str, str | None, Judge]:
    """((harmful, harmless) train, (harmful, harmless) test, description, default template, judge): the default data
    source's requests, chat template and judge, or a refusal directory's requests with the tokenizer's own template
    and the reference judge."""
    from interp.data.datasets import load_refusal_dir
    from interp.data.judges import REFERENCE
    from interp.data.sources import source

    if data is None:
        src = source()
        train, test = src.refusal_requests("train"), src.refusal_requests("test")
        described, template, judge = f"{src.name} requests (train / test)", src.chat_template, src.judge
    else:
        train, test = load_refusal_dir(data, "train"), load_refusal_dir(data, "val")
        described, template, judge = f"{data} (train / val)", None, REFERENCE
    return ((train[0][:n_train], train[1][:n_train]), (test[0][:n_test], test[1][:n_test]), described, template,
            judge)


def check_template(template: str | None) -> None:
    """Refuse a --template that is not a format string placing `{instruction}`: every request would be one prompt."""
    from interp.errors import InterpError

    if template is None:
        return
    fix = "write e.g. --template 'User: {instruction}\\nAssistant:' (other braces doubled: {{ }})"
    try:
        filled = {template.format(instruction=x) for x in ("a", "b")}
    except (KeyError, IndexError, ValueError) as err:
        raise InterpError(f"--template {template!r} is not a format string with only {{instruction}} "
                          f"({type(err).__name__}: {err})", fix=fix) from err
    if len(filled) < 2:
        raise InterpError(f"--template {template!r} has no {{instruction}}: every request would be the same prompt",
                          fix=fix)


def refusal_prompts(paths: dict[str, Path], template: str | None, instructions: list[str], pos: int | None,
                    n_ctx: int, max_new_tokens: int, bos: bool) -> dict[str, Any]:
    """Each model's prompt function (from its tokenizer alone, before loading), after checking that `pos` (if given)
    lies within every prompt and that every prompt with its generated tokens fits the context."""
    from interp.base_vs_post.refusal import template_prompt
    from interp.loading import load_tokenizer
    from interp.options import check_context, check_range

    prompts = {m: template_prompt(load_tokenizer(path), template, bos) for m, path in paths.items()}
    for prompt in prompts.values():
        ids = [prompt(x) for x in instructions]
        check_context(ids, instructions, n_ctx, max_new_tokens)
        check_range("--pos", pos, -min(map(len, ids)), -1)  # from the end, within the shortest prompt
    return prompts


def refusal_axes(res: Any) -> dict[str, Any]:
    """Axes of `RefusalResult.tensors()`: `owner` (whose direction) and `model` are base/post; the selection scores
    are ticked by the candidate positions and layers searched."""
    from interp.base_vs_post.refusal import ROLES, SCORES
    from interp.results import axes

    ticks = {"owner": ROLES, "model": ROLES, "kind": ("harmful", "harmless")}
    out = {"direction_base": axes("layer", "d_model"), "direction_post": axes("layer", "d_model"),
           "cosine": axes("layer"), "baseline": axes("model", "kind", **ticks),
           "ablation": axes("owner", "model", **ticks), "addition": axes("owner", "model", **ticks)}
    if res.selection is not None:
        out["selection_scores"] = axes("position", "layer", "score", position=res.selection.positions,
                                       layer=res.selection.layers, score=SCORES)
    return out


def run(spec: Spec) -> Results:
    """Refusal directions, cosines and refusal scores under ablation and addition (own and transferred); every input
    checked before the models are loaded. Warns of a model that refuses none of the harmful requests, and of a
    selection that fell back."""
    from interp.analyses.pairs import check_pair, load_pair, pair_inputs
    from interp.errors import warn
    from interp.base_vs_post.refusal import refusal_transfer
    from interp.options import check_range
    from interp.outdir import check_out

    s, settings = spec, settings_of(spec)
    out = check_out(s.out, UNIT.name, settings, s.force)
    for option, value in (("--n-train", s.n_train), ("--n-test", s.n_test), ("--max-new-tokens", s.max_new_tokens),
                          ("--batch-size", s.batch_size)):
        check_range(option, value, 1)
    check_range("--coeff", s.coeff)
    check_template(s.template)
    facts = check_pair(s.base, s.post, s.device)
    check_range("--layer", s.layer, 0, facts.n_layers - 1)
    train, test, described, default_template, judge = refusal_data(s.data, s.n_train, s.n_test)
    template = s.template or default_template
    prompts = refusal_prompts({"base": s.base, "post": s.post}, template, [*train[0], *train[1], *test[0], *test[1]],
                              s.pos, facts.n_ctx, s.max_new_tokens, s.bos)
    models = load_pair(s.base, s.post, s.device)
    res = refusal_transfer(models, prompts, train, test, s.layer, s.pos, s.coeff, s.max_new_tokens, judge,
                           s.batch_size)
    summary = {"method": "refusal directions (Du et al. 2025 section 1.3; Arditi et al. 2024)", "base": str(s.base),
               "post": str(s.post), "data": described, "template": template or "model's own", "judge": judge.name,
               **res.summary()}
    results = write(UNIT, out, res.tensors(), summary, title=f"Refusal directions: {s.post.name} vs {s.base.name}",
                    axes=refusal_axes(res), tokenization={"bos": s.bos, "padding": "left",
                                                          "tokenizer_chat_template": template is None},
                    inputs=pair_inputs(s.base, s.post, [("data", s.data)]), settings=settings)
    for m, refuses_none in summary.get("baseline_refuses_none", {}).items():
        if refuses_none:
            warn(f"the {m} model ({s.base if m == 'base' else s.post}) refused none of the {len(test[0])} harmful "
                 "test requests without intervention, so its ablation scores cannot fall and say nothing about its "
                 "refusal direction")
    if (summary.get("selection") or {}).get("fallback"):
        warn("no candidate refusal direction brought the refusal tokens to even odds when added; the layer was chosen "
             "among those that raise them above the harmless baseline (summary.json: selection.fallback)")
    return results


def figures(results: Results) -> list[Any]:
    """The direction cosine per layer, and each model's refusal score without intervention, with either model's
    direction ablated (harmful requests) and added (harmless requests)."""
    from interp.base_vs_post.figures import grouped_bars, layer_curves

    s = results.summary
    models = list(s["baseline"])
    bars = {f"no intervention ({kind})": {m: s["baseline"][m][kind] for m in models}
            for kind in ("harmful", "harmless")}
    for direction in ("base", "post"):
        key = {m: f"{direction}_dir_in_{m}" for m in models}
        bars[f"ablate {direction} dir (harmful)"] = {m: s["ablation_harmful"][key[m]] for m in models}
        bars[f"add {direction} dir (harmless)"] = {m: s["addition_harmless"][key[m]] for m in models}
    by_model = {m: {k: v[m] for k, v in bars.items()} for m in models}
    return [layer_curves({"cos(r_base, r_post)": results.tensors["cosine"]},
                         "Refusal-direction cosine per layer (resid_pre)", "cosine"),
            grouped_bars(by_model, f"Refusal score (ablation: every layer; addition: layer {s['layer']})",
                         "refusal score")]


UNIT = Analysis(name="refusal", title="Refusal directions", command=("directions", "refusal"), spec=Spec, run=run,
                figures=figures, page="interp.analyses.refusal.page",
                example="directions refusal BASE POST --out results/refusal")
