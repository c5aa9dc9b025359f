"""PEFT (LoRA) adapter directories: loaded as the model peft merges, on every backend; refused before any compute when
their base is missing, their weights are not finite, or they adapt modules the base lacks; compared with their base by
the base-vs-post commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import interp
from clitools import assert_user_error, run
from interp.checkpoints import check_compatible, discover, read_summary, weights_sha256
from interp.errors import InterpError
from interp.loading import load_tokenizer, verify_checkpoint, weight_shapes
from interp.testing import write_hub_cache

BACKENDS = ("native", "transformer_lens", "nnsight")
# The modules each family's adapter targets (GPT-2's are Conv1D: weights stored transposed).
TARGETS = {"gpt2": ["c_attn", "c_fc"], "llama": ["q_proj", "v_proj", "down_proj"]}
TOKENS = torch.tensor([[5, 17, 100, 3, 250, 7, 41], [9, 9, 30, 9, 200, 9, 12]])
WEIGHTS = "adapter_model.safetensors"


def make_adapter(base: Path, out: Path, arch: str, seed: int = 0) -> Path:
    """A LoRA adapter of `base` saved by peft, its B matrices random (peft starts them at zero, which would make the
    merge the identity)."""
    model = AutoModelForCausalLM.from_pretrained(str(base), attn_implementation="eager")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[arch], fan_in_fan_out=arch == "gpt2")
    adapted = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    adapted.save_pretrained(out)
    return out


def edit_adapter_config(adapter: Path, **changes: object) -> Path:
    """Change fields of the adapter's adapter_config.json in place."""
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return adapter


