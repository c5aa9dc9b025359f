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


def load_pair(base: Path, post: Path, device: str) -> dict[str, Any]:
    """Both checkpoints on the native backend, after checking they share architecture, shapes and tokenizer."""
    from interp.checkpoints import check_compatible
    from interp.loading import load

    check_compatible(base, post)
    return {"base": load(base, backend="native", device=device), "post": load(post, backend="native", device=device)}


def parse_layers(text: str | None) -> list[int] | None:
    """`8,9,10` -> [8, 9, 10]; None stays None."""
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as err:
        raise InterpError(f"{text!r} is not a comma-separated list of layers", fix="write e.g. 8,9,10") from err


def truth_data(data: list[Path], eval_path: Path | None, seed: int) -> tuple[list[Any], list[Any], str]:
    """(train, held-out, description): the zoo's splits, or CSVs (held out: --eval, else a 20% split)."""
    from probes.datasets import load_truth_csv, zoo_statements
    from probes.directions import train_test_split

    if not data:
        if eval_path is not None:
            raise InterpError("--eval needs --data", fix="pass the training CSVs with --data too")
        return zoo_statements("train"), zoo_statements("test"), "zoo truth statements (train / test)"
    train = [s for path in data for s in load_truth_csv(path)]
    if eval_path is not None:
        return train, load_truth_csv(eval_path), f"{', '.join(p.name for p in data)} / {eval_path.name}"
    tr, te = train_test_split(len(train), 0.2, seed)
    return [train[i] for i in tr], [train[i] for i in te], f"{', '.join(p.name for p in data)} (80/20 split)"


def run_truth(base: Path, post: Path, out: Path, data: list[Path], eval_path: Path | None = None,
              hook: str = "resid_post", pos: int = -1, probe_layer: int | None = None,
              intervene_layers: str | None = None, coeff: float = 1.0, n_steer: int = 200, batch_size: int = 32,
              seed: int = 0, device: str = "cpu") -> Path:
    """Truth directions, probe accuracies, cosines and the four NIEs, written as a results directory."""
    from interp.finetuning.figures import grouped_bars, layer_curves
    from interp.finetuning.truth import ROLES, truth_directions
    from interp.results import write_results

    train, test, described = truth_data(data, eval_path, seed)
    models = load_pair(base, post, device)
    res = truth_directions(models, train, test, hook, pos, probe_layer, parse_layers(intervene_layers), coeff,
                           n_steer=n_steer, seed=seed, batch_size=batch_size)
    summary = {"method": "truthfulness directions (Du et al. 2025, section 1.2)", "base": str(base),
               "post": str(post), "data": described, **res.summary()}
    accuracy = {f"{o} probe on {m}": res.mm_accuracy[i, j] for i, o in enumerate(ROLES) for j, m in enumerate(ROLES)}
    accuracy |= {f"logistic probe on {m}": res.lr_accuracy[j] for j, m in enumerate(ROLES)}
    nies = {k.replace("_", " "): {"true->false": v["true_to_false"], "false->true": v["false_to_true"]}
            for k, v in summary["nie"].items()}
    figures = [layer_curves(accuracy, "Held-out probe accuracy per layer (mass-mean probes; logistic probes)",
                            "accuracy"),
               layer_curves({"cos(theta_base, theta_post)": res.cosine}, "Truth-direction cosine per layer", "cosine"),
               grouped_bars(nies, f"NIE of steering at layers {res.intervene_layers} (direction from layer "
                                  f"{res.probe_layer})", "NIE")]
    return write_results(out, res.tensors(), summary, figures, title=f"Truth directions: {post.name} vs {base.name}",
                         analysis="truth")


def refusal_data(data: Path | None, n_train: int, n_test: int) -> tuple[tuple[list[str], list[str]],
                                                                       tuple[list[str], list[str]], str]:
    """((harmful, harmless) train, (harmful, harmless) test, description): the zoo's requests or a refusal dir."""
    from probes.datasets import load_refusal_dir, zoo_requests

    if data is None:
        train, test, described = zoo_requests("train"), zoo_requests("test"), "zoo requests (train / test)"
    else:
        train, test, described = load_refusal_dir(data, "train"), load_refusal_dir(data, "val"), f"{data} (train / val)"
    return (train[0][:n_train], train[1][:n_train]), (test[0][:n_test], test[1][:n_test]), described


