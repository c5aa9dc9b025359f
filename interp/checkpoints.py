"""Training runs: find a run directory's checkpoints, in training order; load them lazily; refuse mismatched ones.

A checkpoint is a Hugging Face directory (`config.json`, weights, tokenizer). A run directory holds checkpoints named
as published suites name them: `stepN` (Pythia), `step_N` / `step-N` (OLMo-2-Instruct), `stageK-stepN-tokensNB` and
`stageK-ingredientJ-stepN-tokensNB` (OLMo: ordered by stage, then step, then ingredient; tokens seen kept),
`ckpt_NNN` (LLM360 Amber), `checkpoint-N` (Hugging Face Trainer), `global_stepN` (DeepSpeed). A step-named directory
may instead hold a Hugging Face cache of that revision (Pythia's README: `from_pretrained(..., revision="step3000",
cache_dir="RUN/step3000")`); its snapshot is the checkpoint. A run may list its checkpoints instead, in a
`checkpoints.json` manifest: `{"checkpoints": [{"path": "relative/or/absolute", "step": 100}, ...]}` (a bare list
also works; `step` optional, else read from the directory name). A manifest is read in its listed order, which every
sweep and chain keeps (a chain base/step_001800 -> chat/step_000017 is not re-sorted by step); only checkpoints of one
directory listed against their training order are refused, a mistake rather than a statement. Or in a
`checkpoints.csv` catalogue as OLMo publishes them (`Step,Checkpoint Directory` rows, the directory a URL or path; a
`path`, `directory` or `revision` column works too): each row is found in the run directory by its path or its last
path component (`step1000-unsharded`), rows not downloaded are skipped, and the rest sorted by step. A single
checkpoint directory is a run of one; a directory that is a checkpoint and also holds step-named ones (a Hugging Face
Trainer output directory) is read as the run of those.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

from interp.errors import InterpError, warn

if TYPE_CHECKING:
    from interp.models.hooked import HookedModel, ModelSummary

MANIFEST = "checkpoints.json"
CATALOGUE = "checkpoints.csv"
CONFIG = "config.json"
_NAMES = tuple(re.compile(pattern) for pattern in (
    r"(?:stage(?P<stage>\d+)-(?:ingredient(?P<ingredient>\d+)-)?)?step[_-]?(?P<step>\d+)"
    r"(?:-tokens(?P<tokens>\d+)(?P<unit>[KMBT]))?",
    r"checkpoint-(?P<step>\d+)", r"global_step(?P<step>\d+)", r"ckpt_(?P<step>\d+)"))
_TOKEN_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_CATALOGUE_WHERE = ("checkpoint directory", "directory", "path", "revision")
_NAMING_FIX = (f"point at a checkpoint directory (with {CONFIG}) or at a run directory holding stepN / checkpoint-N / "
               f"stageK-stepN-tokensNB / ckpt_N sub-directories or a {MANIFEST} manifest")


class Name(NamedTuple):
    """What a checkpoint's name says: its step, and the tokens seen, stage and ingredient where it says them."""

    step: int
    tokens: int | None = None
    stage: int | None = None
    ingredient: int | None = None


