"""`interp directions truth|refusal BASE POST`: truthfulness and refusal directions of a base and a post-trained
model, their per-layer cosines and their transfer (Du et al. 2025). Without --data, the zoo's own held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from interp.cli import app
from interp.errors import InterpError

directions_app = typer.Typer(help="Truthfulness and refusal directions of a base and a post-trained model (Du et al. "
                                  "2025).", no_args_is_help=True)
app.add_typer(directions_app, name="directions")


def path_setting(path: Path | None) -> str | None:
    """An input path as recorded in an analysis's settings: absolute, so a rerun from elsewhere matches."""
    return None if path is None else str(Path(path).expanduser().resolve())


def pair_inputs(base: Path, post: Path, files: list[tuple[str, Path | None]]) -> list[dict[str, Any]]:
    """`write_results`' inputs of a base/post analysis: both checkpoints, then each (role, file) given."""
    from interp.results import input_identity

    return [input_identity("base", base), input_identity("post", post),
            *(input_identity(role, path) for role, path in files if path is not None)]


def truth_axes() -> dict[str, Any]:
    """Axes of `TruthResult.tensors()`: `owner` (whose direction) and `model` are base/post, `label` the statements'
    truth, `effect` the two NIEs."""
    from interp.base_vs_post.truth import ROLES
    from interp.results import axes

    ticks = {"owner": ROLES, "model": ROLES, "label": ("true", "false"), "effect": ("true_to_false", "false_to_true")}
    return {"theta_base": axes("layer", "d_model"), "theta_post": axes("layer", "d_model"), "cosine": axes("layer"),
            "mm_accuracy": axes("owner", "model", "layer", **ticks), "lr_accuracy": axes("model", "layer", **ticks),
            "pd_clean": axes("model", "label", **ticks), "pd_steered": axes("owner", "model", "label", **ticks),
            "nie": axes("owner", "model", "effect", **ticks)}


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


def check_pair(base: Path, post: Path, device: str) -> Any:
    """Before loading: the device usable, both checkpoints complete and sound, and of one architecture, shapes and
    tokenizer. Returns the base checkpoint's `ModelSummary` (layers, context), read without loading weights."""
    from interp.checkpoints import check_compatible, read_summary
    from interp.loading import resolve_device, verify_checkpoint

    resolve_device(device)
    verify_checkpoint(base)
    verify_checkpoint(post)
    check_compatible(base, post)
    return read_summary(base)


def load_pair(base: Path, post: Path, device: str, why: str = "; prompts are batched by length, not padded"
              ) -> dict[str, Any]:
    """Both checkpoints on the native backend, or on TransformerLens's when interp has no native implementation of
    their family (after `check_pair`: one architecture, so one notice, ending with `why`)."""
    from interp.models.auto_backend import auto_backend
    from interp.loading import load

    backend = auto_backend(base, why)
    return {"base": load(base, backend=backend, device=device), "post": load(post, backend=backend, device=device)}


def parse_layers(option: str, text: str | None, n_layers: int) -> list[int] | None:
    """`8,9,10` -> [8, 9, 10], each a layer of the model and none twice; None stays None."""
    from interp.options import parse_int_list

    layers = parse_int_list(option, text, 0, n_layers - 1)
    if layers is not None and len(set(layers)) < len(layers):
        raise InterpError(f"{option} {text!r} names a layer twice", fix="name each layer once")
    return layers


def check_site(base: Path, hook: str) -> None:
    """Refuse, before loading, a residual site the architecture lacks (resid_mid of a parallel GPT-NeoX block)."""
    from transformers import AutoConfig

    from interp.models.hf import parallel_attn_mlp
    from probes.steering import site_names

    site_names([0], [hook], parallel_attn_mlp(AutoConfig.from_pretrained(str(base), local_files_only=True)))


def warn(message: str) -> None:
    """One `warning: ...` line on stderr: the results are written, but a number in them says less than it seems."""
    typer.echo("warning: " + " ".join(message.split()), err=True)


