"""Run discovery (directory names, manifests, single checkpoints), lazy loading and compatibility checks."""

from __future__ import annotations

import gc
import itertools
import json
import shutil
import weakref
from pathlib import Path
from typing import Callable

import pytest

from interp.checkpoints import Checkpoint, Run, check_compatible, discover, parse_step, read_summary, step_of
from interp.errors import InterpError


@pytest.mark.parametrize("name, step", [
    ("checkpoint-100", 100), ("step100", 100), ("step_000300", 300), ("step-7", 7), ("global_step25", 25),
    ("step_0", 0), ("final", None), ("checkpoint_100", None), ("step", None), ("step_12a", None),
    ("xstep_12", None), ("global_step-3", None),
])
def test_parse_step(name: str, step: int | None) -> None:
    assert parse_step(name) == step


def _fake_checkpoint(path: Path) -> Path:
    """A directory discovery accepts as a checkpoint: it only looks for config.json."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    return path


def test_discover_sorts_mixed_names_numerically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name in ["step_1000", "checkpoint-20", "step3", "global_step100", "step-0"]:
        _fake_checkpoint(run / name)
    (run / "step_50").mkdir()  # no config.json: not a checkpoint
    _fake_checkpoint(run / "final")  # no step in the name: not part of the run
    (run / "step_7.txt").write_text("not a directory")
    (run / "config.json").write_text("{}")  # a Trainer output directory is a checkpoint too: its steps win
    found = discover(run)
    assert [c.step for c in found] == [0, 3, 20, 100, 1000]
    assert [c.path.name for c in found] == ["step-0", "step3", "checkpoint-20", "global_step100", "step_1000"]
    assert {c.run for c in found} == {"run"}
    assert all(c.path.is_absolute() for c in found)
    assert Run.open(run).steps == [0, 3, 20, 100, 1000]


def test_single_checkpoint_is_a_run_of_one(tmp_path: Path) -> None:
    stepped = _fake_checkpoint(tmp_path / "myrun" / "step_000300")
    assert discover(stepped) == [Checkpoint(stepped.resolve(), 300, "myrun")]
    plain = _fake_checkpoint(tmp_path / "base-model")
    assert discover(plain) == [Checkpoint(plain.resolve(), None, "base-model")]
    assert discover(plain)[0].label == "base-model"
    assert discover(stepped)[0].label == "step_000300"


def test_manifest_is_read_in_listed_order(tmp_path: Path) -> None:
    """The listed order is the user's statement: kept, not sorted by step (a run's directories in training order,
    other directories anywhere); the manifest's steps beat the names'."""
    run = tmp_path / "run"
    for name in ["late", "early", "mid"]:
        _fake_checkpoint(run / "ckpts" / name)
    _fake_checkpoint(run / "step_5")  # ignored: the manifest is the whole truth
    outside = _fake_checkpoint(tmp_path / "elsewhere")
    (run / "checkpoints.json").write_text(json.dumps({"checkpoints": [
        {"path": "ckpts/early", "step": 10}, {"path": str(outside), "step": 400}, {"path": "ckpts/mid", "step": 50},
        {"path": "ckpts/late", "step": 900},
    ]}))
    found = discover(run)
    assert [(c.path.name, c.step) for c in found] == [("early", 10), ("elsewhere", 400), ("mid", 50), ("late", 900)]
    assert Run.open(run).steps == [10, 400, 50, 900]
    assert step_of(run / "ckpts" / "mid") is None  # the manifest lives in the run directory, not in ckpts/
    (run / "checkpoints.json").write_text(json.dumps([{"path": "step_5", "step": 77}]))  # a bare list works too
    assert [(c.path.name, c.step) for c in discover(run)] == [("step_5", 77)]
    assert step_of(run / "step_5") == 77  # the manifest's step beats the name's


def test_a_chain_manifest_keeps_its_order_across_runs(tmp_path: Path) -> None:
    """base/step_001800 then chat/step_000017 (steps from the names): the chat stage comes second although 17 < 1800;
    within one directory a later stage may restart its steps."""
    stages = tmp_path / "stages"
    for name in ["base/step_001800", "chat/step_000017", "chat/stage1-step500", "chat/stage2-step100"]:
        _fake_checkpoint(stages / name)
    (stages / "checkpoints.json").write_text(json.dumps({"checkpoints": [
        {"path": "base/step_001800"}, {"path": "chat/step_000017"}, {"path": "chat/stage1-step500"},
        {"path": "chat/stage2-step100"}]}))
    found = discover(stages)
    assert [c.label for c in found] == ["step_001800", "step_000017", "stage1-step_000500", "stage2-step_000100"]
    assert [c.path for c in found] == [(stages / n).resolve() for n in
                                       ["base/step_001800", "chat/step_000017", "chat/stage1-step500",
                                        "chat/stage2-step100"]]


def test_a_manifest_running_one_directory_backwards_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name in ["step_100", "step_200", "step_300"]:
        _fake_checkpoint(run / name)
    (run / "checkpoints.json").write_text(json.dumps([{"path": "step_100"}, {"path": "step_300"},
                                                      {"path": "step_200"}]))
    with pytest.raises(InterpError, match="lists step_000200 after step_000300, both in .*runs that directory "
                                          "backwards") as err:
        discover(run)
    assert "training order" in err.value.fix and str(run / "checkpoints.json") in str(err.value)
    assert step_of(run / "step_200") == 200  # a broken manifest does not stop one checkpoint from loading


@pytest.mark.parametrize("manifest, needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"checkpoints": [{"step": 1}]}), "string 'path'"),
    (json.dumps({"checkpoints": [{"path": "a", "step": "ten"}]}), "integer 'step'"),
    (json.dumps({"checkpoints": []}), "lists no checkpoints"),
    (json.dumps({"checkpoints": [{"path": "missing", "step": 1}]}), "not a checkpoint directory"),
])
def test_bad_manifest_is_a_user_error(tmp_path: Path, manifest: str, needle: str) -> None:
    run = tmp_path / "run"
    _fake_checkpoint(run / "a")
    (run / "checkpoints.json").write_text(manifest)
    with pytest.raises(InterpError, match=needle) as err:
        discover(run)
    assert err.value.fix and "checkpoints.json" in str(err.value)


def test_nothing_found_errors_name_the_path_and_a_fix(tmp_path: Path) -> None:
    with pytest.raises(InterpError, match="does not exist") as err:
        discover(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value) and err.value.fix
    empty = tmp_path / "empty"
    _fake_checkpoint(empty / "notastep")
    with pytest.raises(InterpError, match="holds no checkpoints") as err:
        discover(empty)
    assert "checkpoint-N" in err.value.fix
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InterpError, match="is a file"):
        discover(tmp_path / "file.txt")


def test_duplicate_steps_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_checkpoint(run / "step_100")
    _fake_checkpoint(run / "checkpoint-100")
    with pytest.raises(InterpError, match="two checkpoints for step 100"):
        discover(run)


# --- with real tiny checkpoints --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Callable[[str], Path]) -> Path:
    """A run of three tiny GPT-2 checkpoints (different seeds, same shapes and tokenizer)."""
    from interp.testing import tiny_checkpoint

    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_dir("gpt2"), run / "step_20")
    for step, seed in [(5, 1), (100, 2)]:
        tiny_checkpoint("gpt2", run / f"checkpoint-{step}", seed=seed)
    return run


def test_iter_models_is_lazy_and_in_step_order(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import interp.loading

    loaded: list[Path] = []
    alive: list[weakref.ref] = []
    limit = {"earlier models alive at a load": 1}
    real_load = interp.loading.load

    def counting_load(path: Path, **options: object) -> object:
        gc.collect()
        loaded.append(Path(path))
        assert sum(r() is not None for r in alive) <= limit["earlier models alive at a load"]
        model = real_load(path, **options)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(interp.loading, "load", counting_load)
    models = Run.open(tiny_run).iter_models(backend="native")
    assert loaded == []  # nothing loads before iteration starts
    first = next(models)
    assert loaded == [tiny_run / "checkpoint-5"] and first.step == 5
    del first
    assert [m.step for m in models] == [20, 100]
    assert loaded == [tiny_run / "checkpoint-5", tiny_run / "step_20", tiny_run / "checkpoint-100"]
    limit["earlier models alive at a load"] = 2  # the pair the caller holds while the next model loads
    pairs = [(a.step, b.step) for a, b in itertools.pairwise(Run.open(tiny_run).iter_models(backend="native"))]
    assert pairs == [(5, 20), (20, 100)]


def test_compatible_checkpoints_pass(tiny_run: Path) -> None:
    check_compatible(tiny_run / "step_20", tiny_run / "checkpoint-5")
    Run.open(tiny_run).check_compatible()


@pytest.mark.parametrize("overrides, needle", [
    ({"num_hidden_layers": 3}, "n_layers 2 but"),
    ({"hidden_size": 32}, "d_model 64 but"),
    ({"max_position_embeddings": 64}, "n_ctx 128 but"),
    ({"n_inner": 128}, "d_mlp 256 but"),
])
def test_mismatched_shapes_are_refused_naming_both(tmp_path: Path, tiny_dir: Callable[[str], Path],
                                                  overrides: dict[str, int], needle: str) -> None:
    from interp.testing import tiny_checkpoint

    other = tiny_checkpoint("gpt2", tmp_path / "other", **overrides)
    with pytest.raises(InterpError, match=needle) as err:
        check_compatible(tiny_dir("gpt2"), other)
    assert str(tiny_dir("gpt2")) in str(err.value) and str(other) in str(err.value) and err.value.fix


def test_other_architecture_is_refused(tiny_dir: Callable[[str], Path]) -> None:
    with pytest.raises(InterpError, match="architecture"):
        check_compatible(tiny_dir("gpt2"), tiny_dir("llama"))


def test_weight_shapes_are_compared_even_when_summaries_agree(tmp_path: Path,
                                                              tiny_dir: Callable[[str], Path]) -> None:
    """A config entry the summary does not show (Llama's attention_bias) still adds weights."""
    from interp.testing import tiny_checkpoint

    other = tiny_checkpoint("llama", tmp_path / "with_bias", attention_bias=True)
    assert read_summary(other).as_dict() == read_summary(tiny_dir("llama")).as_dict() | {
        "n_params": read_summary(other).n_params}
    bias = r"weight model.layers.0.self_attn.k_proj.bias of shape \(absent\) but .* has \(32,\)"
    with pytest.raises(InterpError, match=bias):
        check_compatible(tiny_dir("llama"), other)


def test_read_summary_matches_the_loaded_model(tiny_checkpoints: Path) -> None:
    """The config-only summary equals the one the native backend computes from the loaded weights."""
    from interp.loading import load

    assert read_summary(tiny_checkpoints) == load(tiny_checkpoints, backend="native").summary


def test_different_tokenizer_is_refused(tmp_path: Path, tiny_dir: Callable[[str], Path]) -> None:
    other = tmp_path / "other_tok"
    shutil.copytree(tiny_dir("gpt2"), other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab)[10], sorted(vocab)[11]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(InterpError, match="different tokenizer .2 tokens differ") as err:
        check_compatible(tiny_dir("gpt2"), other)
    assert str(other) in str(err.value)


def test_run_with_a_mismatched_checkpoint_is_refused_before_loading(tiny_run: Path, tmp_path: Path) -> None:
    from interp.testing import tiny_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "step_20", run / "step_20")
    tiny_checkpoint("gpt2", run / "step_40", num_hidden_layers=3)
    with pytest.raises(InterpError, match="step_20.*step_40"):
        next(Run.open(run).iter_models(backend="native"))
