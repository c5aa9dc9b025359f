"""Activation caches: stored values against unbatched, unpadded forwards; positions; shards; reuse; atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from interp.cache import cache_activations, cache_run, load_activations, open_cache
from interp.errors import InterpError
from interp.models.hooked import HookedModel

PROMPTS = [
    "the cat sees the moon.",
    "a dog",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "1 2 3 4 5",
    "def add(a, b):\n    return a + b\n",
]
RESID, PATTERN, K = "blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_k"


@pytest.fixture(scope="module")
def model(tiny_dir: Callable[[str], Path]) -> HookedModel:
    from interp.models.backends.native_backend import NativeModel

    return NativeModel.from_dir(tiny_dir("gpt2"), device=torch.device("cpu"), dtype=torch.float32, step=None)


def _alone(model: HookedModel, prompt: str, hook: str) -> torch.Tensor:
    """The oracle: one prompt on its own, no batch, no padding."""
    _, acts = model.run_with_cache(model.to_tokens(prompt), names=[hook])
    return acts[hook][0]


def test_all_positions_match_single_prompt_forwards(model: HookedModel, tmp_path: Path) -> None:
    handle = cache_activations(model, PROMPTS, [RESID, PATTERN], tmp_path, batch_size=2)
    lengths = [model.to_tokens(p).shape[1] for p in PROMPTS]
    width = max(lengths)
    assert handle.lengths().tolist() == lengths
    resid, pattern = handle.load(RESID), load_activations(tmp_path, PATTERN)
    assert resid.shape == (len(PROMPTS), width, model.summary.d_model)
    assert pattern.shape == (len(PROMPTS), model.summary.n_heads, width, width)
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths)):
        torch.testing.assert_close(resid[i, :n], _alone(model, prompt, RESID), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pattern[i, :, :n, :n], _alone(model, prompt, PATTERN), rtol=1e-5, atol=1e-6)
        assert resid[i, n:].abs().sum() == 0 and pattern[i, :, n:].abs().sum() == 0  # padding is zero
    meta = handle.meta(RESID)
    assert meta["positions"] == "all" and meta["n_prompts"] == 5 and meta["shape"] == list(resid.shape)
    assert meta["model_path"] == str(model.path.resolve()) and meta["hook"] == RESID and meta["dtype"] == "float32"


@pytest.mark.parametrize("positions, picks", [("last", lambda n: [n - 1]), ([0, -1], lambda n: [0, n - 1]),
                                              ([1, -2], lambda n: [1, n - 2])])
def test_chosen_positions_match(model: HookedModel, tmp_path: Path, positions: object,
                                picks: Callable[[int], list[int]]) -> None:
    handle = cache_activations(model, PROMPTS, [RESID, K, PATTERN], tmp_path, positions=positions, batch_size=3)
    for i, prompt in enumerate(PROMPTS):
        n = model.to_tokens(prompt).shape[1]
        rows = picks(n)
        torch.testing.assert_close(handle.load(RESID)[i], _alone(model, prompt, RESID)[rows], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(handle.load(K)[i], _alone(model, prompt, K)[rows], rtol=1e-5, atol=1e-5)
        pattern = handle.load(PATTERN)[i]  # [head, kept query, key padded to the longest prompt]
        torch.testing.assert_close(pattern[:, :, :n], _alone(model, prompt, PATTERN)[:, rows], rtol=1e-5, atol=1e-6)
    assert handle.load(RESID).shape == (len(PROMPTS), len(picks(9)), model.summary.d_model)


def test_shards_bound_memory_and_concatenate_in_order(model: HookedModel, tmp_path: Path) -> None:
    reference = cache_activations(model, PROMPTS, [RESID], tmp_path / "one", batch_size=1).load(RESID)
    one_row = reference[0].numel() * 4
    handle = cache_activations(model, PROMPTS, [RESID], tmp_path / "many", batch_size=1, shard_bytes=2 * one_row)
    shards = list(handle.shards(RESID))
    assert [len(s) for s in shards] == [2, 2, 1]
    assert sorted(p.name for p in (tmp_path / "many" / RESID).iterdir()) == [
        "meta.json", "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    torch.testing.assert_close(handle.load(RESID), reference, rtol=0, atol=0)


def test_forward_sees_batches_not_the_dataset(model: HookedModel, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, tokens: seen.append(len(tokens)) or forward(self, tokens))
    cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=2)
    assert seen == [2, 2, 1]


def test_same_request_reuses_files_and_changes_recompute(model: HookedModel, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = cache_activations(model, PROMPTS, [RESID], tmp_path, positions="last")
    full = first.load(RESID)
    shard = tmp_path / RESID / "shard-00000.safetensors"
    stamp = shard.stat().st_mtime_ns
    assert first.reused == ()

    def no_forward(self: HookedModel, tokens: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a matching cache must not run the model")

    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", no_forward)
    again = cache_activations(model, PROMPTS, [RESID], tmp_path, positions="last")
    assert again.reused == (RESID,) and shard.stat().st_mtime_ns == stamp
    monkeypatch.setattr(type(model), "forward", forward)
    for change in [dict(positions="all"), dict(positions="last", dtype=torch.float16),
                   dict(positions="last", prompts=PROMPTS[:4]), dict(positions="last", bos=False)]:
        prompts = change.pop("prompts", PROMPTS)
        handle = cache_activations(model, prompts, [RESID], tmp_path, **change)
        assert handle.reused == (), change
        assert handle.meta(RESID)["n_prompts"] == handle.load(RESID).shape[0] == len(prompts)
    half = cache_activations(model, PROMPTS, [RESID], tmp_path, positions="last", dtype=torch.float16).load(RESID)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_path_is_not_loaded_when_cached(tiny_dir: Callable[[str], Path], model: HookedModel, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import interp.loading

    cache_activations(model, PROMPTS, [RESID], tmp_path)
    monkeypatch.setattr(interp.loading, "load", lambda *a, **k: pytest.fail("loaded a model for a cached request"))
    assert cache_activations(tiny_dir("gpt2"), PROMPTS, [RESID], tmp_path).reused == (RESID,)


def test_retrained_checkpoint_is_not_reused(tiny_dir: Callable[[str], Path], tmp_path: Path) -> None:
    from interp.testing import tiny_checkpoint

    ckpt = shutil.copytree(tiny_dir("gpt2"), tmp_path / "ckpt")
    before = cache_activations(ckpt, PROMPTS[:2], [RESID], tmp_path / "cache", backend="native").load(RESID)
    tiny_checkpoint("gpt2", ckpt, seed=5)  # same place, new weights
    handle = cache_activations(ckpt, PROMPTS[:2], [RESID], tmp_path / "cache", backend="native")
    assert handle.reused == () and not torch.allclose(handle.load(RESID), before)


def test_interrupted_write_leaves_no_cache_and_reruns(model: HookedModel, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    forward = type(model).forward

    def failing(self: HookedModel, tokens: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(self, tokens)

    monkeypatch.setattr(type(model), "forward", failing)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=1, shard_bytes=1)
    hook_dir = tmp_path / RESID
    assert not (hook_dir / "meta.json").exists()
    assert not list(hook_dir.glob("*.tmp")) and not list(hook_dir.glob(".*"))
    with pytest.raises(InterpError, match="no activation cache"):
        open_cache(tmp_path)
    monkeypatch.setattr(type(model), "forward", forward)
    handle = cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=1, shard_bytes=1)
    assert handle.reused == () and len(handle.meta(RESID)["shards"]) == len(PROMPTS)


def test_fewer_shards_remove_stale_ones(model: HookedModel, tmp_path: Path) -> None:
    cache_activations(model, PROMPTS, [RESID], tmp_path, shard_bytes=1, batch_size=1)
    cache_activations(model, PROMPTS[:2], [RESID], tmp_path, shard_bytes=1, batch_size=1)
    assert sorted(p.name for p in (tmp_path / RESID).glob("shard-*")) == ["shard-00000.safetensors",
                                                                          "shard-00001.safetensors"]
    assert json.loads((tmp_path / RESID / "meta.json").read_text())["n_prompts"] == 2


def test_positions_of_the_wrong_type_are_refused(model: HookedModel, tmp_path: Path) -> None:
    """The library's own check says "positions must be"; under the test suite's shape checks the annotation refuses
    first (a library caller without beartype gets the InterpError)."""
    from jaxtyping import TypeCheckError

    with pytest.raises((InterpError, TypeCheckError), match="positions"):
        cache_activations(model, PROMPTS, [RESID], tmp_path, positions="first")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(hooks=["blocks.7.hook_resid_post"]), "no hook named"),
    (dict(positions=[0, 5]), "do not fit prompt 1"),
    (dict(positions=[-4]), "do not fit prompt 1"),  # "a dog" is BOS and two tokens
    (dict(positions=[]), "positions must be"),
    (dict(prompts=[]), "prompt set is empty"),
    (dict(hooks=[]), "no hooks"),
    (dict(batch_size=0), "batch size"),
    (dict(shard_bytes=0), "shard size"),
    (dict(hooks=["../x"]), "'../x' is not a hook name"),
    (dict(backend="bogus"), "unknown backend"),
    (dict(dtype=torch.int8), "cannot be stored as torch.int8"),
])
def test_bad_requests_are_user_errors(model: HookedModel, tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = dict(prompts=PROMPTS, hooks=[RESID]) | kwargs
    with pytest.raises(InterpError, match=needle) as err:
        cache_activations(model, args.pop("prompts"), args.pop("hooks"), tmp_path, **args)
    assert err.value.fix


def test_cache_run_writes_one_directory_per_checkpoint(tiny_dir: Callable[[str], Path], tmp_path: Path) -> None:
    from interp.testing import tiny_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_dir("gpt2"), run / "step_10")
    tiny_checkpoint("gpt2", run / "step_2", seed=3)
    handles = cache_run(run, PROMPTS[:3], [RESID], tmp_path / "cache", positions="last", backend="native")
    assert [h.path.name for h in handles] == ["step_000002", "step_000010"]
    assert [h.meta(RESID)["step"] for h in handles] == [2, 10]
    from interp.models.backends.native_backend import NativeModel

    for handle, name in zip(handles, ["step_2", "step_10"]):
        alone = NativeModel.from_dir(run / name, device=torch.device("cpu"), dtype=torch.float32, step=None)
        for i, prompt in enumerate(PROMPTS[:3]):
            torch.testing.assert_close(handle.load(RESID)[i, 0], _alone(alone, prompt, RESID)[-1], rtol=1e-5,
                                       atol=1e-5)


# --- damaged caches: recomputed on reuse, an InterpError on load -----------------------------------------------------
def _rewrite_shard(hook_dir: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                   fix_meta: bool) -> None:
    """Rewrite shard 1 with `change` applied; with `fix_meta`, make its meta.json entry describe the new file."""
    import hashlib

    from safetensors.torch import load_file, save_file

    file = hook_dir / "shard-00001.safetensors"
    save_file(change(load_file(str(file))), str(file))
    if fix_meta:
        meta = json.loads((hook_dir / "meta.json").read_text())
        entry = meta["shards"][1]
        entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
        if fix_meta == "all":  # a consistent-looking entry for a shard that lost a row
            entry["rows"] -= 1
            entry["tensors"]["activations"]["shape"][0] -= 1
            entry["tensors"]["lengths"]["shape"][0] -= 1
        (hook_dir / "meta.json").write_text(json.dumps(meta))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated shard": (lambda d: (d / "shard-00001.safetensors").write_bytes(
        (d / "shard-00001.safetensors").read_bytes()[:-40]), "sha256 differs"),
    "shard rewritten reshaped": (lambda d: _rewrite_shard(d, lambda t: t | {"activations": t["activations"].flatten(1)},
                                                          False), "sha256 differs"),
    "reshaped, hash updated": (lambda d: _rewrite_shard(d, lambda t: t | {"activations": t["activations"].flatten(1)},
                                                        True), "other tensors, shapes or dtypes"),
    "retyped, hash updated": (lambda d: _rewrite_shard(d, lambda t: t | {"activations": t["activations"].half()},
                                                       True), "other tensors, shapes or dtypes"),
    "rows deleted, meta updated": (lambda d: _rewrite_shard(d, lambda t: {k: v[:-1] for k, v in t.items()}, "all"),
                                   "shards hold 4 rows but meta.json says 5 prompts"),
    "shard deleted": (lambda d: (d / "shard-00001.safetensors").unlink(), "cannot be read"),
    "meta.json garbled": (lambda d: (d / "meta.json").write_text('{"format": 2, "shards": [{'),
                          "no readable meta.json"),
    "meta.json not an object": (lambda d: (d / "meta.json").write_text("[]"), "not a JSON object"),
}


@pytest.fixture
def damaged(model: HookedModel, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[torch.Tensor, str]:
    """A 3-shard cache of PROMPTS, damaged as the test's `case` says; returns the undamaged activations and the
    expected complaint."""
    reference = cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=2, shard_bytes=1).load(RESID)
    damage, needle = DAMAGE[request.node.callspec.params["case"]]
    damage(tmp_path / RESID)
    return reference, needle


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_cache_is_recomputed_not_reused(model: HookedModel, tmp_path: Path,
                                                  damaged: tuple[torch.Tensor, str], case: str) -> None:
    reference, needle = damaged
    handle = cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=2, shard_bytes=1)
    assert handle.reused == () and needle in handle.rebuilt[RESID]
    torch.testing.assert_close(handle.load(RESID), reference, rtol=0, atol=0)
    assert cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=2, shard_bytes=1).reused == (RESID,)


@pytest.mark.parametrize("case", list(DAMAGE))
def test_loading_a_damaged_cache_is_an_interp_error(tmp_path: Path, damaged: tuple[torch.Tensor, str],
                                                    case: str) -> None:
    _, needle = damaged
    with pytest.raises(InterpError, match=needle) as err:
        load_activations(tmp_path, RESID)
    assert "rerun `interp cache`" in str(err.value)
    with pytest.raises(InterpError, match=needle):
        open_cache(tmp_path).lengths()


def test_meta_records_each_shard_hash_shapes_and_dtypes(model: HookedModel, tmp_path: Path) -> None:
    import hashlib

    handle = cache_activations(model, PROMPTS, [RESID], tmp_path, batch_size=2, shard_bytes=1, dtype=torch.float16)
    d_model = model.summary.d_model
    for shard, rows in zip(handle.meta(RESID)["shards"], [2, 2, 1]):
        data = (tmp_path / RESID / shard["file"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest() and shard["rows"] == rows
        width = handle.meta(RESID)["max_tokens"]
        assert shard["tensors"] == {"activations": {"dtype": "F16", "shape": [rows, width, d_model]},
                                    "lengths": {"dtype": "I64", "shape": [rows]}}


def test_a_new_tokenizer_at_the_same_path_is_not_reused(tiny_dir: Callable[[str], Path], tmp_path: Path) -> None:
    """The weights are unchanged, but the prompts now tokenise differently: the cache must be recomputed."""
    from interp.testing import train_tiny_tokenizer

    ckpt = shutil.copytree(tiny_dir("gpt2"), tmp_path / "ckpt")
    before = cache_activations(ckpt, PROMPTS, [RESID], tmp_path / "cache", backend="native").load(RESID)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (ckpt / name).unlink(missing_ok=True)
    train_tiny_tokenizer(kind="word").save_pretrained(ckpt)
    after = cache_activations(ckpt, PROMPTS, [RESID], tmp_path / "cache", backend="native")
    assert after.reused == () and not torch.equal(after.load(RESID), before)


def test_non_finite_activations_name_the_prompt(model: HookedModel, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """float16 overflows past 65504: an error naming the prompt, not an inf in the cache."""
    run_with_cache = type(model).run_with_cache

    def huge_third_prompt(self: HookedModel, tokens: torch.Tensor, names: list[str]):
        logits, acts = run_with_cache(self, tokens, names=names)
        acts[RESID][0] *= 1e6 if len(tokens) == 1 else 1.0
        return logits, acts

    monkeypatch.setattr(type(model), "run_with_cache", huge_third_prompt)
    cache_activations(model, PROMPTS[:2], [RESID], tmp_path / "a", batch_size=2, dtype=torch.float16)
    with pytest.raises(InterpError, match=f"{RESID} activations of prompt 4 are NaN or infinite .*float16"):
        cache_activations(model, PROMPTS, [RESID], tmp_path / "b", batch_size=4, dtype=torch.float16)
    assert not (tmp_path / "b" / RESID / "meta.json").exists()


def test_prompts_longer_than_the_context_are_refused(model: HookedModel, tmp_path: Path) -> None:
    long = " ".join(["the cat"] * model.summary.n_ctx)
    with pytest.raises(InterpError, match=f"prompt 2 .* longer than the model's context of {model.summary.n_ctx}"):
        cache_activations(model, [PROMPTS[0], long], [RESID], tmp_path)
    assert not (tmp_path / RESID).exists()


def test_a_refused_request_keeps_the_earlier_cache(model: HookedModel, tmp_path: Path) -> None:
    """A request refused before compute (a position past a prompt) leaves the cache there complete."""
    first = cache_activations(model, PROMPTS, [RESID], tmp_path, positions="last").load(RESID)
    with pytest.raises(InterpError, match="do not fit prompt 1"):
        cache_activations(model, PROMPTS, [RESID], tmp_path, positions=[0, 5])
    torch.testing.assert_close(load_activations(tmp_path, RESID), first, rtol=0, atol=0)


def test_bos_is_on_by_default_recorded_and_refused_without_a_bos_token(tiny_dir: Callable[[str], Path],
                                                                        model: HookedModel, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from clitools import run

    from interp.data.tokens import encode

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:3]) + "\n")
    lengths = {}
    for flag in ("--bos", "--no-bos", None):
        out = tmp_path / str(flag)
        argv = ["cache", tiny_dir("gpt2"), "-p", prompts, "--hook", RESID, "-o", out, "--positions", "last"]
        code, _, err = run(argv + ([flag] if flag else []), capsys)
        assert code == 0, err
        handle = open_cache(out / tiny_dir("gpt2").name)
        bos = flag != "--no-bos"
        assert json.loads((out / "cache.json").read_text())["settings"]["bos"] is handle.meta(RESID)["bos"] is bos
        lengths[flag] = handle.lengths().tolist()
        assert lengths[flag] == [len(encode(model.tokenizer, p, bos)) for p in PROMPTS[:3]]
    assert lengths["--bos"] == lengths[None] == [n + 1 for n in lengths["--no-bos"]]
    saved, model.tokenizer.bos_token = model.tokenizer.bos_token, None
    try:
        with pytest.raises(InterpError, match="BOS token was asked for") as err:
            cache_activations(model, PROMPTS[:2], [RESID], tmp_path / "no-bos-token")
        assert "--no-bos" in err.value.fix
        assert cache_activations(model, PROMPTS[:2], [RESID], tmp_path / "no-bos-token", bos=False).hooks == (RESID,)
    finally:
        model.tokenizer.bos_token = saved
