"""Knowledge storage before and after post-training (Du et al. 2025, sections 1.1 and 1.4): layer x token activation
patching maps within and across a base and a post-trained model, their correlations, and the overlap of the last
layer's entropy-neuron candidates. A family interp has no native implementation of runs on the TransformerLens
bridge: the maps by the exact hooked patcher, and no entropy neurons, each said in one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, Bos, Opt, settings_of, write
from interp.data.tokens import BOS_DEFAULT

if TYPE_CHECKING:
    from interp.base_vs_post.entropy import EntropyResult
    from interp.results import Results

NO_ENTROPY = ("entropy neurons are left out: they read the last MLP's output weights and the unembedding of a "
              "natively implemented family")


@dataclass(frozen=True)
class Spec:
    """Patching maps (layer x token) within and across base and post, their correlation, and entropy-neuron IoU.

    Writes map_base, map_post, map_base_to_post, map_post_to_base [layer, position]. The metric is the logit
    difference of one TRUE and one FALSE token: a tokenizer that splits either is refused.
    """

    base: Annotated[Path, Arg("Base checkpoint directory.")]
    post: Annotated[Path, Arg("Post-trained checkpoint directory (same architecture and tokenizer).")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    data: Annotated[Optional[Path], Opt("Geometry-of-Truth CSV (e.g. cities.csv: UTF-8, columns statement,label, both "
                                        "labels); default: the zoo's held-out statement pairs.", ("--data",))] = None
    n_pairs: Annotated[int, Opt("True/false pairs averaged over.")] = 64
    n_shots: Annotated[int, Opt("Few-shot lines before each statement.")] = 4
    seed: Annotated[int, Opt("Seed for pairing and few-shot order.")] = 0
    backend: Annotated[str, Opt("Patching backend: torch, triton or auto (a family without a native "
                                "implementation: the exact hooked path).")] = "torch"
    bos: Bos = BOS_DEFAULT
    device: Annotated[str, Opt("torch device, e.g. cpu or cuda.")] = "cpu"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


def knowledge_data(data: Path | None, seed: int) -> tuple[list[Any], list[Any], str]:
    """(pairs or statements, few-shot source, description): the default data source's held-out pairs (the zoo's) or
    a Geometry-of-Truth CSV with true and false statements."""
    from interp.data.datasets import check_both_labels, load_truth_csv
    from interp.data.sources import source

    if data is None:
        src = source()
        return (src.truth_pairs("test"), src.truth_statements("train"),
                f"{src.name} truth pairs (test), few-shot lines from train")
    statements = load_truth_csv(data)
    check_both_labels(statements, str(data), "pair true (1) and false (0) statements in one CSV")
    return statements, statements, f"{data.name}, paired by last word"


def entropy_part(models: dict[str, Any]) -> tuple[EntropyResult | None, dict[str, Any]]:
    """(entropy-neuron result or None, its summary entries): None, with the reason, off the native backend."""
    from interp.base_vs_post.entropy import entropy_neurons

    if models["base"].backend != "native":
        return None, {"entropy_neurons": None, "entropy_neurons_skipped": NO_ENTROPY}
    ent = entropy_neurons({m: models[m].native() for m in models})
    return ent, {"entropy_neurons": ent.summary()}


def run(spec: Spec) -> Results:
    """Patching maps, their correlations and entropy neurons, written as a results directory; every input checked
    before the models are loaded (prompt lengths before any patching)."""
    import sys

    from interp.analyses.pairs import check_pair, load_pair, pair_inputs
    from interp.base_vs_post.knowledge import knowledge_maps, knowledge_prompts, pair_statements
    from interp.base_vs_post.truth import few_shot_lines, label_ids
    from interp.loading import load_tokenizer
    from interp.models.auto_backend import is_native
    from interp.options import check_range
    from interp.outdir import check_out
    from patching.hooked import NOTICE
    from patching.variants import get_backend

    s, settings = spec, settings_of(spec)
    out = check_out(s.out, UNIT.name, settings, s.force)
    check_range("--n-pairs", s.n_pairs, 1)
    check_range("--n-shots", s.n_shots, 0)
    get_backend(s.backend)
    facts = check_pair(s.base, s.post, s.device)
    tokenizer = load_tokenizer(s.base)
    label_ids(tokenizer)  # one token each for TRUE and FALSE, or an error before reading any data
    items, shot_source, described = knowledge_data(s.data, s.seed)
    shots = few_shot_lines(shot_source, s.n_shots, s.seed)
    if s.data is None:
        pairs = items
    else:
        in_shots = {line.split(" This statement is:")[0] for line in shots}
        pairs = pair_statements([x for x in items if x.text not in in_shots], tokenizer, None, s.seed, s.bos)
    knowledge_prompts(tokenizer, facts.n_ctx, pairs, shots, s.n_pairs, s.seed, s.bos)
    if not is_native(s.base):
        print(f"note: {NOTICE}; {NO_ENTROPY}", file=sys.stderr)
    models = load_pair(s.base, s.post, s.device, "")
    res = knowledge_maps(models, pairs, shots, s.n_pairs, seed=s.seed, backend=s.backend, bos=s.bos)
    ent, ent_summary = entropy_part(models)
    summary = {"method": "knowledge storage by activation patching and entropy neurons (Du et al. 2025, 1.1 and 1.4)",
               "base": str(s.base), "post": str(s.post), "data": described, **res.summary(), "bos": s.bos,
               "bos_token": models["base"].tokenizer.bos_token if s.bos else None, **ent_summary}
    return write(UNIT, out, res.tensors() | (ent.tensors() if ent is not None else {}), summary,
                 title=f"Knowledge storage: {s.post.name} vs {s.base.name}", axes=knowledge_axes(res, ent),
                 tokenization={"bos": s.bos, "padding": None},
                 inputs=pair_inputs(s.base, s.post, [("data", s.data)]), settings=settings)


def knowledge_axes(res: Any, ent: Any) -> dict[str, Any]:
    """Maps [layer, pos] (ticks: the prompt's tokens); entropy statistics [neuron] and candidates [candidate]."""
    from interp.results import axes

    out = {name: axes("layer", "pos", pos=res.tokens) for name in res.tensors()}
    if ent is not None:
        out |= {name: axes("candidate" if name.startswith("entropy_candidates") else "neuron")
                for name in ent.tensors()}
    return out


def figures(results: Results) -> list[Any]:
    """The maps side by side (raw and normalised as Du et al.), cross-model patching, and the entropy-neuron scatter."""
    from interp.base_vs_post.figures import heatmaps, scatter_log
    from interp.base_vs_post.knowledge import normalize

    maps, s = {k.removeprefix("map_"): v for k, v in results.tensors.items() if k.startswith("map_")}, results.summary
    tokens, r = s["tokens"], s["correlations"]
    shown = [heatmaps({"base": maps["base"], "post": maps["post"]}, tokens,
                      "Logit difference TRUE-FALSE after patching the true run into the false run (r = "
                      f"{r['pearson_base_post']:.3f})"),
             heatmaps({k: normalize(maps[k]) for k in ("base", "post")}, tokens,
                      f"Normalised as Du et al. (r = {r['pearson_base_post_normalized']:.3f})"),
             heatmaps({"base -> post": maps["base_to_post"], "post -> base": maps["post_to_base"]}, tokens,
                      "Cross-model patching (source -> target)")]
    if s.get("entropy_neurons"):
        t = results.tensors
        shown.append(scatter_log({m: (t[f"neuron_norm_{m}"], t[f"logit_var_{m}"]) for m in ("base", "post")},
                                 "Last-layer neurons: LogitVar vs output norm (entropy-candidate IoU "
                                 f"{s['entropy_neurons']['iou']:.2f})", "|w_out|", "LogitVar"))
    return shown


UNIT = Analysis(name="knowledge", title="Knowledge maps", command=("knowledge",), spec=Spec, run=run,
                figures=figures, page="interp.analyses.knowledge.page",
                example="knowledge BASE POST --out results/knowledge")
