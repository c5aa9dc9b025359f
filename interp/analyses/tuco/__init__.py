"""The Tuning Contribution of each prompt (Nuti, Franzmeyer, Henriques, "Extracting Fine-tuning Behaviours from
Model Activations", ICML 2025): fine-tuning's share of the last token's residual update (TuCo, and the final-state
OutputCo), for one or two prompt sets, and FTC scaling: the behaviour rate of greedy continuations and the next-token
KL to the fine-tuned model as alpha scales the fine-tuning component."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional, Sequence

from interp.analyses.unit import Analysis, Arg, Bos, Opt, settings_of, write
from interp.data.tokens import BOS_DEFAULT
from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.results import Results

DEFAULT_ALPHAS = ("0", "0.25", "0.5", "0.75", "1", "1.25")
SETS = {"a": "", "b": "_b"}  # prompt set -> suffix of its tensor and summary names


@dataclass(frozen=True)
class Spec:
    """Tuning Contribution of each prompt (fine-tuning's share of the last token's residual update) and FTC scaling."""

    base: Annotated[Path, Arg("Pre-trained checkpoint directory.")]
    ft: Annotated[Path, Arg("Fine-tuned checkpoint directory (same architecture).")]
    prompts: Annotated[Path, Opt('Prompts: JSONL of {"prompt": str}, or one per line.', ("--prompts",))]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    prompts_b: Annotated[Optional[Path], Opt("A second prompt set (AUC against the first).", ("--prompts-b",))] = None
    alphas: Annotated[tuple[str, ...], Opt("FTC scale to sweep (repeatable): a number, or one per layer as "
                                           f"1,1,0.5,0.5. Default: {' '.join(DEFAULT_ALPHAS)}.",
                                           ("--alpha",))] = DEFAULT_ALPHAS
    behaviour_prefixes: Annotated[tuple[str, ...], Opt("A continuation starting with this shows the behaviour "
                                                       "(repeatable); default: the zoo's refusal test.",
                                                       ("--behaviour-prefix",))] = ()
    max_new_tokens: Annotated[int, Opt("Greedy tokens generated per prompt and alpha.")] = 16
    batch_size: Annotated[int, Opt("Prompts per batch.")] = 16
    bos: Bos = BOS_DEFAULT
    device: Annotated[str, Opt("torch device, e.g. cpu or cuda.")] = "cpu"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


def parse_alpha(text: str) -> float | list[float]:
    """`0.5` (every layer) or `1,1,0.5,0.5` (one value per layer)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as err:
        raise InterpError(f"--alpha {text!r} is not a number or a comma-separated list of numbers",
                          fix="write e.g. --alpha 0.5 or --alpha 1,1,0.5,0.5 (one per layer)") from err
    return values[0] if len(values) == 1 else values


def behaviour_test(prefixes: Sequence[str]) -> tuple[Callable[[str], bool], str]:
    """Whether a continuation shows the behaviour: starts with one of `prefixes`, else the default data source's
    refusal judge (the zoo's)."""
    if prefixes:
        return (lambda text: text.strip().startswith(tuple(prefixes))), "behaviour rate"
    from interp.data.sources import source

    return source().judge, "refusal rate"


def check_options(alphas: Sequence[str], behaviour_prefixes: Sequence[str], max_new_tokens: int,
                  batch_size: int) -> list[float | list[float]]:
    """The parsed alphas, once every option is known to be usable: finite alphas, none twice, non-empty prefixes."""
    from interp.options import check_range

    if not alphas:
        raise InterpError("no alpha to sweep", fix=f"pass --alpha (default: {' '.join(DEFAULT_ALPHAS)})")
    parsed = [parse_alpha(a) for a in alphas]
    seen: set[tuple[float, ...]] = set()
    for text, value in zip(alphas, parsed):
        values = tuple(value) if isinstance(value, list) else (value,)
        for v in values:
            check_range("--alpha", v)
        if values in seen:
            raise InterpError(f"--alpha {text} is given twice", fix="sweep each alpha once")
        seen.add(values)
    if any(not prefix for prefix in behaviour_prefixes):
        raise InterpError("--behaviour-prefix '' matches every continuation", fix="give the prefix some text")
    check_range("--max-new-tokens", max_new_tokens, 1)
    check_range("--batch-size", batch_size, 1)
    return parsed