def parse_name(name: str) -> Name | None:
    """The training position in a checkpoint or revision name (`step1000`, `stage2-ingredient1-step500-tokens3B`,
    `ckpt_356`, ...), else None."""
    for pattern in _NAMES:
        match = pattern.fullmatch(name)
        if match:
            fields = match.groupdict()
            tokens = int(fields["tokens"]) * _TOKEN_UNITS[fields["unit"]] if fields.get("tokens") else None
            stage, ingredient = (int(fields[k]) if fields.get(k) else None for k in ("stage", "ingredient"))
            return Name(int(fields["step"]), tokens, stage, ingredient)
    return None


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint directory name (`checkpoint-100`, `step_000300`, ...), else None."""
    parsed = parse_name(name)
    return parsed.step if parsed else None


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint directory of a run: its step (None when unknown), the run's name, the tokens seen, stage and
    ingredient where its name says them, and the Hugging Face revision when the directory is a cache snapshot."""

    path: Path
    step: int | None
    run: str
    tokens: int | None = None
    stage: int | None = None
    ingredient: int | None = None
    revision: str | None = None

    @classmethod
    def named(cls, path: Path, name: str, run: str, step: int | None = None,
              revision: str | None = None) -> "Checkpoint":
        """The checkpoint at `path`, placed in training by `name` (a listed `step` wins over the name's)."""
        parsed = parse_name(name)
        fields: dict[str, Any] = parsed._asdict() if parsed else {"step": None}
        if step is not None:
            fields["step"] = step
        return cls(path, run=run, revision=revision, **fields)

    @property
    def name(self) -> str:
        """The revision it was found under, else its directory name."""
        return self.revision or self.path.name

    @property
    def label(self) -> str:
        """Short name for tables and file names: `step_000300` (`stage2-ingredient1-step_000300`), or the name when
        the step is unknown."""
        if self.step is None:
            return self.name
        parts = [f"stage{self.stage}" if self.stage is not None else "",
                 f"ingredient{self.ingredient}" if self.ingredient is not None else "", f"step_{self.step:06d}"]
        return "-".join(part for part in parts if part)


def is_checkpoint_dir(path: Path) -> bool:
    """Whether `path` looks like a Hugging Face checkpoint directory (has a config.json) or a PEFT adapter directory
    (has adapter_config.json: its base plus the adapter make the model)."""
    from interp.loading import is_adapter

    return (path / CONFIG).is_file() or is_adapter(path)


def is_model(path: str | Path) -> bool:
    """Whether `path` names a model: a checkpoint or adapter directory, or a hub id (found in the cache on use)."""
    from interp.hub import is_hub_id

    return is_checkpoint_dir(Path(path).expanduser()) or is_hub_id(str(path))


def checkpoint_in(path: Path) -> Path | None:
    """The checkpoint directory `path` stands for: itself, or the snapshot of the Hugging Face cache it holds
    (Pythia's `cache_dir=RUN/step3000` layout, by the ref named like `path`); None when it is neither."""
    if is_checkpoint_dir(path):
        return path
    from interp.hub import snapshot_in

    return snapshot_in(path, path.name)


def _found(path: Path, run: str, step: int | None = None) -> Checkpoint | None:
    """The checkpoint `path` stands for, named by `path`'s name, or None."""
    where = checkpoint_in(path)
    return Checkpoint.named(where, path.name, run, step, None if where == path else path.name) if where else None