def peft_logits(base: Path, adapter: Path) -> torch.Tensor:
    """The oracle: logits of the model peft itself merges (`PeftModel.from_pretrained(...).merge_and_unload()`)."""
    model = AutoModelForCausalLM.from_pretrained(str(base), attn_implementation="eager", dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        return merged(TOKENS).logits


@pytest.fixture(scope="module")
def adapters(tiny_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One adapter per family, built once, naming its base by local path."""
    root = tmp_path_factory.mktemp("adapters")
    return {arch: make_adapter(tiny_dir(arch), root / arch, arch) for arch in TARGETS}


@pytest.fixture()
def no_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any adapter merge (peft loading an adapter onto weights) fails the test: a refusal must come before it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an adapter was loaded onto a model")

    monkeypatch.setattr(PeftModel, "from_pretrained", refuse)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", list(TARGETS))
def test_adapter_loads_as_the_model_peft_merges(arch: str, backend: str, adapters, tiny_dir) -> None:
    adapter, base = adapters[arch], tiny_dir(arch)
    model = interp.load(adapter, backend=backend, device="cpu")
    with torch.no_grad():
        logits = model(TOKENS)
    expected = peft_logits(base, adapter)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model.native()(TOKENS), expected, atol=1e-5, rtol=0)  # converted on demand
        base_logits = interp.load(base, backend=backend, device="cpu")(TOKENS)
    assert (logits - base_logits).abs().max() > 1e-2  # the adapter changes the model


def test_adapter_reads_as_its_base(adapters, tiny_dir) -> None:
    adapter, base = adapters["gpt2"], tiny_dir("gpt2")
    assert verify_checkpoint(adapter) == adapter
    assert read_summary(adapter) == read_summary(base)
    assert weight_shapes(adapter) == weight_shapes(base)  # the merged model keeps the base's tensors
    check_compatible(base, adapter)
    check_compatible(adapter, base)
    with pytest.raises(InterpError, match="checkpoints differ"):
        check_compatible(adapters["llama"], base)


def test_tokenizer_from_the_adapter_else_the_base(adapters, tiny_dir, tmp_path: Path) -> None:
    adapter, base = adapters["gpt2"], tiny_dir("gpt2")
    assert load_tokenizer(adapter).get_vocab() == load_tokenizer(base).get_vocab()
    own = make_adapter(base, tmp_path / "own", "gpt2")
    tokenizer = load_tokenizer(base)
    tokenizer.add_tokens(["<adapter-token>"])
    tokenizer.save_pretrained(own)
    assert "<adapter-token>" in load_tokenizer(own).get_vocab()
    assert "<adapter-token>" not in load_tokenizer(base).get_vocab()


def test_base_vs_adapter_runs_end_to_end(adapters, tiny_dir, tmp_path: Path, capsys) -> None:
    from interp.results import read_results
    from interp.testing import _corpus

    lines = _corpus()[:24]
    for name, rows in (("train.csv", lines[:16]), ("eval.csv", lines[16:])):
        (tmp_path / name).write_text("statement,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(rows)))
    code, _, err = run(["directions", "truth", tiny_dir("gpt2"), adapters["gpt2"], "--out", tmp_path / "truth",
                        "--data", tmp_path / "train.csv", "--eval", tmp_path / "eval.csv", "--n-steer", "4"], capsys)
    assert code == 0, err
    truth = read_results(tmp_path / "truth")
    assert truth.tensors and all(bool(torch.isfinite(t).all()) for t in truth.tensors.values())
    recorded = {entry["role"]: entry["sha256"] for entry in truth.summary["inputs"]}
    assert recorded["post"] == weights_sha256(adapters["gpt2"]) != recorded["base"] == weights_sha256(tiny_dir("gpt2"))


def test_adapters_are_told_apart_by_their_weights(adapters, tiny_dir, tmp_path: Path) -> None:
    from interp.results import input_identity

    other = make_adapter(tiny_dir("gpt2"), tmp_path / "other", "gpt2", seed=1)
    hashes = [input_identity("post", path)["sha256"] for path in (adapters["gpt2"], other, tiny_dir("gpt2"))]
    assert len(set(hashes)) == 3


def test_a_run_of_adapters_is_a_run(adapters, tiny_dir, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "lora-run"
    for step, seed in ((500, 1), (100, 2)):
        make_adapter(tiny_dir("gpt2"), run_dir / f"checkpoint-{step}", "gpt2", seed=seed)
    assert [c.step for c in discover(run_dir)] == [100, 500]
    code, out, err = run(["info", run_dir], capsys)
    assert code == 0, err
    assert "2 checkpoints" in out and "checkpoint-100" in out and "checkpoint-500" in out
    assert_user_error(run(_truth_argv(tiny_dir("gpt2"), adapters["gpt2"], run_dir / "checkpoint-100"), capsys),
                      "checkpoint")
    assert sorted(p.name for p in (run_dir / "checkpoint-100").iterdir()) == ["README.md", "adapter_config.json",
                                                                              WEIGHTS]


def _truth_argv(base: Path, post: Path, out: Path) -> list[object]:
    """A base-vs-post command line (its data is checked only after both checkpoints)."""
    return ["directions", "truth", base, post, "--out", out, "--data", out.parent / "none.csv"]


def test_adapter_with_a_missing_base_is_refused(adapters, tiny_dir, tmp_path: Path, capsys, no_merge) -> None:
    adapter = make_adapter(tiny_dir("gpt2"), tmp_path / "adapter", "gpt2")
    edit_adapter_config(adapter, base_model_name_or_path=str(tmp_path / "gone"))
    assert_user_error(run(_truth_argv(tiny_dir("gpt2"), adapter, tmp_path / "out"), capsys),
                      str(tmp_path / "gone"), "base_model_name_or_path")
    assert not (tmp_path / "out").exists()
    edit_adapter_config(adapter, base_model_name_or_path="tiny-org/not-cached")
    with pytest.raises(InterpError, match="huggingface-cli download tiny-org/not-cached"):
        interp.load(adapter, backend="native", device="cpu")


def test_adapter_with_nan_weights_is_refused(tiny_dir, tmp_path: Path, capsys, no_merge) -> None:
    adapter = make_adapter(tiny_dir("gpt2"), tmp_path / "adapter", "gpt2")
    tensors = load_file(adapter / WEIGHTS)
    name = sorted(k for k in tensors if "lora_A" in k)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, adapter / WEIGHTS, metadata={"format": "pt"})
    assert_user_error(run(_truth_argv(tiny_dir("gpt2"), adapter, tmp_path / "out"), capsys), name, "NaN")
    assert not (tmp_path / "out").exists()


def test_adapter_for_modules_the_base_lacks_is_refused(adapters, tiny_dir, tmp_path: Path, no_merge) -> None:
    adapter = make_adapter(tiny_dir("gpt2"), tmp_path / "targets", "gpt2")
    edit_adapter_config(adapter, target_modules=["q_proj"])  # names no module of GPT-2
    with pytest.raises(InterpError, match="q_proj"):
        verify_checkpoint(adapter)
    extra = make_adapter(tiny_dir("gpt2"), tmp_path / "extra", "gpt2")
    tensors = load_file(extra / WEIGHTS)
    tensors["base_model.model.transformer.h.9.attn.c_attn.lora_A.weight"] = torch.zeros(4, 64)  # no layer 9
    save_file(tensors, extra / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(InterpError, match=r"transformer\.h\.9\.attn\.c_attn"):
        interp.load(extra, backend="native", device="cpu")
    wrong = make_adapter(tiny_dir("gpt2"), tmp_path / "shape", "gpt2")
    tensors = load_file(wrong / WEIGHTS)
    name = sorted(k for k in tensors if "lora_A" in k)[0]
    tensors[name] = torch.zeros(4, 32)
    save_file(tensors, wrong / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(InterpError, match="shape"):
        verify_checkpoint(wrong)


def test_adapter_of_a_hub_model(adapters, tiny_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_hub_cache(cache, "tiny-org/tiny-gpt2", "main", tiny_dir("gpt2"))
    adapter = make_adapter(tiny_dir("gpt2"), tmp_path / "adapter", "gpt2")
    expected = peft_logits(tiny_dir("gpt2"), adapter)
    edit_adapter_config(adapter, base_model_name_or_path="tiny-org/tiny-gpt2")
    with torch.no_grad():
        logits = interp.load(adapter, backend="native", device="cpu")(TOKENS)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    edit_adapter_config(adapter, revision="step5")
    with pytest.raises(InterpError, match="huggingface-cli download tiny-org/tiny-gpt2 --revision step5"):
        verify_checkpoint(adapter)
