"""A chain of models (base -> SFT -> DPO -> RL, or any ordered list: a run's checkpoints in step order, or a
`checkpoints.json` manifest in its listed order, so base/step_001800 -> chat/step_000017 stays so) through one
registered base-vs-post analysis (`diff`, `truth`, `refusal`, `tuco`, ...): each adjacent pair (i, i+1) and each
stage against the base (0, i), every pair's own results directory under `OUT/pairs/<a>__<b>/`, and the pair
analysis's headline numbers stacked over the pairs. No new method: each pair is exactly what `interp ANALYSIS A B`
writes (run through the registry), so the chain's numbers are the pairs' numbers.

A pair whose directory already holds finished results of the same analysis and settings, made from inputs whose
content hashes are unchanged, is reused; anything else in it is refused before any compute (`interp.outdir`), or
replaced with --force.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from interp.analyses.unit import Analysis, Arg, Opt, Revisions, cli_form, settings_of, write
from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.checkpoints import Checkpoint
    from interp.results import Results

PAIR_FIELDS = (("base", "post"), ("base", "ft"))  # a Spec with one of these field pairs is a base-vs-post analysis
PAIRS_DIR = "pairs"
# Per pair analysis: headline tensor name -> its key path in the pair's summary.json. One absent from any pair's
# summary (tuco's AUCs without --prompts-b) is left out; an analysis not listed gets its top-level numbers.
HEADLINES: dict[str, dict[str, tuple[str, ...]]] = {
    "diff": {"mean_kl_base_post": ("mean_kl", "base||post"), "mean_kl_post_base": ("mean_kl", "post||base")},
    "truth": {"cosine_at_probe_layer": ("cosine_at_probe_layer",),
              "nie_base_dir_in_post": ("nie", "base_dir_in_post", "average"),
              "nie_post_dir_in_post": ("nie", "post_dir_in_post", "average")},
    "refusal": {"cosine_at_layer": ("cosine_at_layer",), "refusal_rate_post": ("baseline", "post", "harmful"),
                "ablation_base_dir_in_post": ("ablation_harmful", "base_dir_in_post"),
                "ablation_post_dir_in_post": ("ablation_harmful", "post_dir_in_post"),
                "addition_post_dir_in_post": ("addition_harmless", "post_dir_in_post")},
    "tuco": {"tuco_mean": ("prompts", "tuco_mean"), "output_co_mean": ("prompts", "output_co_mean"),
             "auc_tuco_a_vs_b": ("auc_tuco_a_vs_b",), "auc_output_co_a_vs_b": ("auc_output_co_a_vs_b",)},
    "knowledge": {"pearson_base_post": ("correlations", "pearson_base_post"),
                  "pearson_base_post_normalized": ("correlations", "pearson_base_post_normalized")},
}


@dataclass(frozen=True)
class Spec:
    """One base-vs-post analysis over a chain of models: each adjacent pair and each stage against the first.

    Writes OUT/pairs/<a>__<b>/ (the pair analysis's own results directory, one per pair) and one tensor per headline
    number of the pair analysis's summary.json (diff: mean KL both ways; truth, refusal: direction cosines and
    intervention effects; tuco: mean TuCo and AUCs) [pair], the pairs in order: (0,1), (1,2), ..., then (0,2), ...
    """

    analysis: Annotated[str, Arg("The base-vs-post analysis run on every pair: diff, truth, refusal, tuco or "
                                 "knowledge.")]
    run: Annotated[Path, Arg("The chain: a run directory (checkpoints in step order), a directory whose "
                             "checkpoints.json lists the stages (read in its listed order; or that file), or a hub "
                             "id.")]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    set: Annotated[tuple[str, ...], Opt("A setting of the pair analysis as KEY=VALUE, KEY its option name "
                                        "(prompts, top-k, no-bos...); repeatable, a list setting takes every "
                                        "value given. E.g. --set prompts=p.txt.", ("--set",))] = ()
    revisions: Revisions = None
    force: Annotated[bool, Opt("Replace what --out holds (and recompute every pair).", ("--force",))] = False


@dataclass(frozen=True)
class Pair:
    """One compared pair of the chain: its checkpoints' indices, label `<a>__<b>` and what kind of pair it is."""

    a: int
    b: int
    label: str
    kind: str  # "adjacent", "vs base", or both for (0, 1)


