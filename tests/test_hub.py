"""The Hugging Face hub cache, offline: ids and revisions resolve to snapshots, cached revisions in training order,
and what is not cached is an error naming the download command. Caches are laid out as huggingface_hub writes them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from interp.checkpoints import weights_sha256
from interp.errors import InterpError
from interp.hub import cache_dir, cached_revisions, checkpoints, is_hub_id, resolve
from interp.testing import write_hub_cache

REPO = "tiny-org/tiny-gpt2"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Callable[[str], Path]) -> dict[str, Path]:
    """HF_HUB_CACHE -> a fresh cache holding REPO at step1000, step0, step20 and main (= step1000's commit)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snapshots = {rev: write_hub_cache(cache, REPO, rev, tiny_dir("gpt2")) for rev in ["step1000", "step0", "step20"]}
    snapshots["main"] = write_hub_cache(cache, REPO, "main", tiny_dir("gpt2"), commit=snapshots["step1000"].name)
    return snapshots


def test_the_test_cache_is_what_huggingface_hub_reads(hub_cache: dict[str, Path]) -> None:
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache_dir())
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.refs.keys() == {"main", "step0", "step20", "step1000"}
    assert repo.size_on_disk == sum(f.stat().st_size for f in (cache_dir() / "models--tiny-org--tiny-gpt2" / "blobs")
                                    .iterdir())  # one blob per distinct file, shared by every revision


def test_resolve_returns_the_snapshot_of_a_revision(hub_cache: dict[str, Path]) -> None:
    from interp.loading import verify_checkpoint

    assert resolve(REPO, "step20") == hub_cache["step20"]
    assert resolve(REPO) == resolve(REPO, "main") == hub_cache["step1000"]
    assert resolve(REPO, hub_cache["step0"].name) == hub_cache["step0"]  # a commit hash is a revision too
    verify_checkpoint(resolve(REPO, "step0"))  # a complete checkpoint directory


def test_hf_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             tiny_dir: Callable[[str], Path]) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    snapshot = write_hub_cache(tmp_path / "home" / "hub", REPO, "step5", tiny_dir("gpt2"))
    assert cache_dir() == tmp_path / "home" / "hub" and resolve(REPO, "step5") == snapshot


def test_cached_revisions_in_step_order(hub_cache: dict[str, Path]) -> None:
    """`main` points at step1000's commit: one revision, called by the name that says its step."""
    assert cached_revisions(REPO) == [("step0", 0, hub_cache["step0"]), ("step20", 20, hub_cache["step20"]),
                                      ("step1000", 1000, hub_cache["step1000"])]
    chosen = checkpoints(REPO, ["step1000", "main", "step0"])
    assert [(c.name, c.step, c.run) for c in chosen] == [("step0", 0, REPO), ("step1000", 1000, REPO),
                                                         ("main", None, REPO)]


def test_olmo_revisions_order_by_stage_then_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tiny_dir: Callable[[str], Path]) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for rev in ["stage2-ingredient1-step1000-tokens5B", "stage1-step20000-tokens84B", "stage1-step1000-tokens5B"]:
        write_hub_cache(tmp_path, "allenai/OLMo-2-0425-1B", rev, tiny_dir("gpt2"))
    found = checkpoints("allenai/OLMo-2-0425-1B")
    assert [(c.stage, c.step, c.tokens) for c in found] == [(1, 1000, 5 * 10**9), (1, 20000, 84 * 10**9),
                                                            (2, 1000, 5 * 10**9)]


def test_not_cached_names_the_download_command(hub_cache: dict[str, Path]) -> None:
    with pytest.raises(InterpError, match=f"revision step5 of {REPO} is not in the Hugging Face cache") as err:
        resolve(REPO, "step5")
    assert "(cached: step0, step1000, step20)" in str(err.value)
    assert "huggingface-cli download tiny-org/tiny-gpt2 --revision step5" in err.value.fix
    with pytest.raises(InterpError, match="huggingface-cli download tiny-org/tiny-gpt2 --revision step5"):
        checkpoints(REPO, ["step0", "step5"])
    for missing in [lambda: resolve("other/model", "step1"), lambda: cached_revisions("other/model")]:
        with pytest.raises(InterpError, match="other/model is not in the Hugging Face cache") as err:
            missing()
        assert "huggingface-cli download other/model" in err.value.fix


def test_a_partial_download_is_not_a_cached_revision(hub_cache: dict[str, Path], tmp_path: Path) -> None:
    """A revision whose snapshot lacks config.json (only a tokenizer fetched, say) does not count as cached."""
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "tokenizer.json").write_text("{}")
    write_hub_cache(cache_dir(), REPO, "step7", partial)
    assert "step7" not in [name for name, _, _ in cached_revisions(REPO)]
    with pytest.raises(InterpError, match="revision step7"):
        resolve(REPO, "step7")


def test_is_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    assert is_hub_id("EleutherAI/pythia-70m") and is_hub_id("allenai/OLMo-2-0425-1B")
    for text in ["runs/mine", "pythia-70m", "a/b/c", "/abs/path", "./x", "org/", "org/bad--name", "~/x"]:
        assert not is_hub_id(text), text


def test_info_lists_the_cached_revisions(hub_cache: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from clitools import run

    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["info", REPO], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["path", REPO]
    lines = out.splitlines()
    start = [line.split() for line in lines].index(["step", "sha256", "revision"])
    sha = weights_sha256(hub_cache["step0"])[:12]  # one tiny checkpoint under every revision
    assert [line.split() for line in lines[start + 1:start + 4]] == [["0", sha, "step0"], ["20", sha, "step20"],
                                                                     ["1000", sha, "step1000"]]
    code, out, _ = run(["info", REPO, "--revisions", "step1000,step0"], capsys)
    assert code == 0 and "2 checkpoints" in out and " step20" not in out
    shutil.rmtree(cache_dir())
    from clitools import assert_user_error

    assert_user_error(run(["info", REPO], capsys), "not in the Hugging Face cache", "huggingface-cli download")
