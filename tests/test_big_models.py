"""Models larger than one device: the hook backends load with a `device_map` (accelerate places the modules on CPU,
disk or GPUs) and give Hugging Face's own logits and the usual hooks; the native engine and maps that cannot work
are refused before any weights load."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from test_adapters import make_adapter
from torch import Tensor
from transformers import AutoModelForCausalLM

import interp
import interp.loading
from interp.errors import InterpError
from interp.models.hooked import HookedModel

HOOK_BACKENDS = ("transformer_lens", "nnsight")
TOKENS = torch.tensor([[1, 5, 7, 9, 3, 2, 11], [4, 4, 8, 1, 30, 2, 6]])
# Every module of the tiny two-layer Llama on the CPU; the tests move some of them elsewhere.
ON_CPU = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.norm": "cpu",
          "model.rotary_emb": "cpu", "lm_head": "cpu"}
# The last layer offloaded to disk, listed first (transformers' pipeline, which nnsight builds, reads the first entry).
LAST_ON_DISK = {"model.layers.1": "disk", **{k: v for k, v in ON_CPU.items() if k != "model.layers.1"}}


@pytest.fixture(scope="module")
def llama(tiny_dir: Callable[[str], Path]) -> Path:
    return tiny_dir("llama")


def hf_logits(root: Path, tokens: Tensor = TOKENS) -> Tensor:
    """The oracle: Hugging Face's eager forward of the whole model on the CPU."""
    model = AutoModelForCausalLM.from_pretrained(str(root), attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        return model(tokens).logits


def hf_model_of(model: HookedModel) -> torch.nn.Module:
    """The Hugging Face model a hook backend wraps."""
    return model.bridge.original_model if model.backend == "transformer_lens" else model.lm._module


@pytest.mark.parametrize("backend", HOOK_BACKENDS)
def test_offloaded_model_gives_hugging_face_logits(backend: str, llama: Path, tmp_path: Path) -> None:
    model = interp.load(llama, backend=backend, device_map=LAST_ON_DISK, offload_folder=tmp_path)
    assert model.device == torch.device("cpu")  # the embedding's device: where inputs go
    layers = hf_model_of(model).model.layers
    assert layers[0].mlp.down_proj.weight.device.type == "cpu"
    assert layers[1].mlp.down_proj.weight.device.type == "meta"  # not in memory: read from disk when it runs
    torch.testing.assert_close(model(TOKENS), hf_logits(llama), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", HOOK_BACKENDS)
def test_offloaded_model_hooks_as_usual(backend: str, llama: Path, tmp_path: Path) -> None:
    sharded = interp.load(llama, backend=backend, device_map=LAST_ON_DISK, offload_folder=tmp_path)
    whole = interp.load(llama, backend=backend, device="cpu")
    logits, cache = sharded.run_with_cache(TOKENS)
    want_logits, want = whole.run_with_cache(TOKENS)
    assert sorted(cache) == sorted(want) == sorted(whole.hook_names())
    torch.testing.assert_close(logits, want_logits, atol=1e-5, rtol=0)
    for name in want:
        torch.testing.assert_close(cache[name], want[name], atol=1e-5, rtol=0, msg=name)
    ablate = [("blocks.1.hook_attn_out", lambda act, name: torch.zeros_like(act))]  # a hook in the offloaded layer
    with sharded.hooks(ablate), whole.hooks(ablate), torch.no_grad():
        edited = sharded(TOKENS)
        torch.testing.assert_close(edited, whole(TOKENS), atol=1e-5, rtol=0)
    assert (edited - logits).abs().max() > 1e-3  # the hook did change the output


@pytest.mark.parametrize("backend", [*HOOK_BACKENDS, "auto"])
def test_accelerate_computes_the_placement(backend: str, llama: Path) -> None:
    model = interp.load(llama, backend=backend, device_map="auto")
    assert model.backend == ("transformer_lens" if backend == "auto" else backend)  # native cannot shard
    torch.testing.assert_close(model(TOKENS), hf_logits(llama), atol=1e-5, rtol=0)


def test_transformer_lens_runs_an_offloaded_embedding(llama: Path, tmp_path: Path) -> None:
    model = interp.load(llama, backend="transformer_lens", device_map={**ON_CPU, "model.embed_tokens": "disk"},
                        offload_folder=tmp_path)
    assert model.device == torch.device("cpu")  # accelerate runs an offloaded module on the main device
    torch.testing.assert_close(model(TOKENS), hf_logits(llama), atol=1e-5, rtol=0)


def test_nnsight_refuses_an_offloaded_first_weight(llama: Path, tmp_path: Path) -> None:
    with pytest.raises(InterpError, match="first weight, model.embed_tokens.weight.*disk"):
        interp.load(llama, backend="nnsight", device_map={**ON_CPU, "model.embed_tokens": "disk"},
                    offload_folder=tmp_path)


@pytest.mark.parametrize(("settings", "match"), [
    (dict(backend="native", device_map="auto"), "backend='native'"),
    (dict(backend="nnsight", device_map="everywhere"), "unknown device_map 'everywhere'"),
    (dict(backend="nnsight", device_map={}), "non-empty dict"),
    (dict(backend="nnsight", device_map={"": f"cuda:{torch.cuda.device_count()}"}), "'' on 'cuda:"),
    (dict(backend="nnsight", device_map={"": torch.cuda.device_count()}), "GPU"),
    (dict(backend="nnsight", device_map={"": "meta"}), "where interp loads no weights"),
    (dict(backend="nnsight", device_map={"": "mps"}), "where interp loads no weights"),
    (dict(backend="nnsight", device_map={"": "cuda:x"}), "unknown device"),
    (dict(backend="nnsight", device_map={"": True}), "where interp loads no weights"),
    (dict(backend="nnsight", device_map={"": "disk"}), "no offload_folder"),
    (dict(backend="nnsight", device_map="auto", device="cpu"), "both device and device_map"),
    (dict(backend="nnsight", offload_folder="off"), "without a device_map"),
])
def test_impossible_maps_are_refused_before_the_checkpoint_is_read(settings: dict, match: str,
                                                                   tmp_path: Path) -> None:
    with pytest.raises(InterpError, match=match):  # the path does not exist: it was never looked at
        interp.load(tmp_path / "missing", **settings)


def test_offloaded_weights_are_checked_finite(llama: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(llama, broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InterpError, match="weight model.layers.1.mlp.up_proj.weight holds NaN"):
        interp.load(broken, backend="nnsight", device_map=LAST_ON_DISK, offload_folder=tmp_path / "offload")


@pytest.mark.parametrize(("device_map", "match"), [
    ({**ON_CPU, "model.layers.9": "cpu"}, "'model.layers.9', which is no module"),
    ({k: v for k, v in ON_CPU.items() if k != "lm_head"}, "places no module holding lm_head.weight"),
])
def test_maps_not_fitting_the_model_are_refused(device_map: dict, match: str, llama: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    interp.loading.verify_checkpoint(llama)  # its checks (which read weight headers) done and remembered
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", None)  # from here on, no weights may be loaded
    with pytest.raises(InterpError, match=match):
        interp.load(llama, backend="nnsight", device_map=device_map)


def test_adapter_with_device_map_is_refused(llama: Path, tmp_path: Path) -> None:
    adapter = make_adapter(llama, tmp_path / "adapter", "llama")
    with pytest.raises(InterpError, match="adapter; peft cannot merge"):
        interp.load(adapter, backend="transformer_lens", device_map="auto")


@pytest.mark.parametrize(("devices", "mixed"), [(["cpu", "disk"], False), ([0, "cuda:1"], False), (["cpu", 0], True),
                                                ({"lm_head": "disk", "model": "cuda:0"}.values(), True)])
def test_transformer_lens_placement_rule(devices: object, mixed: bool) -> None:
    from interp.models.backends.transformer_lens import check_placement

    if mixed:
        with pytest.raises(InterpError, match="mixing CPU or disk with GPUs"):
            check_placement(devices)
    else:
        check_placement(devices)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to mix with the CPU")
def test_transformer_lens_refuses_cpu_next_to_gpus() -> None:
    with pytest.raises(InterpError, match="mixing CPU or disk with GPUs"):
        interp.load("missing", backend="transformer_lens", device_map={**ON_CPU, "model.layers.1": "cuda:0"})


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", HOOK_BACKENDS)
def test_layers_split_over_two_gpus(backend: str, llama: Path) -> None:
    device_map = {**{k: "cuda:0" for k in ON_CPU}, "model.layers.1": "cuda:1", "model.norm": "cuda:1",
                  "lm_head": "cuda:1"}
    model = interp.load(llama, backend=backend, device_map=device_map)
    assert model.device == torch.device("cuda:0")
    logits, cache = model.run_with_cache(TOKENS)
    assert cache["blocks.0.hook_resid_post"].device == torch.device("cuda:0")
    assert cache["blocks.1.hook_resid_post"].device == torch.device("cuda:1")
    torch.testing.assert_close(logits.cpu(), hf_logits(llama), atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", HOOK_BACKENDS)
def test_hooked_patching_runs_on_an_offloaded_model(backend: str, llama: Path, tmp_path: Path) -> None:
    from patching.hooked import HookedPatcher

    clean, corrupted = TOKENS[:1], TOKENS[1:]
    sweeps = [HookedPatcher(model, clean, corrupted, lambda logits: logits[..., 3] - logits[..., 4]).sweep("resid_post")
              for model in (interp.load(llama, backend=backend, device_map=LAST_ON_DISK, offload_folder=tmp_path),
                            interp.load(llama, backend=backend, device="cpu"))]
    torch.testing.assert_close(sweeps[0].raw, sweeps[1].raw, atol=1e-5, rtol=0)


def test_the_native_engine_refuses_a_sharded_model(llama: Path, tmp_path: Path) -> None:
    model = interp.load(llama, backend="transformer_lens", device_map=LAST_ON_DISK, offload_folder=tmp_path)
    with pytest.raises(InterpError, match="needs the whole model on one device"):
        model.native()
    assert interp.load(llama, backend="transformer_lens", device="cpu").native() is not None