def pair_fields(unit: Analysis) -> tuple[str, str] | None:
    """The (base, post) field names of a base-vs-post analysis's Spec, else None."""
    fields = {f.name for f in unit.fields()}
    return next((p for p in PAIR_FIELDS if set(p) <= fields), None)


def pair_unit(name: str) -> tuple[Analysis, tuple[str, str]]:
    """The registered analysis `name` and its (base, post) field names; an `InterpError` unless it compares a pair."""
    from interp.analyses import analyses, analysis

    unit = analysis(name)
    pair = pair_fields(unit)
    if pair is None or name == UNIT.name:
        paired = [u.name for u in analyses().values() if pair_fields(u)]
        raise InterpError(f"{name!r} is not a base-vs-post analysis, so it cannot run over a chain of models",
                          fix=f"use one of {', '.join(paired)}")
    return unit, pair


def field_type(spec: type, name: str) -> tuple[Any, bool]:
    """(the type one value of a Spec field parses to, whether the field takes a list), Optional unwrapped."""
    kind = cli_form(spec, name)[0]
    if typing.get_origin(kind) in (tuple, list):
        return typing.get_args(kind)[0], True
    if typing.get_origin(kind) is typing.Union:
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    return kind, False


def parse_value(key: str, text: str, kind: Any) -> Any:
    """`text` as `kind` by the command line's own converters (click's, which the generated commands use)."""
    import click

    try:
        return click.types.convert_type(kind).convert(text, None, None)
    except (click.BadParameter, ValueError, TypeError) as err:
        raise InterpError(f"--set {key}={text}: {text!r} is not a valid {getattr(kind, '__name__', kind)}",
                          fix=f"give {key} a value of type {getattr(kind, '__name__', kind)}") from err


def setting_keys(unit: Analysis, allowed: list[str]) -> dict[str, tuple[str, bool]]:
    """What `--set KEY` may say -> (the Spec field, whether KEY negates it): the field's name (with - or _) and its
    command-line flags without dashes (`alpha` for tuco's alphas); `no-NAME` for a bool field (`no-bos`)."""
    keys = {}
    for name in allowed:
        flags = [f.lstrip("-") for flag in getattr(cli_form(unit.spec, name)[1], "flags", ()) for f in flag.split("/")]
        keys |= {key: (name, False) for key in (name, name.replace("_", "-"), *flags[:1])}
        if field_type(unit.spec, name)[0] is bool:
            keys |= {key: (name, True) for key in (f"no-{name.replace('_', '-')}", f"no_{name}", *flags[1:])}
    return keys


