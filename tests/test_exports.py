"""`interp export` and `interp.exports`: paired caches read back as dictionary_learning and SAELens read them (numpy
memmaps with the recorded shape and dtype; `datasets.load_from_disk`), equal to `interp.cache`'s activations of the
same prompts for both models; direction files equal to the results' tensors; `to_activation_cache` against
TransformerLens's own `run_with_cache`; hostile inputs refused with exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import interp
from interp.cache import cache_activations, open_cache
from interp.data.tokens import encode
from interp.errors import InterpError
from interp.loading import load_tokenizer
from interp.exports import activations_saelens, direction_files, paired_cache_dictionary_learning
from interp.results import axes, write_results
from interp.testing import tiny_checkpoint
from tests.clitools import assert_user_error, run

HOOK = "blocks.1.hook_resid_post"
PROMPTS = ["the cat sat on the mat", "a b", "one two three four five six seven", "x y z"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny llama base and a differently initialised post model sharing its tokenizer."""
    root = tmp_path_factory.mktemp("pair")
    return tiny_checkpoint("llama", root / "base"), tiny_checkpoint("llama", root / "post", seed=1)


@pytest.fixture(scope="module")
def oracle(pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[torch.Tensor]]:
    """Each model's HOOK activations per prompt (real tokens only), from `interp.cache` on the native backend."""
    root = tmp_path_factory.mktemp("oracle")
    found = {}
    for role, path in zip(("base", "post"), pair):
        handle = cache_activations(path, PROMPTS, [HOOK], root / role, positions="all", batch_size=3)
        acts, lengths = handle.load(HOOK), handle.lengths()
        found[role] = [acts[i, :n] for i, n in enumerate(lengths.tolist())]
    assert not torch.allclose(found["base"][0], found["post"][0])  # two different models, or the test proves little
    return found