def truth_data(data: list[Path], eval_path: Path | None, seed: int) -> tuple[list[Any], list[Any], str]:
    """(train, held-out, description): the zoo's splits, or CSVs (held out: --eval, else a 20% split), each file and
    split holding true and false statements."""
    from interp.data.datasets import check_both_labels, load_truth_csv, zoo_statements
    from probes.directions import train_test_split

    if not data:
        if eval_path is not None:
            raise InterpError("--eval needs --data", fix="pass the training CSVs with --data too")
        return zoo_statements("train"), zoo_statements("test"), "zoo truth statements (train / test)"
    fix = "give every CSV both true (1) and false (0) statements"
    files = {path: load_truth_csv(path) for path in [*data, *([eval_path] if eval_path else [])]}
    for path, statements in files.items():  # centred per file: a one-label file has no direction
        check_both_labels(statements, str(path), fix)
    train = [s for path in data for s in files[path]]
    if eval_path is not None:
        return train, files[eval_path], f"{', '.join(p.name for p in data)} / {eval_path.name}"
    tr, te = train_test_split(len(train), 0.2, seed)
    train, test = [train[i] for i in tr], [train[i] for i in te]
    for name, split in (("training", train), ("held-out", test)):
        check_both_labels(split, f"the 80/20 split's {name} part of {', '.join(p.name for p in data)}",
                          "pass more statements, or a held-out CSV with --eval")
    return train, test, f"{', '.join(p.name for p in data)} (80/20 split)"


ANSWER_MASS_WARNING = 0.05  # mean P(TRUE) + P(FALSE) below which a model is warned to be not answering


def run_truth(base: Path, post: Path, out: Path, data: list[Path], eval_path: Path | None = None,
              hook: str = "resid_post", pos: int = -1, probe_layer: int | None = None,
              intervene_layers: str | None = None, coeff: float = 1.0, n_steer: int = 200, batch_size: int = 32,
              seed: int = 0, device: str = "cpu", bos: bool = True, force: bool = False) -> Path:
    """Truth directions, probe accuracies, cosines and the four NIEs, written as a results directory; every input
    checked before the models are loaded (positions and prompt lengths before the first forward pass)."""
    from interp.base_vs_post.figures import grouped_bars, layer_curves
    from interp.base_vs_post.truth import ROLES, check_inputs, truth_directions
    from interp.loading import load_tokenizer
    from interp.options import check_range
    from interp.outdir import check_out
    from interp.results import write_results
    from probes.steering import RESID_SITES

    settings = {"base": path_setting(base), "post": path_setting(post), "data": [path_setting(p) for p in data],
                "eval": path_setting(eval_path), "hook": hook, "pos": pos, "probe_layer": probe_layer,
                "intervene_layers": intervene_layers, "coeff": coeff, "n_steer": n_steer, "batch_size": batch_size,
                "seed": seed, "device": device, "bos": bos}
    out = check_out(out, "truth", settings, force)
    if hook not in RESID_SITES:
        raise InterpError(f"--hook {hook!r} is not a residual site", fix=f"use one of {', '.join(RESID_SITES)}")
    check_range("--coeff", coeff)
    check_range("--n-steer", n_steer, 2)
    check_range("--batch-size", batch_size, 1)
    facts = check_pair(base, post, device)
    check_site(base, hook)
    check_range("--probe-layer", probe_layer, 0, facts.n_layers - 1)
    layers = parse_layers("--intervene-layers", intervene_layers, facts.n_layers)
    train, test, described = truth_data(data, eval_path, seed)
    check_inputs(load_tokenizer(base), facts.n_ctx, train, test, pos, n_steer=n_steer, seed=seed, bos=bos)
    models = load_pair(base, post, device)
    res = truth_directions(models, train, test, hook, pos, probe_layer, layers, coeff, n_steer=n_steer, seed=seed,
                           batch_size=batch_size, bos=bos)
    summary = {"method": "truthfulness directions (Du et al. 2025, section 1.2)", "base": str(base),
               "post": str(post), "data": described, **res.summary(),
               "bos_token": models["base"].tokenizer.bos_token if bos else None}
    accuracy = {f"{o} probe on {m}": res.mm_accuracy[i, j] for i, o in enumerate(ROLES) for j, m in enumerate(ROLES)}
    accuracy |= {f"logistic probe on {m}": res.lr_accuracy[j] for j, m in enumerate(ROLES)}
    nies = {k.replace("_", " "): {"true->false": v["true_to_false"], "false->true": v["false_to_true"]}
            for k, v in summary["nie"].items()}
    figures = [layer_curves(accuracy, "Held-out probe accuracy per layer (mass-mean probes; logistic probes)",
                            "accuracy"),
               layer_curves({"cos(theta_base, theta_post)": res.cosine}, "Truth-direction cosine per layer", "cosine"),
               grouped_bars(nies, f"NIE of steering at layers {res.intervene_layers} (direction from layer "
                                  f"{res.probe_layer})", "NIE")]
    path = write_results(out, res.tensors(), summary, figures, title=f"Truth directions: {post.name} vs {base.name}",
                         analysis="truth", axes=truth_axes(), tokenization={"bos": bos, "padding": "left"},
                         inputs=pair_inputs(base, post, [("data", p) for p in data] + [("eval", eval_path)]),
                         settings=settings)
    for j, m in enumerate(ROLES):
        mass = float(res.answer_mass[j].mean())
        if mass < ANSWER_MASS_WARNING:
            warn(f"the {m} model ({base if m == 'base' else post}) gives TRUE and FALSE together only {mass:.2g} of "
                 "its probability after the prompts, so its PD and NIE values measure little")
    return path


