"""Training runs: find a run directory's checkpoints, sorted by step; load them lazily; refuse mismatched ones.

A checkpoint is a Hugging Face directory (`config.json`, weights, tokenizer). A run directory holds checkpoints
named `checkpoint-N`, `stepN`, `step_N`, `step-N` or `global_stepN`, or lists them in a `checkpoints.json`
manifest: `{"checkpoints": [{"path": "relative/or/absolute", "step": 100}, ...]}` (a bare list also works).
A single checkpoint directory is a run of one; a directory that is a checkpoint and also holds step-named ones
(a Hugging Face Trainer output directory) is read as the run of those.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.models.hooked import HookedModel, ModelSummary

MANIFEST = "checkpoints.json"
CONFIG = "config.json"
_STEP = re.compile(r"(?:checkpoint-|step[_-]?|global_step)(\d+)")
_NAMING_FIX = (f"point at a checkpoint directory (with {CONFIG}) or at a run directory holding checkpoint-N / step_N "
               f"sub-directories or a {MANIFEST} manifest")


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint directory name (`checkpoint-100`, `step_000300`, ...), else None."""
    match = _STEP.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint directory of a run, with its step (None when unknown) and the run's name."""

    path: Path
    step: int | None
    run: str

    @property
    def label(self) -> str:
        """Short name for tables and file names: `step_000300`, or the directory name when the step is unknown."""
        return f"step_{self.step:06d}" if self.step is not None else self.path.name


def is_checkpoint_dir(path: Path) -> bool:
    """Whether `path` looks like a Hugging Face checkpoint directory (has a config.json)."""
    return (path / CONFIG).is_file()


def discover(path: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run directory sorted by step, or `[that checkpoint]` for a single checkpoint directory."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InterpError(f"{root} does not exist", fix="check the path (typo? not downloaded or trained yet?)")
    if not root.is_dir():
        raise InterpError(f"{root} is a file, not a checkpoint or run directory", fix=_NAMING_FIX)
    root = root.resolve()
    if (root / MANIFEST).is_file():
        found = _from_manifest(root)
    else:
        found = [Checkpoint(sub, parse_step(sub.name), root.name) for sub in root.iterdir()
                 if sub.is_dir() and parse_step(sub.name) is not None and is_checkpoint_dir(sub)]
    if not found:
        if is_checkpoint_dir(root):
            run = root.parent.name if parse_step(root.name) is not None else root.name
            return [Checkpoint(root, step_of(root), run)]
        raise InterpError(f"{root} is not a checkpoint (no {CONFIG}) and holds no checkpoints", fix=_NAMING_FIX)
    return _sorted_unique(found, root)


def _from_manifest(root: Path) -> list[Checkpoint]:
    """Checkpoints listed in `root/checkpoints.json`; paths are relative to `root` unless absolute."""
    manifest = root / MANIFEST
    entries = _manifest_entries(manifest)
    found = []
    for entry in entries:
        sub = (root / entry["path"]).resolve()
        if not is_checkpoint_dir(sub):
            raise InterpError(f"{manifest} lists {entry['path']}, which is not a checkpoint directory ({sub / CONFIG} "
                              f"missing)", fix=f"fix or remove that entry of {manifest}")
        step = entry.get("step")
        found.append(Checkpoint(sub, int(step) if step is not None else parse_step(sub.name), root.name))
    return found


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


def _sorted_unique(found: list[Checkpoint], root: Path) -> list[Checkpoint]:
    """Sort by step (unknown steps last, in manifest order); refuse two checkpoints with one step or label."""
    ordered = sorted(found, key=lambda c: (c.step is None, c.step or 0))
    seen: dict[str, Checkpoint] = {}
    for ckpt in ordered:
        if ckpt.label in seen:
            what = f"step {ckpt.step}" if ckpt.step is not None else f"the name {ckpt.path.name}"
            raise InterpError(f"{root} has two checkpoints for {what}: {seen[ckpt.label].path} and {ckpt.path}",
                              fix="remove or rename one of them (or give them distinct steps in the manifest)")
        seen[ckpt.label] = ckpt
    return ordered


def step_of(path: str | Path) -> int | None:
    """The step of one checkpoint directory: from its parent's manifest if it is listed there, else from its name."""
    path = Path(path).resolve()
    if (path.parent / MANIFEST).is_file():
        for entry in _manifest_entries(path.parent / MANIFEST):
            if (path.parent / entry["path"]).resolve() == path and entry.get("step") is not None:
                return int(entry["step"])
    return parse_step(path.name)


@dataclass(frozen=True)
class Run:
    """The checkpoints of one training run, loaded lazily: one model at a time."""

    path: Path
    checkpoints: tuple[Checkpoint, ...]

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """The run at `path` (a run directory, or a single checkpoint as a run of one)."""
        return cls(Path(path).expanduser().resolve(), tuple(discover(path)))

    @property
    def steps(self) -> list[int | None]:
        return [c.step for c in self.checkpoints]

    def check_compatible(self) -> None:
        """Refuse the run unless every checkpoint has the first one's shapes and tokenizer."""
        for other in self.checkpoints[1:]:
            check_compatible(self.checkpoints[0].path, other.path)

    def iter_models(self, compatible: bool = True, **load_options: Any) -> Iterator["HookedModel"]:
        """Load each checkpoint in step order as it is reached (`load_options` go to `interp.load`).

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
    """A checkpoint's architecture facts from config.json and the weight-file headers, without loading weights."""
    from transformers import AutoConfig

    from interp.loading import check_architecture, checkpoint_dir, read_config, weight_shapes
    from interp.models.hf import summary_from_config

    root = checkpoint_dir(path)
    check_architecture(root, read_config(root))
    cfg = AutoConfig.from_pretrained(str(root), local_files_only=True)
    return summary_from_config(cfg, sum(math.prod(shape) for shape in weight_shapes(root).values()))


def weights_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint's weight files (names and bytes): what a resumed sweep or a summary identifies it by.

    Computed once per file state and kept in the user's cache directory, keyed by path, sizes, mtimes, ctimes and
    inodes (a copy that restores the mtime still changes the ctime), so a changed file is hashed again and an unchanged one costs a stat.
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


def user_cache_dir() -> Path:
    """`$INTERP_CACHE_DIR`, else `$XDG_CACHE_HOME/interp` (`~/.cache/interp`)."""
    env = os.environ.get("INTERP_CACHE_DIR")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interp"
