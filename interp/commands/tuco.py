"""`interp tuco BASE FT --prompts FILE`: the Tuning Contribution of each prompt (Nuti et al. 2025) and FTC scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer

from interp.cli import app
from interp.errors import InterpError

DEFAULT_ALPHAS = ("0", "0.25", "0.5", "0.75", "1", "1.25")


def parse_alpha(text: str) -> float | list[float]:
    """`0.5` (every layer) or `1,1,0.5,0.5` (one value per layer)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as err:
        raise InterpError(f"--alpha {text!r} is not a number or a comma-separated list of numbers",
                          fix="write e.g. --alpha 0.5 or --alpha 1,1,0.5,0.5 (one per layer)") from err
    return values[0] if len(values) == 1 else values


def behaviour_test(prefixes: Sequence[str]) -> tuple[Callable[[str], bool], str]:
    """Whether a continuation shows the behaviour: starts with one of `prefixes`, else the zoo's refusal test."""
    if prefixes:
        return (lambda text: text.strip().startswith(tuple(prefixes))), "behaviour rate"
    from interp.zoo.data import is_refusal

    return is_refusal, "refusal rate"


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


def run_tuco(base: Path, ft: Path, prompts: Path, out: Path, prompts_b: Path | None = None,
             alphas: Sequence[str] = DEFAULT_ALPHAS, behaviour_prefixes: Sequence[str] = (), max_new_tokens: int = 16,
             batch_size: int = 16, prepend_bos: bool = False, device: str = "cpu", force: bool = False) -> Path:
    """Compute TuCo for one or two prompt sets, sweep alpha, and write the results directory.

    Everything is checked before any model is loaded: --out, the options, the prompt files (every prompt, with the
    tokens generated after it, within the context), both checkpoints (`verify_checkpoint`) and their compatibility.
    """
    import torch

    from interp.checkpoints import check_compatible, read_summary
    from interp.base_vs_post.prompts import read_prompts
    from interp.base_vs_post.tuco import alpha_sweep, auc, check_pair, check_prompts, layer_alphas, tuco_texts
    from interp.base_vs_post.tuco_report import alpha_curves, histograms, layer_curves
    from interp.models.auto_backend import require_native
    from interp.loading import load, load_tokenizer, resolve_device, verify_checkpoint
    from interp.outdir import check_out
    from interp.results import input_identity, write_results

    settings = {"base": _absolute(base), "fine_tuned": _absolute(ft), "prompts": _absolute(prompts),
                "prompts_b": _absolute(prompts_b), "alphas": list(alphas),
                "behaviour_prefixes": list(behaviour_prefixes), "max_new_tokens": max_new_tokens,
                "prepend_bos": prepend_bos}
    check_out(out, "tuco", settings, force)
    parsed = check_options(alphas, behaviour_prefixes, max_new_tokens, batch_size)
    device_ = resolve_device(device)
    files = {"a": prompts} | ({"b": prompts_b} if prompts_b is not None else {})
    sets = {key: read_prompts(file) for key, file in files.items()}
    names = {"a": prompts.name, "b": prompts_b.name if prompts_b is not None else ""}
    for path in (base, ft):
        verify_checkpoint(path)
    check_compatible(base, ft)
    require_native(ft, "interp tuco", "its decomposition reruns single blocks of interp's own forward against cached "
                   "keys and values")
    shape = read_summary(ft)
    for value in parsed:
        layer_alphas(value, shape.n_layers)
    tokenizer = load_tokenizer(ft)
    for key, texts in sets.items():
        check_prompts(tokenizer, texts, shape.n_ctx, max_new_tokens, prepend_bos, str(files[key]))
    base_model, ft_model = load(base, backend="native", device=device_), load(ft, backend="native", device=device_)
    pt, tuned, tokenizer = base_model.native(), ft_model.native(), ft_model.tokenizer
    check_pair(pt, tuned, (str(base), str(ft)))
    shows, behaviour_name = behaviour_test(behaviour_prefixes)

    results, sweeps, tensors = {}, {}, {}
    for key, texts in sets.items():
        suffix = "" if key == "a" else "_b"
        res = tuco_texts(pt, tuned, tokenizer, texts, batch_size, prepend_bos, desc=f"TuCo {names[key]}",
                         source=str(files[key]))
        sweep = alpha_sweep(pt, tuned, tokenizer, texts, parsed, max_new_tokens, batch_size, prepend_bos,
                            source=str(files[key]))
        results[key], sweeps[key] = res, sweep
        rate = torch.tensor([sum(map(shows, conts)) / len(conts) for conts in sweep.continuations])
        tensors |= {f"tuco{suffix}": res.tuco, f"ptc{suffix}": res.ptc, f"ftc{suffix}": res.ftc,
                    f"output_co{suffix}": res.output_co, f"behaviour{suffix}": rate, f"kl{suffix}": sweep.kl}
    tensors["alphas"] = torch.tensor(sweeps["a"].alphas)

    summary = {"method": "TuCo (Nuti, Franzmeyer, Henriques, ICML 2025)", "base": str(base), "fine_tuned": str(ft),
               "alphas": list(alphas), "behaviour_measure": behaviour_name,
               "behaviour_prefixes": list(behaviour_prefixes), "max_new_tokens": max_new_tokens,
               "prepend_bos": prepend_bos}
    for key, res in results.items():
        suffix = "" if key == "a" else "_b"
        summary[f"prompts{suffix}"] = {"file": str(files[key]), "n": len(sets[key]),
                                       "tuco_mean": res.tuco.mean().item(), "tuco_median": res.tuco.median().item(),
                                       "output_co_mean": res.output_co.mean().item()}
        summary[f"behaviour{suffix}"] = dict(zip(alphas, tensors[f"behaviour{suffix}"].tolist()))
        summary[f"examples{suffix}"] = {a: conts[:5] for a, conts in zip(alphas, sweeps[key].continuations)}
    labelled = {names[k] or k: r for k, r in results.items()}
    title = f"TuCo: {ft.parent.name}/{ft.name} vs {base.parent.name}/{base.name}"
    if "b" in results:
        summary["auc_tuco_a_vs_b"] = auc(results["a"].tuco, results["b"].tuco)
        summary["auc_output_co_a_vs_b"] = auc(results["a"].output_co, results["b"].output_co)
        title += f" (AUC {names['a']} > {names['b']}: {summary['auc_tuco_a_vs_b']:.3f})"
    figures = [histograms(labelled, title), histograms(labelled, "OutputCo (final states only)", output_co=True),
               *layer_curves(labelled),
               *alpha_curves(list(alphas), {names[k] or k: tensors["behaviour" + ("" if k == "a" else "_b")]
                                            for k in results},
                             {names[k] or k: sweeps[k].kl for k in results}, behaviour_name)]
    inputs = [input_identity("base", base), input_identity("fine_tuned", ft)]
    inputs += [input_identity("prompts" if key == "a" else "prompts_b", file) for key, file in files.items()]
    return write_results(out, tensors, summary, figures, title=title, analysis="tuco",
                         axes=tensor_axes(tensors, sets, alphas), tokenization={"bos": prepend_bos, "padding": "left"},
                         inputs=inputs, settings=settings)