def refusal_data(data: Path | None, n_train: int, n_test: int) -> tuple[tuple[list[str], list[str]],
                                                                       tuple[list[str], list[str]], str]:
    """((harmful, harmless) train, (harmful, harmless) test, description): the zoo's requests or a refusal dir."""
    from interp.data.datasets import load_refusal_dir, zoo_requests

    if data is None:
        train, test, described = zoo_requests("train"), zoo_requests("test"), "zoo requests (train / test)"
    else:
        train, test, described = load_refusal_dir(data, "train"), load_refusal_dir(data, "val"), f"{data} (train / val)"
    return (train[0][:n_train], train[1][:n_train]), (test[0][:n_test], test[1][:n_test]), described


def check_template(template: str | None) -> None:
    """Refuse a --template that is not a format string placing `{instruction}`: every request would be one prompt."""
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
                    n_ctx: int, max_new_tokens: int) -> dict[str, Any]:
    """Each model's prompt function (from its tokenizer alone, before loading), after checking that `pos` (if given)
    lies within every prompt and that every prompt with its generated tokens fits the context."""
    from interp.base_vs_post.refusal import template_prompt
    from interp.loading import load_tokenizer
    from interp.options import check_range
    from interp.options import check_context

    prompts = {m: template_prompt(load_tokenizer(path), template) for m, path in paths.items()}
    for prompt in prompts.values():
        ids = [prompt(x) for x in instructions]
        check_context(ids, instructions, n_ctx, max_new_tokens)
        check_range("--pos", pos, -min(map(len, ids)), -1)  # from the end, within the shortest prompt
    return prompts