def discover(path: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run directory in training order (a manifest's as listed), or `[that checkpoint]` for a
    single checkpoint."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InterpError(f"{root} does not exist", fix="check the path (typo? not downloaded or trained yet?)")
    if not root.is_dir():
        raise InterpError(f"{root} is a file, not a checkpoint or run directory", fix=_NAMING_FIX)
    root = root.resolve()
    found = _listed(root)
    if found is None:
        found = in_order([c for sub in sorted(root.iterdir()) if sub.is_dir() and parse_name(sub.name)
                          for c in [_found(sub, root.name)] if c], str(root))
    if found:
        return found
    alone = _found(root, root.parent.name if parse_name(root.name) else root.name)
    if alone is None:
        raise _unordered(root)
    return [alone]


def _listed(root: Path) -> list[Checkpoint] | None:
    """The checkpoints `root`'s manifest (in listed order) or catalogue (in step order) lists, or None when it has
    neither (the manifest wins)."""
    if (root / MANIFEST).is_file():
        return _from_manifest(root)
    if (root / CATALOGUE).is_file():
        return _from_catalogue(root)
    return None


def _unordered(root: Path) -> InterpError:
    """The error for a directory that is no checkpoint and holds none it can order: what it found, the manifest to
    write."""
    unnamed = [sub.name for sub in sorted(root.iterdir()) if sub.is_dir() and checkpoint_in(sub)]
    message = f"{root} is not a checkpoint (no {CONFIG}) and holds no checkpoints it can order"
    if not unnamed:
        return InterpError(message, fix=_NAMING_FIX)
    shown = unnamed[:6]
    example = json.dumps({"checkpoints": [{"path": name, "step": i} for i, name in enumerate(shown)]})
    more = f" and {len(unnamed) - len(shown)} more" if len(unnamed) > len(shown) else ""
    return InterpError(f"{message}: found {', '.join(shown)}{more}, whose names carry no step",
                       fix=f"rename them stepN / checkpoint-N, or write {root / MANIFEST} listing them with their "
                           f"training steps in place of 0, 1, ...: {example}")


def _from_manifest(root: Path) -> list[Checkpoint]:
    """Checkpoints listed in `root/checkpoints.json`, in listed order; paths are relative to `root` unless absolute."""
    manifest = root / MANIFEST
    found: list[Checkpoint] = []
    last_in: dict[Path, Checkpoint] = {}  # directory -> the checkpoint of it listed last
    for entry in _manifest_entries(manifest):
        sub = (root / entry["path"]).resolve()
        ckpt = _found(sub, root.name, entry.get("step"))
        if ckpt is None:
            raise InterpError(f"{manifest} lists {entry['path']}, which is not a checkpoint directory ({sub / CONFIG} "
                              f"missing)", fix=f"fix or remove that entry of {manifest}")
        _check_listed_after(manifest, last_in.get(sub.parent), ckpt, sub.parent)
        found.append(ckpt)
        last_in[sub.parent] = ckpt
    return distinct(found, str(root))


def _check_listed_after(manifest: Path, earlier: Checkpoint | None, ckpt: Checkpoint, run: Path) -> None:
    """Refuse `ckpt` listed after a checkpoint of its own directory `run` that is later in training: a sweep would
    read that run backwards. Stages in other directories (base/ then chat/) may go back in step."""
    if earlier is not None and None not in (earlier.step, ckpt.step) and position(ckpt) < position(earlier):
        raise InterpError(f"{manifest} lists {ckpt.label} after {earlier.label}, both in {run}: a manifest is read "
                          f"in its listed order, and this one runs that directory backwards",
                          fix="list one directory's checkpoints in training order (or give each entry the `step` of "
                              "its place in the order you mean)")


def _manifest_entries(manifest: Path) -> list[dict[str, Any]]:
    """The validated entries of a manifest file."""
    fix = f'write {manifest} as {{"checkpoints": [{{"path": "step_100", "step": 100}}, ...]}}'
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InterpError(f"{manifest} is not valid JSON ({err})", fix=fix) from err
    entries = data.get("checkpoints") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                and isinstance(e.get("step", 0), (int, type(None))) for e in entries):
        raise InterpError(f"{manifest} must list checkpoints as objects with a string 'path' and an integer 'step'",
                          fix=fix)
    if not entries:
        raise InterpError(f"{manifest} lists no checkpoints", fix=fix)
    return entries


def _from_catalogue(root: Path) -> list[Checkpoint]:
    """The checkpoints of `root/checkpoints.csv` present in `root`, each found by its path or last path component."""
    catalogue = root / CATALOGUE
    rows = _catalogue_rows(catalogue)
    found = []
    for step, where in rows:
        tail = where.rstrip("/").rsplit("/", 1)[-1]
        ckpt = next((c for sub in (root / where, root / tail) if sub.is_dir() for c in [_found(sub, root.name, step)]
                     if c), None)
        found += [ckpt] if ckpt else []
    if not found:
        looked = ", ".join(where.rstrip("/").rsplit("/", 1)[-1] for _, where in rows[:3])
        raise InterpError(f"none of the {len(rows)} checkpoints {catalogue} lists is in {root} (looked for {looked}, "
                          f"...)", fix=f"download some into {root} under the catalogue's directory names, or make its "
                                       f"rows point at where they are")
    return in_order(found, str(root))


def _catalogue_rows(catalogue: Path) -> list[tuple[int, str]]:
    """(step, directory) rows of an OLMo-style catalogue: a `Step` column and a `Checkpoint Directory` (or `path`,
    `directory`, `revision`) column."""
    fix = f"write {catalogue} with OLMo's header `Step,Checkpoint Directory` and one checkpoint a row"
    with catalogue.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        where = next((columns[c] for c in _CATALOGUE_WHERE if c in columns), None)
        if "step" not in columns or where is None:
            raise InterpError(f"{catalogue} has the columns {reader.fieldnames}, not a step and a directory column",
                              fix=fix)
        rows = [(row[columns["step"]].strip(), (row[where] or "").strip()) for row in reader]
    for step, path in rows:
        if not step.isdigit() or not path:
            raise InterpError(f"{catalogue} has the row {step},{path}: a step must be a whole number and a directory "
                              f"given", fix=fix)
    if not rows:
        raise InterpError(f"{catalogue} lists no checkpoints", fix=fix)
    return [(int(step), path) for step, path in rows]


def position(ckpt: Checkpoint) -> tuple[bool, int, int, int]:
    """Where a checkpoint is in training, for sorting: by stage, step and ingredient, unknown steps last."""
    return ckpt.step is None, ckpt.stage or 0, ckpt.step or 0, ckpt.ingredient or 0


def in_order(found: list[Checkpoint], where: str) -> list[Checkpoint]:
    """Sort by stage, step and ingredient (unknown steps last, in listed order); refuse two checkpoints with one
    label."""
    return distinct(sorted(found, key=position), where)


def distinct(found: list[Checkpoint], where: str) -> list[Checkpoint]:
    """`found` as it is, refusing two checkpoints with one label (results are named by it)."""
    seen: dict[str, Checkpoint] = {}
    for ckpt in found:
        if ckpt.label in seen:
            what = f"step {ckpt.step}" if ckpt.step is not None else f"the name {ckpt.name}"
            raise InterpError(f"{where} has two checkpoints for {what}: {seen[ckpt.label].path} and {ckpt.path}",
                              fix="remove or rename one of them (or give them distinct steps in the manifest)")
        seen[ckpt.label] = ckpt
    return found


def step_of(path: str | Path) -> int | None:
    """The step of one checkpoint directory: from its parent's manifest or catalogue if it is listed there, else from
    its name."""
    path = Path(path).resolve()
    try:
        listed = _listed(path.parent) or []
    except InterpError:  # a broken sibling entry does not stop this checkpoint from loading; discover reports it
        listed = []
    match = next((c.step for c in listed if c.path == path and c.step is not None), None)
    return match if match is not None else parse_step(path.name)


CACHED = "cached"
REVISIONS_HELP = ("With a hub id (org/name) as RUN: the revisions to sweep, comma-separated (step0,step1000), or "
                  f"`{CACHED}`: every revision in the Hugging Face cache, in step order (the default for a hub id). "
                  "An error with a directory, whose checkpoints are all swept.")


def run_checkpoints(run: str | Path, revisions: str | None = None) -> list[Checkpoint]:
    """The checkpoints a sweep over `run` reads, in training order (a manifest's as listed): a hub id's cached
    `revisions` (comma-separated; `cached` or None: every cached one), else every checkpoint `discover` finds in a
    directory."""
    from interp.hub import checkpoints, is_hub_id

    if is_hub_id(str(run)):
        return checkpoints(str(run), _revision_list(revisions))
    if revisions is not None:
        raise InterpError(f"--revisions {revisions} names revisions of a hub id, but {run} is a directory",
                          fix="drop --revisions (a directory's checkpoints are all swept), or pass a hub id such as "
                              "EleutherAI/pythia-70m")
    return discover(run)


def _revision_list(text: str | None) -> list[str] | None:
    """`--revisions` as revision names, or None for every cached revision."""
    from interp.options import parse_names

    if text is None or text.strip() == CACHED:
        return None
    return list(parse_names("--revisions", text))


def run_location(run: str | Path) -> str:
    """How a results directory records the run it read: the hub id, else the absolute directory."""
    from interp.hub import is_hub_id

    return str(run) if is_hub_id(str(run)) else str(Path(run).expanduser().resolve())


@dataclass(frozen=True)
class Run:
    """The checkpoints of one training run, loaded lazily: one model at a time."""

    path: Path
    checkpoints: tuple[Checkpoint, ...]

    @classmethod
    def open(cls, path: str | Path, revisions: str | None = None) -> "Run":
        """The run at `path` (a run directory, a single checkpoint as a run of one, or a hub id at `revisions`, whose
        `path` is its folder in the Hugging Face cache)."""
        from interp.hub import is_hub_id

        found = run_checkpoints(path, revisions)
        root = found[0].path.parents[1] if is_hub_id(str(path)) else Path(path).expanduser().resolve()
        return cls(root, tuple(found))

    @classmethod
    def verified(cls, path: str | Path, revisions: str | None = None) -> "Run":
        """`open`, then every checkpoint verified (complete, weights matching its config, tokenizer) and all of the
        first one's shapes and tokenizer: what a sweep checks before any compute."""
        from interp.loading import verify_checkpoint

        run = cls.open(path, revisions)
        for ckpt in run.checkpoints:
            verify_checkpoint(ckpt.path)
        run.check_compatible()
        return run

    @property
    def steps(self) -> list[int | None]:
        return [c.step for c in self.checkpoints]

    def check_compatible(self) -> None:
        """Refuse the run unless every checkpoint has the first one's shapes and tokenizer."""
        for other in self.checkpoints[1:]:
            check_compatible(self.checkpoints[0].path, other.path)

    def iter_models(self, compatible: bool = True, **load_options: Any) -> Iterator["HookedModel"]:
        """Load each checkpoint in the run's order as it is reached (`load_options` go to `interp.load`).

        With `compatible`, checks every checkpoint against the first before loading any. Only the yielded model is
        referenced here; `itertools.pairwise(run.iter_models())` keeps the two an adjacent-step comparison needs.
        """
        if compatible:
            self.check_compatible()
        from interp import loading

        for ckpt in self.checkpoints:
            yield loading.load(ckpt.path, step=ckpt.step, **load_options)


def check_compatible(a: str | Path, b: str | Path) -> None:
    """Refuse two checkpoints whose architecture, weight shapes or tokenizer vocabulary differ, naming both."""
    a, b = Path(a), Path(b)
    fix = "compare checkpoints of one training run (same architecture, sizes and tokenizer)"
    for what, left, right in _differences(a, b):
        raise InterpError(f"checkpoints differ: {a} has {what} {left} but {b} has {right}", fix=fix)


def _differences(a: Path, b: Path) -> Iterator[tuple[str, Any, Any]]:
    """(what, value in a, value in b) for each difference, the most readable first; stops being read at the first."""
    from interp.loading import load_tokenizer, weight_shapes

    summary_a, summary_b = read_summary(a).as_dict(), read_summary(b).as_dict()
    for name in summary_a:
        if name != "n_params" and summary_a[name] != summary_b[name]:
            yield name, summary_a[name], summary_b[name]
    shapes_a, shapes_b = weight_shapes(a), weight_shapes(b)
    for tensor in sorted(shapes_a.keys() | shapes_b.keys()):
        if shapes_a.get(tensor) != shapes_b.get(tensor):
            yield f"weight {tensor} of shape", shapes_a.get(tensor, "(absent)"), shapes_b.get(tensor, "(absent)")
    vocab_a, vocab_b = load_tokenizer(a).get_vocab(), load_tokenizer(b).get_vocab()
    if vocab_a != vocab_b:
        changed = sorted(t for t in vocab_a.keys() | vocab_b.keys() if vocab_a.get(t) != vocab_b.get(t))
        yield (f"a different tokenizer ({len(changed)} tokens differ): token {changed[0]!r} has id",
               vocab_a.get(changed[0]), vocab_b.get(changed[0]))


def read_summary(path: str | Path) -> "ModelSummary":
    """A checkpoint's architecture facts from config.json and the weight-file headers, without loading weights (an
    adapter's: its base's, which the merge keeps; a hub id's: its cached snapshot's)."""
    from transformers import AutoConfig

    from interp.loading import check_architecture, config_dir, read_config, weight_shapes
    from interp.models.hf import summary_from_config

    root = config_dir(path)
    check_architecture(root, read_config(root))
    cfg = AutoConfig.from_pretrained(str(root), local_files_only=True)
    return summary_from_config(cfg, sum(math.prod(shape) for shape in weight_shapes(root).values()))


def weights_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint's weight files (names and bytes): what a resumed sweep or a summary identifies it by.

    Computed once per file state and kept in the user's cache directory, keyed by path, sizes, mtimes, ctimes and
    inodes (a copy that restores the mtime still changes the ctime), so a changed file is hashed again and an
    unchanged one costs a stat.
    """
    from interp.loading import weight_files

    files = weight_files(path)
    stats = [[f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] for f in files for st in [f.stat()]]
    root = str(Path(path).resolve())
    memo = user_cache_dir() / "weights-sha256" / (hashlib.sha256(root.encode()).hexdigest()[:32] + ".json")
    try:
        known = json.loads(memo.read_text())
        if known.get("path") == root and known.get("files") == stats:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    try:
        from interp.results import atomic_write_json

        atomic_write_json(memo, {"path": root, "files": stats, "sha256": value})
    except OSError:  # a read-only cache directory only costs the hash next time
        pass
    return value


def identity(ckpt: Checkpoint) -> dict[str, Any]:
    """What summary.json records of a checkpoint a command read: path, revision, step, tokens seen, weights' sha256."""
    return {"path": str(ckpt.path), "revision": ckpt.revision, "step": ckpt.step, "tokens": ckpt.tokens,
            "weights_sha256": weights_sha256(ckpt.path)}


def identical_weights(checkpoints: Sequence[Checkpoint], hashes: Sequence[str]) -> list[str]:
    """One finding per set of checkpoints with byte-identical weights: `step1000 and step2000 have identical weights
    (sha256 1a2b3c4d5e6f)`."""
    named: dict[str, list[str]] = {}
    for ckpt, sha in zip(checkpoints, hashes):
        named.setdefault(sha, []).append(ckpt.name)
    return [f"{', '.join(names[:-1])} and {names[-1]} have identical weights (sha256 {sha[:12]})"
            for sha, names in named.items() if len(names) > 1]


def vouch(checkpoints: Sequence[Checkpoint]) -> tuple[list[dict[str, Any]], list[str]]:
    """Before a sweep loads any model: each checkpoint's `identity`, and the identical-weights findings, each warned
    in one line on stderr (the sweep goes on)."""
    records = [identity(ckpt) for ckpt in checkpoints]
    findings = identical_weights(checkpoints, [r["weights_sha256"] for r in records])
    for finding in findings:
        warn(f"{finding}: the sweep reads one model twice (a suite can serve one model under two revisions; check "
             "the download)")
    return records, findings


def user_cache_dir() -> Path:
    """`$INTERP_CACHE_DIR`, else `$XDG_CACHE_HOME/interp` (`~/.cache/interp`)."""
    env = os.environ.get("INTERP_CACHE_DIR")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interp"