def run(spec: Spec) -> Results:
    """Compute TuCo for one or two prompt sets, sweep alpha, and write the results directory.

    Everything is checked before any model is loaded: --out, the options, the prompt files (every prompt, with the
    tokens generated after it, within the context), both checkpoints (`verify_checkpoint`) and their compatibility.
    """
    import torch

    from interp.analyses.pairs import check_pair
    from interp.data.prompts import read_prompts
    from interp.base_vs_post.tuco import alpha_sweep, auc, check_prompts, layer_alphas, tuco_texts
    from interp.base_vs_post.tuco import check_pair as check_blocks
    from interp.loading import load, load_tokenizer
    from interp.models.auto_backend import require_native
    from interp.outdir import check_out
    from interp.results import input_identity

    s, settings = spec, settings_of(spec)
    out = check_out(s.out, UNIT.name, settings, s.force)
    parsed = check_options(s.alphas, s.behaviour_prefixes, s.max_new_tokens, s.batch_size)
    files = {"a": s.prompts} | ({"b": s.prompts_b} if s.prompts_b is not None else {})
    sets = {key: read_prompts(file) for key, file in files.items()}
    shape = check_pair(s.base, s.ft, s.device)
    require_native(s.ft, "interp tuco", "its decomposition reruns single blocks of interp's own forward against "
                   "cached keys and values")
    for value in parsed:
        layer_alphas(value, shape.n_layers)
    tokenizer = load_tokenizer(s.ft)
    for key, texts in sets.items():  # refuses --bos of a tokenizer without a BOS token too
        check_prompts(tokenizer, texts, shape.n_ctx, s.max_new_tokens, s.bos, str(files[key]))
    base_model, ft_model = load(s.base, backend="native", device=s.device), load(s.ft, backend="native",
                                                                                 device=s.device)
    pt, tuned, tokenizer = base_model.native(), ft_model.native(), ft_model.tokenizer
    check_blocks(pt, tuned, (str(s.base), str(s.ft)))
    shows, behaviour_name = behaviour_test(s.behaviour_prefixes)

    tensors, summary = {}, {"method": "TuCo (Nuti, Franzmeyer, Henriques, ICML 2025)", "base": str(s.base),
                            "fine_tuned": str(s.ft), "alphas": list(s.alphas), "behaviour_measure": behaviour_name,
                            "behaviour_prefixes": list(s.behaviour_prefixes), "max_new_tokens": s.max_new_tokens,
                            "bos": s.bos, "bos_token": tokenizer.bos_token if s.bos else None}
    for key, texts in sets.items():
        suffix, source = SETS[key], str(files[key])
        res = tuco_texts(pt, tuned, tokenizer, texts, s.batch_size, s.bos, desc=f"TuCo {files[key].name}",
                         source=source)
        sweep = alpha_sweep(pt, tuned, tokenizer, texts, parsed, s.max_new_tokens, s.batch_size, s.bos,
                            source=source)
        rate = torch.tensor([sum(map(shows, conts)) / len(conts) for conts in sweep.continuations])
        tensors |= {f"tuco{suffix}": res.tuco, f"ptc{suffix}": res.ptc, f"ftc{suffix}": res.ftc,
                    f"output_co{suffix}": res.output_co, f"behaviour{suffix}": rate, f"kl{suffix}": sweep.kl}
        if key == "a":
            tensors["alphas"] = torch.tensor(sweep.alphas)
        summary[f"prompts{suffix}"] = {"file": source, "n": len(texts), "tuco_mean": res.tuco.mean().item(),
                                       "tuco_median": res.tuco.median().item(),
                                       "output_co_mean": res.output_co.mean().item()}
        summary[f"behaviour{suffix}"] = dict(zip(s.alphas, rate.tolist()))
        summary[f"examples{suffix}"] = {a: conts[:5] for a, conts in zip(s.alphas, sweep.continuations)}
    if "b" in sets:
        summary["auc_tuco_a_vs_b"] = auc(tensors["tuco"], tensors["tuco_b"])
        summary["auc_output_co_a_vs_b"] = auc(tensors["output_co"], tensors["output_co_b"])
    inputs = [input_identity("base", s.base), input_identity("fine_tuned", s.ft)]
    inputs += [input_identity("prompts" + SETS[key], file) for key, file in files.items()]
    return write(UNIT, out, tensors, summary, title=title(summary), axes=tensor_axes(tensors, sets, s.alphas),
                 tokenization={"bos": s.bos, "padding": "left"}, inputs=inputs, settings=settings)


def tensor_axes(tensors: dict[str, Any], sets: dict[str, list[str]], alphas: Sequence[str]) -> dict[str, Any]:
    """Per prompt set (`_b` suffix: the second): tuco and output_co [prompt], ptc and ftc [prompt, layer],
    behaviour [alpha], kl [alpha, prompt]; `alphas` [alpha, layer]. Ticks: the prompts' texts and the alphas given."""
    from interp.results import axes

    names = {"tuco": ("prompt",), "output_co": ("prompt",), "ptc": ("prompt", "layer"), "ftc": ("prompt", "layer"),
             "behaviour": ("alpha",), "kl": ("alpha", "prompt"), "alphas": ("alpha", "layer")}
    return {name: axes(*names[name.removesuffix("_b")], prompt=sets["b" if name.endswith("_b") else "a"],
                       alpha=alphas) for name in tensors}


def title(summary: dict[str, Any]) -> str:
    """"TuCo: run/fine-tuned vs run/base", with the AUC of the two prompt sets when there are two."""
    ft, base = Path(summary["fine_tuned"]), Path(summary["base"])
    text = f"TuCo: {ft.parent.name}/{ft.name} vs {base.parent.name}/{base.name}"
    if "auc_tuco_a_vs_b" in summary:
        a, b = (Path(summary[f"prompts{suffix}"]["file"]).name for suffix in SETS.values())
        text += f" (AUC {a} > {b}: {summary['auc_tuco_a_vs_b']:.3f})"
    return text


def figures(results: Results) -> list[Any]:
    """TuCo and OutputCo histograms per prompt set, the per-layer curves, and behaviour rate and KL against alpha."""
    from interp.analyses.tuco.report import alpha_curves, histograms, layer_curves, prompt_sets

    sets, s = prompt_sets(results), results.summary
    return [histograms(sets, "tuco", title(s)), histograms(sets, "output_co", "OutputCo (final states only)"),
            *layer_curves(sets), *alpha_curves(s["alphas"], sets, s["behaviour_measure"])]


UNIT = Analysis(name="tuco", title="TuCo", command=("tuco",), spec=Spec, run=run, figures=figures,
                page="interp.analyses.tuco.page", example="tuco BASE FT --prompts PROMPTS --out results/tuco")