def run_refusal(base: Path, post: Path, out: Path, data: Path | None = None, layer: int | None = None,
                pos: int | None = None,
                coeff: float | None = None, n_train: int = 128, n_test: int = 100, max_new_tokens: int = 16,
                template: str | None = None, batch_size: int = 32, device: str = "cpu", force: bool = False) -> Path:
    """Refusal directions, cosines and refusal scores under ablation and addition (own and transferred); every input
    checked before the models are loaded. Warns of a model that refuses none of the harmful requests."""
    from interp.base_vs_post.figures import grouped_bars, layer_curves
    from interp.base_vs_post.refusal import refusal_transfer
    from interp.data.judges import REFERENCE as is_refusal
    from interp.options import check_range
    from interp.outdir import check_out
    from interp.results import write_results

    settings = {"base": path_setting(base), "post": path_setting(post), "data": path_setting(data), "layer": layer,
                "pos": pos, "coeff": coeff, "n_train": n_train, "n_test": n_test, "max_new_tokens": max_new_tokens,
                "template": template, "batch_size": batch_size, "device": device}
    out = check_out(out, "refusal", settings, force)
    for option, value in (("--n-train", n_train), ("--n-test", n_test), ("--max-new-tokens", max_new_tokens),
                          ("--batch-size", batch_size)):
        check_range(option, value, 1)
    check_range("--coeff", coeff)
    check_template(template)
    facts = check_pair(base, post, device)
    check_range("--layer", layer, 0, facts.n_layers - 1)
    train, test, described = refusal_data(data, n_train, n_test)
    if data is None:
        from interp.zoo import data as zoo

        default_template, judge = zoo.CHAT_TEMPLATE, zoo.is_refusal
    else:
        default_template, judge = None, is_refusal
    template = template or default_template
    prompts = refusal_prompts({"base": base, "post": post}, template, [*train[0], *train[1], *test[0], *test[1]], pos,
                              facts.n_ctx, max_new_tokens)
    models = load_pair(base, post, device)
    res = refusal_transfer(models, prompts, train, test, layer, pos, coeff, max_new_tokens, judge, batch_size)
    summary = {"method": "refusal directions (Du et al. 2025 section 1.3; Arditi et al. 2024)", "base": str(base),
               "post": str(post), "data": described, "template": template or "model's own",
               "judge": "zoo is_refusal" if data is None else "reference refusal prefixes", **res.summary()}
    s = summary
    bars = {"no intervention (harmful)": {m: s["baseline"][m]["harmful"] for m in models},
            "no intervention (harmless)": {m: s["baseline"][m]["harmless"] for m in models}}
    for direction in ("base", "post"):
        key = {m: f"{direction}_dir_in_{m}" for m in models}
        bars[f"ablate {direction} dir (harmful)"] = {m: s["ablation_harmful"][key[m]] for m in models}
        bars[f"add {direction} dir (harmless)"] = {m: s["addition_harmless"][key[m]] for m in models}
    by_model = {m: {k: v[m] for k, v in bars.items()} for m in models}
    figures = [layer_curves({"cos(r_base, r_post)": res.cosine}, "Refusal-direction cosine per layer (resid_pre)",
                            "cosine"),
               grouped_bars(by_model, f"Refusal score (ablation: every layer; addition: layer {res.layer})",
                            "refusal score")]
    path = write_results(out, res.tensors(), summary, figures,
                         title=f"Refusal directions: {post.name} vs {base.name}", analysis="refusal",
                         axes=refusal_axes(res), tokenization={"bos": "as the template writes it", "padding": "left"},
                         inputs=pair_inputs(base, post, [("data", data)]), settings=settings)
    for m, refuses_none in summary.get("baseline_refuses_none", {}).items():
        if refuses_none:
            warn(f"the {m} model ({base if m == 'base' else post}) refused none of the {len(test[0])} harmful test "
                 "requests without intervention, so its ablation scores cannot fall and say nothing about its "
                 "refusal direction")
    if (summary.get("selection") or {}).get("fallback"):
        warn("no candidate refusal direction brought the refusal tokens to even odds when added; the layer was chosen "
             "among those that raise them above the harmless baseline (summary.json: selection.fallback)")
    return path