def run_refusal(base: Path, post: Path, out: Path, data: Path | None = None, layer: int | None = None, pos: int = -1,
                coeff: float | None = None, n_train: int = 128, n_test: int = 100, max_new_tokens: int = 16,
                template: str | None = None, batch_size: int = 32, device: str = "cpu") -> Path:
    """Refusal directions, cosines and refusal scores under ablation and addition (own and transferred)."""
    from interp.finetuning.figures import grouped_bars, layer_curves
    from interp.finetuning.refusal import is_refusal, refusal_transfer, template_prompt
    from interp.results import write_results

    train, test, described = refusal_data(data, n_train, n_test)
    models = load_pair(base, post, device)
    if data is None:
        from interp.zoo import data as zoo

        default_template, judge = zoo.CHAT_TEMPLATE, zoo.is_refusal
    else:
        default_template, judge = None, is_refusal
    template = template or default_template
    prompts = {m: template_prompt(models[m].tokenizer, template) for m in models}
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
    return write_results(out, res.tensors(), summary, figures, title=f"Refusal directions: {post.name} vs {base.name}",
                         analysis="refusal")


@directions_app.command("truth")
def truth(
    base: Path = typer.Argument(..., help="Base checkpoint directory."),
    post: Path = typer.Argument(..., help="Post-trained checkpoint directory (same architecture and tokenizer)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Geometry-of-Truth CSV to train on (repeatable); "
                                                                   "default: the zoo's statements."),
    eval_path: Optional[Path] = typer.Option(None, "--eval", help="Held-out CSV (default: 20% of --data)."),
    hook: str = typer.Option("resid_post", help="Residual site of the directions: resid_pre, resid_mid, resid_post."),
    pos: int = typer.Option(-1, help="Token of the statement the directions are read at, from the end."),
    probe_layer: Optional[int] = typer.Option(None, help="Layer whose direction is used for steering (default: best "
                                                         "training accuracy)."),
    intervene_layers: Optional[str] = typer.Option(None, help="Layers to steer, e.g. 8,9,10,11,12 (default: the probe "
                                                              "layer and the n_layers/8 before it, at least one)."),
    coeff: float = typer.Option(1.0, help="Steering coefficient on the mean difference."),
    n_steer: int = typer.Option(200, help="Held-out statements used for steering."),
    batch_size: int = typer.Option(32, help="Prompts per batch."),
    seed: int = typer.Option(0, help="Seed for splits and few-shot examples."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Truth directions per layer, probe accuracy, base/post cosine, and the four steering NIEs."""
    path = run_truth(base, post, out, data or [], eval_path, hook, pos, probe_layer, intervene_layers, coeff,
                     n_steer, batch_size, seed, device)
    typer.echo(f"wrote {path}")


@directions_app.command("refusal")
def refusal(
    base: Path = typer.Argument(..., help="Base checkpoint directory."),
    post: Path = typer.Argument(..., help="Post-trained checkpoint directory (same architecture and tokenizer)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    data: Optional[Path] = typer.Option(None, "--data", help="Directory with harmful_/harmless_{train,val}.json "
                                                             "(refusal_direction format); default: zoo requests."),
    layer: Optional[int] = typer.Option(None, help="Layer of the direction and of addition (default: the layer whose "
                                        "post-model direction, ablated, most lowers refusal on training requests)."),
    pos: int = typer.Option(-1, help="Token position of the direction, from the end of the prompt."),
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
) -> None:
    """Refusal directions per layer, base/post cosine, and refusal scores under ablation and addition."""
    path = run_refusal(base, post, out, data, layer, pos, coeff, n_train, n_test, max_new_tokens, template,
                       batch_size, device)
    typer.echo(f"wrote {path}")
