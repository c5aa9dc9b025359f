"""The Hugging Face hub cache, offline: a model id and revision resolve to a snapshot directory already on disk.

Everything goes through huggingface_hub's own cache API (`try_to_load_from_cache`, `scan_cache_dir`) over the cache it
uses (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, read at each call); nothing here touches the network. A model or revision
that is not cached is an error naming the command that downloads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from interp.checkpoints import CONFIG, Checkpoint, in_order, parse_step
from interp.errors import InterpError

if TYPE_CHECKING:
    from huggingface_hub import CachedRepoInfo


def cache_dir() -> Path:
    """The hub cache huggingface_hub reads: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else its default."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not env and os.environ.get("HF_HOME"):
        env = os.path.join(os.environ["HF_HOME"], "hub")
    return Path(os.path.expandvars(env)).expanduser() if env else Path(constants.HF_HUB_CACHE)


def is_hub_id(text: str) -> bool:
    """Whether `text` reads as a hub model id (`org/name`) and is not an existing local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") == 1 and not Path(text).expanduser().exists()


def resolve(model_id: str, revision: str | None = None) -> Path:
    """The snapshot directory of `model_id` at `revision` (a branch, tag or commit; default `main`) in the cache."""
    from huggingface_hub import try_to_load_from_cache

    cache = cache_dir()
    found = try_to_load_from_cache(model_id, CONFIG, cache_dir=cache, revision=revision or "main")
    if isinstance(found, str):
        return Path(found).parent
    raise _not_cached(model_id, revision, cache)


def checkpoints(model_id: str, revisions: list[str] | None = None) -> list[Checkpoint]:
    """`model_id` at each of `revisions` (each must be cached), or at every cached revision, in training order."""
    if revisions is not None:
        found = [Checkpoint.named(resolve(model_id, rev), rev, model_id, revision=rev) for rev in revisions]
    else:
        found = [Checkpoint.named(path, name, model_id, revision=name) for name, path in _cached(model_id, cache_dir())]
        if not found:
            raise _not_cached(model_id, None, cache_dir())
    return in_order(found, model_id)


def cached_revisions(model_id: str) -> list[tuple[str, int | None, Path]]:
    """(revision name, step or None, snapshot) of every cached revision of `model_id`, in training order (unknown
    steps last): what `--revisions cached` means."""
    return [(c.name, c.step, c.path) for c in checkpoints(model_id)]


def snapshot_in(cache: Path, revision: str) -> Path | None:
    """The snapshot of `revision` in a cache directory holding one model (Pythia's README layout, `cache_dir=
    RUN/step3000`), else its only snapshot; None when it holds no such cache."""
    if not any(cache.glob("models--*")):
        return None
    from huggingface_hub import scan_cache_dir

    repos = [repo for repo in scan_cache_dir(cache).repos if repo.repo_type == "model"]
    if len(repos) != 1:
        return None
    snapshots = dict(_revisions(repos[0]))
    if revision in snapshots:
        return snapshots[revision]
    return next(iter(snapshots.values())) if len(snapshots) == 1 else None


def _cached(model_id: str, cache: Path) -> list[tuple[str, Path]]:
    """(name, snapshot) of each cached revision of `model_id` that has a config.json; none when it is not cached."""
    if not cache.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    repo = next((r for r in scan_cache_dir(cache).repos if r.repo_id == model_id and r.repo_type == "model"), None)
    return [(_ref_name(refs), path) for refs, path in _snapshots(repo)] if repo else []


def _snapshots(repo: "CachedRepoInfo") -> list[tuple[list[str], Path]]:
    """(refs or [commit hash], snapshot) of each revision of a cached repository holding a config.json."""
    return [(sorted(rev.refs) or [rev.commit_hash], rev.snapshot_path) for rev in repo.revisions
            if (rev.snapshot_path / CONFIG).is_file()]


def _revisions(repo: "CachedRepoInfo") -> list[tuple[str, Path]]:
    """(ref, snapshot) for every ref of a cached repository (one row per ref)."""
    return [(ref, path) for refs, path in _snapshots(repo) for ref in refs]


def _ref_name(refs: Iterable[str]) -> str:
    """The ref to call a revision by: one naming a step (`step1000` over `main`), else the first."""
    return min(refs, key=lambda ref: (parse_step(ref) is None, ref))


def _not_cached(model_id: str, revision: str | None, cache: Path) -> InterpError:
    """The error for a model or revision missing from the cache: what is cached, and the download command."""
    have = [name for name, _ in _cached(model_id, cache)]
    what = f"revision {revision} of {model_id}" if revision else model_id
    held = f" (cached: {', '.join(sorted(have))})" if have else ""
    command = f"huggingface-cli download {model_id}" + (f" --revision {revision}" if revision else "")
    return InterpError(f"{what} is not in the Hugging Face cache {cache}{held}",
                       fix=f"download it with `{command}`, or point HF_HUB_CACHE / HF_HOME at the cache holding it")