@directions_app.command("truth")
def truth(
    base: Path = typer.Argument(..., help="Base checkpoint directory."),
    post: Path = typer.Argument(..., help="Post-trained checkpoint directory (same architecture and tokenizer)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Geometry-of-Truth CSV to train on (repeatable): "
                                              "UTF-8, columns statement,label (1 true, 0 false), both labels in each "
                                              "file; default: the zoo's statements."),
    eval_path: Optional[Path] = typer.Option(None, "--eval", help="Held-out CSV (default: 20% of --data)."),
    hook: str = typer.Option("resid_post", help="Residual site of the directions: resid_pre, resid_mid, resid_post."),
    pos: int = typer.Option(-1, help="Token of the statement the directions are read at, from the end (-1: last)."),
    probe_layer: Optional[int] = typer.Option(None, help="Layer whose direction is used for steering (default: best "
                                                         "training accuracy)."),
    intervene_layers: Optional[str] = typer.Option(None, help="Layers to steer, e.g. 8,9,10,11,12 (default: the probe "
                                                              "layer and the n_layers/8 before it, at least one)."),
    coeff: float = typer.Option(1.0, help="Steering coefficient on the mean difference."),
    n_steer: int = typer.Option(200, help="Held-out statements used for steering (at least 2: true and false)."),
    batch_size: int = typer.Option(32, help="Prompts per batch."),
    seed: int = typer.Option(0, help="Seed for splits and few-shot examples."),
    bos: bool = typer.Option(True, "--bos/--no-bos", help="Start every prompt with the tokenizer's BOS token (for a "
                                                          "chat tokenizer it can be a turn marker such as "
                                                          "<|im_start|>)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Truth directions per layer, probe accuracy, base/post cosine, and the four steering NIEs.

    Writes theta_base and theta_post [layer, d_model], cosine [layer], mm_accuracy [owner, model, layer],
    lr_accuracy [model, layer], pd_clean [model, label], pd_steered and nie [owner, model, label]. P(TRUE) and
    P(FALSE) are those of the whole answer when the tokenizer splits it into several tokens.
    """
    path = run_truth(base, post, out, data or [], eval_path, hook, pos, probe_layer, intervene_layers, coeff,
                     n_steer, batch_size, seed, device, bos, force)
    typer.echo(f"wrote {path}")


@directions_app.command("refusal")
def refusal(
    base: Path = typer.Argument(..., help="Base checkpoint directory."),
    post: Path = typer.Argument(..., help="Post-trained checkpoint directory (same architecture and tokenizer)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    data: Optional[Path] = typer.Option(None, "--data", help="A directory holding these four files: "
                                        "harmful_train.json and harmless_train.json (directions), harmful_val.json "
                                        "and harmless_val.json (refusal scores), each a JSON list of "
                                        "{\"instruction\": \"...\", \"category\": ...} objects (Arditi et al.'s "
                                        "refusal_direction layout); default: the zoo's requests."),
    layer: Optional[int] = typer.Option(None, help="Layer of the direction and of addition (default: chosen with "
                                        "--pos on the post model by Arditi et al.'s selection on training requests)."),
    pos: Optional[int] = typer.Option(None, help="Token position of the direction, from the end of the prompt (-1: "
                                                 "last; default: chosen with the layer)."),
    coeff: Optional[float] = typer.Option(None, help="Addition coefficient on the unit direction at each of "
                                                     "resid_pre/mid/post (default: |mean difference|/3 of the "
                                                     "steered model)."),
    n_train: int = typer.Option(128, help="Harmful and harmless instructions for the direction (each)."),
    n_test: int = typer.Option(100, help="Harmful and harmless instructions for the refusal scores (each)."),
    max_new_tokens: int = typer.Option(16, help="Greedy tokens generated per instruction."),
    template: Optional[str] = typer.Option(None, help="Prompt template with {instruction} (default: the zoo's, or "
                                                      "the tokenizer's chat template, or 'User: ...\\nAssistant:')."),
    batch_size: int = typer.Option(32, help="Prompts per batch."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Refusal directions per layer, base/post cosine, and refusal scores under ablation and addition.

    Writes direction_base and direction_post [layer, d_model], cosine [layer], baseline [model, kind],
    ablation and addition [owner, model]. A model that refuses none of the harmful requests gets a warning.
    """
    path = run_refusal(base, post, out, data, layer, pos, coeff, n_train, n_test, max_new_tokens, template,
                       batch_size, device, force)
    typer.echo(f"wrote {path}")