def tensor_axes(tensors: dict[str, Any], sets: dict[str, list[str]], alphas: Sequence[str]) -> dict[str, Any]:
    """Per prompt set (`_b` suffix: the second): tuco and output_co [prompt], ptc and ftc [prompt, layer],
    behaviour [alpha], kl [alpha, prompt]; `alphas` [alpha, layer]. Ticks: the prompts' texts and the alphas given."""
    from interp.results import axes

    names = {"tuco": ("prompt",), "output_co": ("prompt",), "ptc": ("prompt", "layer"), "ftc": ("prompt", "layer"),
             "behaviour": ("alpha",), "kl": ("alpha", "prompt"), "alphas": ("alpha", "layer")}
    return {name: axes(*names[name.removesuffix("_b")], prompt=sets["b" if name.endswith("_b") else "a"],
                       alpha=alphas) for name in tensors}


def _absolute(path: Path | None) -> str | None:
    """A path as the absolute string `settings` records (so ./x and x are one setting)."""
    return None if path is None else str(path.expanduser().resolve())


@app.command()
def tuco(
    base: Path = typer.Argument(..., help="Pre-trained checkpoint directory."),
    ft: Path = typer.Argument(..., help="Fine-tuned checkpoint directory (same architecture)."),
    prompts: Path = typer.Option(..., "--prompts", help='Prompts: JSONL of {"prompt": str}, or one per line.'),
    out: Path = typer.Option(..., "--out", help="Results directory to write."),
    prompts_b: Optional[Path] = typer.Option(None, "--prompts-b", help="A second prompt set (AUC against the first)."),
    alpha: Optional[list[str]] = typer.Option(
        None, "--alpha", help="FTC scale to sweep (repeatable): a number, or one per layer as 1,1,0.5,0.5. "
                              f"Default: {' '.join(DEFAULT_ALPHAS)}."),
    behaviour_prefix: Optional[list[str]] = typer.Option(
        None, "--behaviour-prefix", help="A continuation starting with this shows the behaviour (repeatable); "
                                         "default: the zoo's refusal test."),
    max_new_tokens: int = typer.Option(16, help="Greedy tokens generated per prompt and alpha."),
    batch_size: int = typer.Option(16, help="Prompts per batch."),
    prepend_bos: bool = typer.Option(False, help="Prepend the tokenizer's BOS token to every prompt."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Tuning Contribution of each prompt (fine-tuning's share of the last token's residual update) and FTC scaling."""
    path = run_tuco(base, ft, prompts, out, prompts_b, alpha or DEFAULT_ALPHAS, behaviour_prefix or (),
                    max_new_tokens, batch_size, prepend_bos, device, force)
    typer.echo(f"wrote {path}")