def parse_sets(unit: Analysis, pair: tuple[str, str], items: tuple[str, ...]) -> dict[str, Any]:
    """The pair analysis's settings from `--set KEY=VALUE` items (KEY: `setting_keys`; a bool alone as `KEY` or
    `no-KEY`), each a field of its Spec other than the pair, --out and --force, parsed to the field's type; none
    given twice but a list's, whose values are collected in order; every setting without a default given."""
    allowed = [f.name for f in unit.fields() if f.name not in (*pair, "out", "force")]
    keys = setting_keys(unit, allowed)
    settings: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if key.strip() not in keys:
            raise InterpError(f"--set {key}: `interp {' '.join(unit.command)}` has no setting {key!r}",
                              fix=f"use one of {', '.join(a.replace('_', '-') for a in allowed)}")
        name, negated = keys[key.strip()]
        kind, many = field_type(unit.spec, name)
        if eq and negated or not eq and kind is not bool:
            raise InterpError(f"--set {item!r} is not KEY=VALUE", fix=f"write --set {name.replace('_', '-')}=VALUE")
        value = parse_value(key, text, kind) if eq else not negated
        if name in settings and not many:
            raise InterpError(f"--set {key} is given twice", fix="give each setting once")
        settings[name] = (*settings.get(name, ()), value) if many else value
    missing = [f.name for f in unit.fields() if f.name not in (*pair, "out", *settings)
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InterpError(f"`interp {' '.join(unit.command)}` needs {', '.join(missing)}",
                          fix=" ".join(f"--set {m.replace('_', '-')}=..." for m in missing))
    return settings


def chain_pairs(checkpoints: tuple[Checkpoint, ...]) -> list[Pair]:
    """Each adjacent pair (i, i+1) in order, then each stage against the base (0, i) for i >= 2."""
    labels = [c.label for c in checkpoints]
    if len(set(labels)) < len(labels):
        raise InterpError(f"the chain names two checkpoints alike ({', '.join(labels)})",
                          fix="give each stage a distinct directory name or step in checkpoints.json")
    order = [(i, i + 1) for i in range(len(labels) - 1)] + [(0, i) for i in range(2, len(labels))]
    return [Pair(a, b, f"{labels[a]}__{labels[b]}", "adjacent, vs base" if a == 0 and b == 1
                 else "adjacent" if b == a + 1 else "vs base") for a, b in order]


def open_chain(path: Path, revisions: str | None) -> tuple[Checkpoint, ...]:
    """The chain's checkpoints in order (a manifest's as listed), each verified and all compatible; a manifest file
    stands for its directory."""
    from interp.checkpoints import MANIFEST, Run

    where = path.parent if path.name == MANIFEST and path.is_file() else path
    checkpoints = Run.verified(where, revisions).checkpoints
    if len(checkpoints) < 2:
        raise InterpError(f"{path} holds one checkpoint, and a chain compares at least two",
                          fix="point at a run directory or manifest listing two or more checkpoints in order")
    return checkpoints


def is_finished(out: Path, name: str, settings: dict[str, Any]) -> bool:
    """Whether `out` holds `name`'s finished results of `settings`, every recorded input's content unchanged."""
    import json

    from interp.outdir import SUMMARY_FILE, settings_hash
    from interp.results import input_identity

    try:
        summary = json.loads((out / SUMMARY_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (summary.get("analysis") == name and summary.get("settings_sha256") == settings_hash(settings)
            and all(Path(e["path"]).exists() and input_identity(e["role"], e["path"])["sha256"] == e["sha256"]
                    for e in summary.get("inputs", [])))


@dataclass(frozen=True)
class Plan:
    """What `plan` checked: the chain's directory, its checkpoints, the pair analysis and one Spec per pair."""

    out: Path
    unit: Analysis
    checkpoints: tuple[Checkpoint, ...]
    pairs: list[Pair]
    specs: list[Any]
    given: dict[str, Any]


def plan(s: Spec) -> Plan:
    """Every check before any compute: --out, the analysis, the --set values, the chain's checkpoints, and each
    pair's directory (its own `check_out`)."""
    from interp.outdir import check_out

    out = check_out(s.out, UNIT.name, settings_of(s), s.force)
    unit, (base, post) = pair_unit(s.analysis)
    given = parse_sets(unit, (base, post), s.set)
    checkpoints = open_chain(s.run, s.revisions)
    pairs = chain_pairs(checkpoints)
    specs = [unit.spec(**{base: checkpoints[p.a].path, post: checkpoints[p.b].path, "out": out / PAIRS_DIR / p.label,
                          "force": s.force, **given}) for p in pairs]
    for spec in specs:
        check_out(spec.out, unit.name, settings_of(spec), s.force)
    return Plan(out, unit, checkpoints, pairs, specs, given)


def run(spec: Spec) -> Results:
    """Check everything, run (or reuse) each pair through the registry, then write the headlines over the pairs.

    The pair analysis's own checks of its data (files, context lengths) run in the first pair, before its compute and
    before anything is written; they hold for every pair, whose checkpoints `plan` found compatible."""
    from interp.analyses import run as run_analysis
    from interp.outdir import write_partial_settings
    from interp.results import read_results

    p = plan(spec)
    done = []
    for pair_spec in p.specs:
        reuse = not spec.force and is_finished(pair_spec.out, p.unit.name, settings_of(pair_spec))
        done.append(read_results(pair_spec.out) if reuse else run_analysis(p.unit.name, **vars(pair_spec)))
        write_partial_settings(p.out, UNIT.name, settings_of(spec))  # an interrupted chain resumes into this --out
    return write_chain(spec, p, done)


def leaf(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a key path of a summary, None where any key is absent."""
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def is_number(value: Any) -> bool:
    """A finite JSON number (not a bool; non-finite numbers are written as null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def headline_paths(name: str, summary: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The headline numbers of analysis `name` (`HEADLINES`), else every top-level number of its `summary`."""
    return HEADLINES.get(name) or {k: (k,) for k, v in summary.items() if is_number(v)}


def headlines(name: str, summaries: list[dict[str, Any]]) -> tuple[dict[str, list[float]], list[str]]:
    """({headline: its value in each pair's summary}, the headlines left out: not a number in every pair)."""
    kept, left_out = {}, []
    for key, path in headline_paths(name, summaries[0]).items():
        values = [leaf(s, path) for s in summaries]
        if all(map(is_number, values)):
            kept[key] = [float(v) for v in values]
        elif any(v is not None for v in values):
            left_out.append(key)
    return kept, left_out


def write_chain(spec: Spec, p: Plan, done: list[Results]) -> Results:
    """The chain's own results (headline tensors [pair], the pairs and their directories), swapped into --out whole
    with the pairs' directories carried over."""
    import shutil

    import torch

    from interp.analyses.unit import absolute
    from interp.checkpoints import run_location
    from interp.outdir import replace_dir, scratch_dir
    from interp.results import axes, input_identity, read_results

    kept, left_out = headlines(p.unit.name, [r.summary for r in done])
    paths = headline_paths(p.unit.name, done[0].summary)
    labels = [pair.label for pair in p.pairs]
    tensors = {key: torch.tensor(values, dtype=torch.float64) for key, values in kept.items()}
    summary = {"method": f"`{p.unit.name}` over a chain of models: each adjacent pair and each stage against the base",
               "pair_analysis": p.unit.name, "chain": run_location(spec.run),
               "checkpoints": [{"label": c.label, "path": str(c.path), "step": c.step} for c in p.checkpoints],
               "pairs": [{"label": pair.label, "base": p.checkpoints[pair.a].label,
                          "post": p.checkpoints[pair.b].label, "kind": pair.kind, "dir": f"{PAIRS_DIR}/{pair.label}"}
                         for pair in p.pairs],
               "pair_settings": {k: absolute(v) for k, v in p.given.items()},
               "headlines": {key: ".".join(paths[key]) for key in kept}, "headlines_left_out": left_out}
    inputs = [input_identity("checkpoint", c.path, step=c.step) for c in p.checkpoints]
    stage = scratch_dir(p.out)
    try:
        staged = write(UNIT, stage / "chain", tensors, summary, title=f"{p.unit.title} over a chain of models",
                       axes={key: axes("pair", pair=labels) for key in tensors}, inputs=inputs,
                       tokenization=done[0].summary.get("tokenization", {"bos": None, "padding": None}),
                       settings=settings_of(spec))
        replace_dir(staged.path, p.out, keep=(PAIRS_DIR,))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return read_results(p.out)


def figures(results: Results) -> list[Any]:
    """One line per headline over the pairs (adjacent pairs first, then each stage against the base)."""
    from interp.analyses.widgets import lines

    s = results.summary
    labels = [pair["label"] for pair in s["pairs"]]
    return [lines({key: results.tensors[key]}, labels, f"{key} ({s['pair_analysis']}: {path})", "pair", key)
            for key, path in s["headlines"].items()]


UNIT = Analysis(name="chain", title="Chain of models", command=("chain",), spec=Spec, run=run, figures=figures,
                page="interp.analyses.chain.page",
                example="chain diff RUN --set prompts=PROMPTS --out results/chain")
