"""Truthfulness directions of a base and a post-trained model (Du et al. 2025, section 1.2; Marks & Tegmark 2023):
difference-in-means directions per layer, mass-mean and logistic probe accuracies within and across the models, the
per-layer cosine of the two directions, and the normalised indirect effects of steering along each model's direction.
Without --data, the default data source's held-out statements (`interp.data.sources`: the zoo's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

from interp.analyses.unit import Analysis, Arg, Bos, Opt, settings_of, write
from interp.data.tokens import BOS_DEFAULT

if TYPE_CHECKING:
    from interp.results import Results

ANSWER_MASS_WARNING = 0.05  # mean P(TRUE) + P(FALSE) below which a model is warned to be not answering


@dataclass(frozen=True)
class Spec:
    """Truth directions per layer, probe accuracy, base/post cosine, and the four steering NIEs.

    Writes theta_base and theta_post [layer, d_model], cosine [layer], mm_accuracy [owner, model, layer],
    lr_accuracy [model, layer], pd_clean [model, label], pd_steered and nie [owner, model, label]. P(TRUE) and
    P(FALSE) are those of the whole answer when the tokenizer splits it into several tokens.
    """

    base: Annotated[Path, Arg("Base checkpoint directory.")]
    post: Annotated[Path, Arg("Post-trained checkpoint directory (same architecture and tokenizer).")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    data: Annotated[tuple[Path, ...], Opt("Geometry-of-Truth CSV to train on (repeatable): UTF-8, columns "
                                          "statement,label (1 true, 0 false), both labels in each file; default: the "
                                          "zoo's statements.", ("--data",))] = ()
    eval_path: Annotated[Optional[Path], Opt("Held-out CSV (default: 20% of --data).", ("--eval",))] = None
    hook: Annotated[str, Opt("Residual site of the directions: resid_pre, resid_mid, resid_post.")] = "resid_post"
    pos: Annotated[int, Opt("Token of the statement the directions are read at, from the end (-1: last).")] = -1
    probe_layer: Annotated[Optional[int], Opt(
        "Layer whose direction is used for steering (default: best training accuracy).")] = None
    intervene_layers: Annotated[Optional[str], Opt("Layers to steer, e.g. 8,9,10,11,12 (default: the probe layer and "
                                                   "the n_layers/8 before it, at least one).")] = None
    coeff: Annotated[float, Opt("Steering coefficient on the mean difference.")] = 1.0
    n_steer: Annotated[int, Opt("Held-out statements used for steering (at least 2: true and false).")] = 200
    batch_size: Annotated[int, Opt("Prompts per batch.")] = 32
    seed: Annotated[int, Opt("Seed for splits and few-shot examples.")] = 0
    bos: Bos = BOS_DEFAULT
    device: Annotated[str, Opt("torch device, e.g. cpu or cuda.")] = "cpu"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


def truth_data(data: Sequence[Path], eval_path: Path | None, seed: int) -> tuple[list[Any], list[Any], str]:
    """(train, held-out, description): the default data source's splits, or CSVs (held out: --eval, else a 20%
    split), each file and split holding true and false statements."""
    from interp.data.datasets import check_both_labels, load_truth_csv
    from interp.data.sources import source
    from interp.errors import InterpError
    from probes.directions import train_test_split

    if not data:
        if eval_path is not None:
            raise InterpError("--eval needs --data", fix="pass the training CSVs with --data too")
        src = source()
        return (src.truth_statements("train"), src.truth_statements("test"),
                f"{src.name} truth statements (train / test)")
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


def run(spec: Spec) -> Results:
    """Truth directions, probe accuracies, cosines and the four NIEs, written as a results directory; every input
    checked before the models are loaded (positions and prompt lengths before the first forward pass). Warns of a
    model that gives TRUE and FALSE almost no probability."""
    from interp.analyses.pairs import check_pair, check_site, load_pair, pair_inputs, parse_layers
    from interp.errors import warn
    from interp.base_vs_post.truth import ROLES, check_inputs, truth_directions
    from interp.errors import InterpError
    from interp.loading import load_tokenizer
    from interp.options import check_range
    from interp.outdir import check_out
    from probes.steering import RESID_SITES

    s, settings = spec, settings_of(spec)
    out = check_out(s.out, UNIT.name, settings, s.force)
    if s.hook not in RESID_SITES:
        raise InterpError(f"--hook {s.hook!r} is not a residual site", fix=f"use one of {', '.join(RESID_SITES)}")
    check_range("--coeff", s.coeff)
    check_range("--n-steer", s.n_steer, 2)
    check_range("--batch-size", s.batch_size, 1)
    facts = check_pair(s.base, s.post, s.device)
    check_site(s.base, s.hook)
    check_range("--probe-layer", s.probe_layer, 0, facts.n_layers - 1)
    layers = parse_layers("--intervene-layers", s.intervene_layers, facts.n_layers)
    train, test, described = truth_data(s.data, s.eval_path, s.seed)
    check_inputs(load_tokenizer(s.base), facts.n_ctx, train, test, s.pos, n_steer=s.n_steer, seed=s.seed, bos=s.bos)
    models = load_pair(s.base, s.post, s.device)
    res = truth_directions(models, train, test, s.hook, s.pos, s.probe_layer, layers, s.coeff, n_steer=s.n_steer,
                           seed=s.seed, batch_size=s.batch_size, bos=s.bos)
    summary = {"method": "truthfulness directions (Du et al. 2025, section 1.2)", "base": str(s.base),
               "post": str(s.post), "data": described, **res.summary(),
               "bos_token": models["base"].tokenizer.bos_token if s.bos else None}
    results = write(UNIT, out, res.tensors(), summary, title=f"Truth directions: {s.post.name} vs {s.base.name}",
                    axes=truth_axes(), tokenization={"bos": s.bos, "padding": "left"},
                    inputs=pair_inputs(s.base, s.post, [("data", p) for p in s.data] + [("eval", s.eval_path)]),
                    settings=settings)
    for j, m in enumerate(ROLES):
        mass = float(res.answer_mass[j].mean())
        if mass < ANSWER_MASS_WARNING:
            warn(f"the {m} model ({s.base if m == 'base' else s.post}) gives TRUE and FALSE together only {mass:.2g} "
                 "of its probability after the prompts, so its PD and NIE values measure little")
    return results


def figures(results: Results) -> list[Any]:
    """Held-out probe accuracy per layer (every mass-mean probe on every model, the logistic probes), the direction
    cosine per layer, and the NIEs of steering (owners and models named by the tensors' ticks)."""
    from interp.base_vs_post.figures import grouped_bars, layer_curves

    t, s = results.tensors, results.summary
    mm, lr = s["tensors"]["mm_accuracy"]["ticks"], s["tensors"]["lr_accuracy"]["ticks"]
    accuracy = {f"{o} probe on {m}": t["mm_accuracy"][i, j] for i, o in enumerate(mm["owner"])
                for j, m in enumerate(mm["model"])}
    accuracy |= {f"logistic probe on {m}": t["lr_accuracy"][j] for j, m in enumerate(lr["model"])}
    nies = {k.replace("_", " "): {"true->false": v["true_to_false"], "false->true": v["false_to_true"]}
            for k, v in s["nie"].items()}
    return [layer_curves(accuracy, "Held-out probe accuracy per layer (mass-mean probes; logistic probes)", "accuracy"),
            layer_curves({"cos(theta_base, theta_post)": t["cosine"]}, "Truth-direction cosine per layer", "cosine"),
            grouped_bars(nies, f"NIE of steering at layers {s['intervene_layers']} (direction from layer "
                               f"{s['probe_layer']})", "NIE")]


UNIT = Analysis(name="truth", title="Truth directions", command=("directions", "truth"), spec=Spec, run=run,
                figures=figures, page="interp.analyses.truth.page",
                example="directions truth BASE POST --out results/truth")
