"""`interp knowledge BASE POST`: where knowledge is stored before and after post-training (patching maps within and
across the two models, Du et al. 2025 section 1.1), plus the last layer's entropy-neuron overlap (section 1.4).
A family interp has no native implementation of runs on the TransformerLens bridge: the maps by the exact hooked
patcher, and no entropy neurons (they read a native model's unembedding and last MLP), each said in one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from interp.cli import app

if TYPE_CHECKING:
    from interp.base_vs_post.entropy import EntropyResult


def knowledge_data(data: Path | None, seed: int) -> tuple[list[Any], list[Any], str]:
    """(pairs or statements, few-shot source, description): the zoo's held-out pairs or a Geometry-of-Truth CSV with
    true and false statements."""
    from probes.datasets import check_both_labels, load_truth_csv, zoo_pairs, zoo_statements

    if data is None:
        return zoo_pairs("test"), zoo_statements("train"), "zoo truth pairs (test), few-shot lines from train"
    statements = load_truth_csv(data)
    check_both_labels(statements, str(data), "pair true (1) and false (0) statements in one CSV")
    return statements, statements, f"{data.name}, paired by last word"


NO_ENTROPY = ("entropy neurons are left out: they read the last MLP's output weights and the unembedding of a "
              "natively implemented family")


def entropy_part(models: dict[str, Any]) -> tuple[EntropyResult | None, dict[str, Any]]:
    """(entropy-neuron result or None, its summary entries): None, with the reason, off the native backend."""
    from interp.base_vs_post.entropy import entropy_neurons

    if models["base"].backend != "native":
        return None, {"entropy_neurons": None, "entropy_neurons_skipped": NO_ENTROPY}
    ent = entropy_neurons({m: models[m].native() for m in models})
    return ent, {"entropy_neurons": ent.summary()}


def run_knowledge(base: Path, post: Path, out: Path, data: Path | None = None, n_pairs: int = 64, n_shots: int = 4,
                  seed: int = 0, backend: str = "torch", device: str = "cpu", bos: bool = True,
                  force: bool = False) -> Path:
    """Patching maps, their correlations and entropy neurons, written as a results directory; every input checked
    before the models are loaded (prompt lengths before any patching)."""
    from interp.commands.backend import is_native
    from interp.commands.directions import check_pair, load_pair, pair_inputs, path_setting
    from interp.base_vs_post.figures import heatmaps, scatter_log
    from interp.base_vs_post.knowledge import knowledge_maps, knowledge_prompts, normalize, pair_statements
    from interp.base_vs_post.truth import few_shot_lines, label_ids
    from interp.loading import load_tokenizer
    from interp.options import check_range
    from interp.outdir import check_out
    from interp.results import write_results
    from patching.hooked import NOTICE
    from patching.variants import get_backend

    settings = {"base": path_setting(base), "post": path_setting(post), "data": path_setting(data),
                "n_pairs": n_pairs, "n_shots": n_shots, "seed": seed, "backend": backend, "device": device, "bos": bos}
    out = check_out(out, "knowledge", settings, force)
    check_range("--n-pairs", n_pairs, 1)
    check_range("--n-shots", n_shots, 0)
    get_backend(backend)
    facts = check_pair(base, post, device)
    tokenizer = load_tokenizer(base)
    label_ids(tokenizer)  # one token each for TRUE and FALSE, or an error before reading any data
    items, shot_source, described = knowledge_data(data, seed)
    shots = few_shot_lines(shot_source, n_shots, seed)
    if data is None:
        pairs = items
    else:
        in_shots = {line.split(" This statement is:")[0] for line in shots}
        pairs = pair_statements([s for s in items if s.text not in in_shots], tokenizer, None, seed, bos)
    knowledge_prompts(tokenizer, facts.n_ctx, pairs, shots, n_pairs, seed, bos)
    if not is_native(base):
        typer.echo(f"note: {NOTICE}; {NO_ENTROPY}", err=True)
    models = load_pair(base, post, device, "")
    res = knowledge_maps(models, pairs, shots, n_pairs, seed=seed, backend=backend, bos=bos)
    ent, ent_summary = entropy_part(models)
    summary = {"method": "knowledge storage by activation patching and entropy neurons (Du et al. 2025, 1.1 and 1.4)",
               "base": str(base), "post": str(post), "data": described, **res.summary(), "bos": bos,
               "bos_token": models["base"].tokenizer.bos_token if bos else None, **ent_summary}
    maps = res.maps
    figures = [heatmaps({"base": maps["base"], "post": maps["post"]}, res.tokens,
                        f"Logit difference TRUE-FALSE after patching the true run into the false run (r = "
                        f"{res.correlations['pearson_base_post']:.3f})"),
               heatmaps({k: normalize(maps[k]) for k in ("base", "post")}, res.tokens,
                        f"Normalised as Du et al. (r = {res.correlations['pearson_base_post_normalized']:.3f})"),
               heatmaps({"base -> post": maps["base_to_post"], "post -> base": maps["post_to_base"]}, res.tokens,
                        "Cross-model patching (source -> target)")]
    if ent is not None:
        figures.append(scatter_log({m: (ent.norm[m], ent.logit_var[m]) for m in ent.norm},
                                   f"Last-layer neurons: LogitVar vs output norm (entropy-candidate IoU {ent.iou:.2f})",
                                   "|w_out|", "LogitVar"))
    return write_results(out, res.tensors() | (ent.tensors() if ent is not None else {}), summary, figures,
                         title=f"Knowledge storage: {post.name} vs {base.name}", analysis="knowledge",
                         axes=knowledge_axes(res, ent), tokenization={"bos": bos, "padding": None},
                         inputs=pair_inputs(base, post, [("data", data)]), settings=settings)


def knowledge_axes(res: Any, ent: Any) -> dict[str, Any]:
    """Maps [layer, pos] (ticks: the prompt's tokens); entropy statistics [neuron] and candidates [candidate]."""
    from interp.results import axes

    out = {name: axes("layer", "pos", pos=res.tokens) for name in res.tensors()}
    if ent is not None:
        out |= {name: axes("candidate" if name.startswith("entropy_candidates") else "neuron")
                for name in ent.tensors()}
    return out


@app.command()
def knowledge(
    base: Path = typer.Argument(..., help="Base checkpoint directory."),
    post: Path = typer.Argument(..., help="Post-trained checkpoint directory (same architecture and tokenizer)."),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    data: Optional[Path] = typer.Option(None, "--data", help="Geometry-of-Truth CSV (e.g. cities.csv: UTF-8, columns "
                                                             "statement,label, both labels); default: the zoo's "
                                                             "held-out statement pairs."),
    n_pairs: int = typer.Option(64, help="True/false pairs averaged over."),
    n_shots: int = typer.Option(4, help="Few-shot lines before each statement."),
    seed: int = typer.Option(0, help="Seed for pairing and few-shot order."),
    backend: str = typer.Option("torch", help="Patching backend: torch, triton or auto (a family "
                                                  "without a native implementation: the exact hooked path)."),
    bos: bool = typer.Option(True, "--bos/--no-bos", help="Start every prompt with the tokenizer's BOS token (for a "
                                                          "chat tokenizer it can be a turn marker such as "
                                                          "<|im_start|>)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Patching maps (layer x token) within and across base and post, their correlation, and entropy-neuron IoU.

    Writes map_base, map_post, map_base_to_post, map_post_to_base [layer, position]. The metric is the logit
    difference of one TRUE and one FALSE token: a tokenizer that splits either is refused.
    """
    typer.echo(f"wrote {run_knowledge(base, post, out, data, n_pairs, n_shots, seed, backend, device, bos, force)}")