def read_dictionary_learning(store: Path) -> torch.Tensor:
    """Every row of a dictionary_learning cache, read as its `ActivationCache`/`ActivationShard` do."""
    config = json.loads((store / "config.json").read_text())
    rows = []
    for i in range(config["shard_count"]):
        meta = json.loads((store / f"shard_{i}.meta").read_text())
        dtype = getattr(torch, meta["dtype"])
        np_dtype = np.int16 if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
        memmap = np.memmap(store / f"shard_{i}.memmap", dtype=np_dtype, mode="r", shape=tuple(meta["shape"]))
        rows.append(torch.tensor(np.array(memmap)).view(dtype))
    every = torch.cat(rows)
    assert len(every) == config["total_size"] and every.shape[1] == config["d_model"]
    return every


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dictionary_learning_round_trip(pair: tuple[Path, Path], oracle: dict[str, list[torch.Tensor]],
                                        tmp_path: Path, dtype: str) -> None:
    base, post = (interp.load(p, backend="native") for p in pair)
    out = paired_cache_dictionary_learning(base, post, PROMPTS, HOOK, tmp_path / "dl", batch_size=3, shard_size=7,
                                           dtype=dtype)
    ids = [encode(base.tokenizer, p) for p in PROMPTS]
    for role in ("base", "post"):
        rows = read_dictionary_learning(out / role / f"{HOOK}_out")
        ranges = torch.load(out / role / "sequence_ranges.pt")
        tokens = torch.load(out / role / "tokens.pt")
        assert ranges.tolist() == np.cumsum([0, *map(len, ids)]).tolist()
        assert tokens.tolist() == [t for s in ids for t in s]
        assert len(list((out / role / f"{HOOK}_out").glob("shard_*.memmap"))) == -(-len(tokens) // 7)
        want = torch.cat(oracle[role]).to(getattr(torch, dtype))
        torch.testing.assert_close(rows, want, atol=1e-5, rtol=0)
        for i, expected in enumerate(oracle[role]):  # PairedActivationCache's rows: same token, same position
            assert torch.allclose(rows[ranges[i]:ranges[i + 1]].float(), expected, atol=2e-2 if dtype != "float32"
                                  else 1e-5)
        mean, std = (torch.load(out / role / f"{HOOK}_out" / f) for f in ("mean.pt", "std.pt"))
        torch.testing.assert_close(mean, rows.double().mean(0))
        torch.testing.assert_close(std, rows.double().std(0))


def test_saelens_round_trip(pair: tuple[Path, Path], oracle: dict[str, list[torch.Tensor]], tmp_path: Path) -> None:
    import datasets

    base, post = (interp.load(p, backend="transformer_lens") for p in pair)
    out = activations_saelens(base, post, PROMPTS, HOOK, tmp_path / "sae", batch_size=3)
    ids = [encode(base.tokenizer, p) for p in PROMPTS]
    size = min(map(len, ids))
    for role in ("base", "post"):
        ds = datasets.load_from_disk(str(out / role))  # what SAELens's ActivationsStore does with the path
        assert ds.features[HOOK].shape == (size, base.summary.d_model)
        ds.set_format(type="torch", columns=[HOOK, "token_ids"])
        assert ds[:][HOOK].shape == (len(PROMPTS), size, base.summary.d_model)
        torch.testing.assert_close(ds[:][HOOK], torch.stack([a[:size] for a in oracle[role]]), atol=1e-4, rtol=0)
        assert ds[:]["token_ids"].tolist() == [s[:size] for s in ids]


def _fake_results(path: Path, analysis: str, n_layers: int = 3, d_model: int = 8) -> dict[str, torch.Tensor]:
    """A results directory shaped like `directions refusal|truth`'s (or another analysis's)."""
    names = {"refusal": ("direction_base", "direction_post"), "truth": ("theta_base", "theta_post"),
             "lens": ("direction_base", "direction_post")}[analysis]
    tensors = {n: torch.randn(n_layers, d_model) for n in names}
    summary = {"refusal": {"layer": 1, "pos": -2}, "truth": {"probe_layer": 2, "hook": "resid_post"},
               "lens": {"layer": 1}}[analysis]
    write_results(path, tensors, summary, analysis=analysis, axes={n: axes("layer", "d_model") for n in names},
                  tokenization={"bos": True, "padding": "left"}, inputs=[])
    return tensors


@pytest.mark.parametrize("analysis", ["refusal", "truth"])
def test_direction_files(tmp_path: Path, analysis: str, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = _fake_results(tmp_path / "res", analysis)
    code, out, err = run(["export", tmp_path / "res", "--format", "direction", "--out", tmp_path / "dirs"], capsys)
    assert code == 0, err
    layer, pos, hook = (1, -2, "blocks.1.hook_resid_pre") if analysis == "refusal" else (2, None,
                                                                                        "blocks.2.hook_resid_post")
    for role in ("base", "post"):
        direction = torch.load(tmp_path / "dirs" / role / "direction.pt")
        name = f"direction_{role}" if analysis == "refusal" else f"theta_{role}"
        assert torch.equal(direction, tensors[name][layer])
        meta = json.loads((tmp_path / "dirs" / role / "direction_metadata.json").read_text())
        assert (meta["pos"], meta["layer"], meta["hook"]) == (pos, layer, hook)


def test_truth_direction_export_records_the_position_read(pair: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A real `directions truth` run read at --pos -2: its summary records the position and the export writes it."""
    from interp.results import read_results
    from interp.testing import _corpus

    lines = _corpus()[:24]
    for name, rows in (("train.csv", lines[:16]), ("eval.csv", lines[16:])):
        (tmp_path / name).write_text("statement,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(rows)))
    code, _, err = run(["directions", "truth", *pair, "--out", tmp_path / "truth", "--data", tmp_path / "train.csv",
                        "--eval", tmp_path / "eval.csv", "--n-steer", "4", "--pos", "-2"], capsys)
    assert code == 0, err
    res = read_results(tmp_path / "truth")
    assert res.summary["pos"] == -2
    code, _, err = run(["export", tmp_path / "truth", "--format", "direction", "--out", tmp_path / "dirs"], capsys)
    assert code == 0, err
    layer = res.summary["probe_layer"]
    for role in ("base", "post"):
        meta = json.loads((tmp_path / "dirs" / role / "direction_metadata.json").read_text())
        assert (meta["pos"], meta["layer"], meta["hook"]) == (-2, layer, f"blocks.{layer}.hook_resid_post")
        assert torch.equal(torch.load(tmp_path / "dirs" / role / "direction.pt"), res.tensors[f"theta_{role}"][layer])


def test_to_activation_cache_matches_transformer_lens(pair: tuple[Path, Path]) -> None:
    model = interp.load(pair[0], backend="transformer_lens")
    native = interp.load(pair[0], backend="native")
    tokens = model.to_tokens(PROMPTS[:2])
    n = model.summary.n_layers
    names = ["hook_embed", *(f"blocks.{l}.hook_{s}" for l in range(n)
                             for s in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"))]
    _, ours = native.run_with_cache(tokens, names=names)  # an interp cache, from another backend
    cache = model.to_activation_cache(ours, tokens)
    _, reference = model.bridge.run_with_cache(tokens)  # TransformerLens's own cache: the oracle
    for kwargs in ({}, {"apply_ln": True}, {"incl_mid": True}):
        torch.testing.assert_close(cache.accumulated_resid(**kwargs), reference.accumulated_resid(**kwargs),
                                   atol=1e-4, rtol=1e-4)
    for kwargs in ({}, {"mode": "attn"}, {"layer": 1, "mlp_input": True}):
        torch.testing.assert_close(cache.decompose_resid(**kwargs), reference.decompose_resid(**kwargs),
                                   atol=1e-4, rtol=1e-4)
    # the decomposition adds up to the final residual stream (TransformerLens's definition, independent of both)
    torch.testing.assert_close(cache.decompose_resid().sum(0), ours[f"blocks.{n - 1}.hook_resid_post"], atol=1e-4,
                               rtol=1e-4)
    with pytest.raises(InterpError, match="not the batch and positions"):
        model.to_activation_cache(ours, tokens[:1])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])  # LayerNorm, RMSNorm, parallel residual
def test_apply_ln_on_an_interp_cache_matches_transformer_lens(arch: str, tiny_dir: Callable[[str], Path]) -> None:
    """The norms' hook_scale, computed from the cached residual stream, equal the bridge's own; so do
    TransformerLens's helpers with apply_ln=True at the final layer and at a block's attention and MLP inputs."""
    model = interp.load(tiny_dir(arch), backend="transformer_lens")
    tokens = model.to_tokens(PROMPTS[:2])
    n = model.summary.n_layers
    sites = ("resid_pre", "attn_out", "mlp_out", "resid_post") + (() if model.parallel_attn_mlp else ("resid_mid",))
    embeds = [name for name in ("hook_embed", "hook_pos_embed") if name in model.hook_names()]
    names = [*embeds, *(f"blocks.{l}.hook_{s}" for l in range(n) for s in sites)]
    _, ours = interp.load(tiny_dir(arch), backend="native").run_with_cache(tokens, names=names)
    cache = model.to_activation_cache(ours, tokens)
    _, reference = model.bridge.run_with_cache(tokens)
    scales = [k for k in reference.keys() if k.endswith(".hook_scale")]
    assert len(scales) == 2 * n + 1
    for key in scales:
        assert cache[key].shape == reference[key].shape
        torch.testing.assert_close(cache[key], reference[key], atol=1e-5, rtol=1e-5)
    calls = [("decompose_resid", {}), ("decompose_resid", {"mode": "attn"}), ("decompose_resid", {"layer": 1}),
             ("decompose_resid", {"layer": 1, "mlp_input": True}), ("accumulated_resid", {}),
             ("accumulated_resid", {"layer": 1})]
    if not model.parallel_attn_mlp:  # no resid_mid there, in TransformerLens's cache either
        calls.append(("accumulated_resid", {"layer": 1, "mlp_input": True, "incl_mid": True}))
    for helper, kwargs in calls:
        got, want = (getattr(c, helper)(apply_ln=True, **kwargs) for c in (cache, reference))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _swap_tokens(ckpt: Path, dest: Path) -> Path:
    """A copy of `ckpt` whose tokenizer gives two tokens of the first prompt each other's ids (same vocabulary
    size, so only the ids of the prompts differ)."""
    shutil.copytree(ckpt, dest)
    spec = json.loads((dest / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokenizer = load_tokenizer(ckpt)
    used = tokenizer.convert_ids_to_tokens(encode(tokenizer, PROMPTS[0], False))
    a, b = sorted(set(used))[:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (dest / "tokenizer.json").write_text(json.dumps(spec))
    return dest


def test_hostile_inputs_refused(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, post = pair
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    args = ["--prompts", prompts, "--hook", HOOK]
    swapped = _swap_tokens(post, tmp_path / "swapped")
    assert_user_error(run(["export", base, swapped, "--format", "saelens", *args, "--out", tmp_path / "a"], capsys),
                      "tokenizer")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert_user_error(run(["export", base, post, "--format", "dictionary_learning", *args, "--out", full], capsys),
                      "already holds")
    assert (full / "notes.txt").read_text() == "mine"
    _fake_results(tmp_path / "lens", "lens")
    assert_user_error(run(["export", tmp_path / "lens", "--format", "direction", "--out", tmp_path / "d"], capsys),
                      "lens")
    for argv, needle in (
        (["export", base, post, "--format", "npz", *args], "--format"),
        (["export", base, "--format", "saelens", *args], "BASE POST"),
        (["export", base, post, "--format", "saelens", "--prompts", prompts, "--hook", "blocks.0.attn.hook_pattern"],
         "position axis"),
        (["export", base, post, "--format", "saelens", *args, "--dtype", "bfloat16"], "bfloat16"),
        (["export", base, post, "--format", "saelens", *args, "--context-size", "99"], "--context-size"),
        (["export", base, post, "--format", "dictionary_learning", *args, "--batch-size", "0"], "--batch-size"),
        (["export", base, post, "--format", "dictionary_learning", "--prompts", prompts, "--hook",
          "blocks.1.hook_resid_postx"], "blocks.1.hook_resid_post"),
    ):
        assert_user_error(run([*argv, "--out", tmp_path / "o"], capsys), needle)
    assert not (tmp_path / "o").exists() and not (tmp_path / "a").exists()


@pytest.mark.zoo
def test_zoo_paired_export(zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The zoo's base and chat models export as one PairedActivationCache: same rows, different activations."""
    from interp.checkpoints import Run

    base, chat = Run.open(zoo / "base").checkpoints[-1].path, Run.open(zoo / "chat").checkpoints[-1].path
    prompts = tmp_path / "p.txt"
    prompts.write_text("how do I bake bread\nwhat is the capital of france\n")
    code, _, err = run(["export", base, chat, "--format", "dictionary_learning", "--prompts", prompts, "--hook",
                        "blocks.1.hook_resid_post", "--out", tmp_path / "dl"], capsys)
    assert code == 0, err
    rows = {r: read_dictionary_learning(tmp_path / "dl" / r / "blocks.1.hook_resid_post_out") for r in ("base", "post")}
    assert rows["base"].shape == rows["post"].shape
    want = open_cache(cache_activations(chat, prompts.read_text().splitlines(), ["blocks.1.hook_resid_post"],
                                        tmp_path / "c").path)
    lengths = want.lengths().tolist()
    acts = want.load("blocks.1.hook_resid_post")
    torch.testing.assert_close(rows["post"], torch.cat([acts[i, :n] for i, n in enumerate(lengths)]), atol=1e-4,
                               rtol=0)
    assert (rows["base"] - rows["post"]).norm() > 0


def test_method_refuses_unpaired_tokens(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Two tokenizers that split a prompt differently give no paired positions: refused before any forward pass."""
    base = interp.load(pair[0], backend="native")
    swapped = interp.load(_swap_tokens(pair[1], tmp_path / "swapped"), backend="native")
    with pytest.raises(InterpError, match="other token ids"):
        paired_cache_dictionary_learning(base, swapped, PROMPTS, HOOK, tmp_path / "out")
    assert not (tmp_path / "out").exists()
