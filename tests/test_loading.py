"""`interp.load` and the backends: logits and activations against Hugging Face, the same hooks on every backend,
edits through hooks, and clear errors for directories that are not checkpoints."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import einops
import pytest
import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, GPTJConfig, PreTrainedModel

import interp
from interp.errors import InterpError
from interp.loading import resolve_backend
from interp.models.arch import specs
from interp.models.hf import block_relative
from interp.models.hooked import HookedModel
from interp.testing import ARCHITECTURES, train_tiny_tokenizer

BACKENDS = ("transformer_lens", "nnsight", "native")
OURS = ("transformer_lens", "nnsight")
# Explicit ids (no BOS/EOS/PAD, ids 0-2), two rows so batch handling is exercised.
TOKENS = torch.tensor([[5, 17, 100, 3, 250, 7, 41], [9, 9, 30, 9, 200, 9, 12]])
ATOL = 1e-4
# Independent of the backends: each family's attention output projection in the Hugging Face module tree.
O_PROJ = {"gpt2": "transformer.h.{l}.attn.c_proj", "gpt_neox": "gpt_neox.layers.{l}.attention.dense"}
LLAMA_LAYER = "model.layers.{l}"  # every other family's decoder layer
LLAMA_O_PROJ = LLAMA_LAYER + ".self_attn.o_proj"


@pytest.fixture(scope="module")
def model(tiny_dir: Callable[[str], Path]) -> Callable[[str, str], HookedModel]:
    """`model(arch, backend)`: loaded once per module."""
    loaded: dict[tuple[str, str], HookedModel] = {}

    def get(arch: str, backend: str) -> HookedModel:
        if (arch, backend) not in loaded:
            loaded[arch, backend] = interp.load(tiny_dir(arch), backend=backend, device="cpu")
        return loaded[arch, backend]

    return get


@pytest.fixture(scope="module")
def hf(tiny_dir: Callable[[str], Path]) -> Callable[[str], PreTrainedModel]:
    """`hf(arch)`: the reference Hugging Face model with eager attention."""
    loaded: dict[str, PreTrainedModel] = {}

    def get(arch: str) -> PreTrainedModel:
        if arch not in loaded:
            loaded[arch] = AutoModelForCausalLM.from_pretrained(tiny_dir(arch), attn_implementation="eager").eval()
        return loaded[arch]

    return get


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=ATOL, rtol=0)


def _same_activation(name: str, a: Tensor, b: Tensor) -> bool:
    """Equal within ATOL; attention scores only where the mask (causal, sliding window) lets a query see a key
    (backends fill masked entries with -inf or the dtype's minimum): both must mask the same entries."""
    if not name.endswith("hook_attn_scores"):
        return _close(a, b)
    if a.shape != b.shape:
        return False
    masked = a < -1e30
    return bool((masked == (b < -1e30)).all()) and bool(masked.any()) and _close(a[~masked], b[~masked])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_equal_hugging_face(arch: str, backend: str, model, hf) -> None:
    with torch.no_grad():
        expected = hf(arch)(TOKENS).logits
        got = model(arch, backend)(TOKENS)
    assert got.shape == (2, TOKENS.shape[1], 384)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backend", ("nnsight", "native"))
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_hook_matches_transformer_lens(arch: str, backend: str, model) -> None:
    """Every hook name gives the same tensor as TransformerLens's bridge (which names them for us); nnsight has the
    native model's names, the bridge all but those its family's spec says it cannot serve (`bridge_missing`)."""
    reference, other = model(arch, "transformer_lens"), model(arch, backend)
    missing = specs()[arch].bridge_missing
    assert other.hook_names() == model(arch, "native").hook_names()
    assert [name for name in other.hook_names() if block_relative(name) not in missing] == reference.hook_names()
    _, expected = reference.run_with_cache(TOKENS)
    _, got = other.run_with_cache(TOKENS, names=reference.hook_names())
    assert sorted(got) == sorted(expected) == sorted(reference.hook_names())
    mismatched = [name for name in expected if not _same_activation(name, got[name], expected[name])]
    assert not mismatched, {name: (tuple(got[name].shape), tuple(expected[name].shape)) for name in mismatched}


def _edit(act: Tensor, name: str) -> Tensor:
    """Scale, and shift along the last axis, so that no norm downstream undoes the edit; scores and patterns
    `[b, head, q, k]` are scaled per head (masked entries stay masked)."""
    if name.endswith(("hook_attn_scores", "hook_pattern")):
        return act * torch.linspace(1.5, 2.5, act.shape[1], dtype=act.dtype)[:, None, None]
    return act * 1.5 + 0.01 * torch.arange(act.shape[-1], dtype=act.dtype)


@pytest.mark.filterwarnings("ignore:A forward hook edited hook_scale/hook_normalized")  # the bridge's, expected
@pytest.mark.parametrize("backend", OURS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_hook_edit_matches_native(arch: str, backend: str, model) -> None:
    """Editing any hook changes the logits exactly as the same edit on the native model, the reference for what
    each name means (TransformerLens 3: attn_out/mlp_out are what is added to the residual stream, after the
    post-norms; q/k/v the projections' outputs, before OLMo's clipping, QK-norm and rotary; ...)."""
    native, other = model(arch, "native"), model(arch, backend)
    with torch.no_grad():
        clean = native(TOKENS)
    wrong, inert = {}, []
    for name in other.hook_names():
        with torch.no_grad(), native.hooks([(name, _edit)]):
            expected = native(TOKENS)
        with torch.no_grad(), other.hooks([(name, _edit)]):
            got = other(TOKENS)
        if not _close(got, expected):
            wrong[name] = float((got - expected).abs().max())
        if (expected - clean).abs().max() < 1e-3:
            inert.append(name)
    assert not wrong, wrong
    assert not inert, inert  # every edit matters


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if specs()[a].bridge_missing])
def test_names_the_bridge_cannot_serve_are_refused_on_it(arch: str, model) -> None:
    """A name the bridge would serve with another meaning (or fail on) is an unknown hook there, not a wrong tensor;
    nnsight and native keep it."""
    missing = specs()[arch].bridge_missing
    names = [n for n in model(arch, "native").hook_names() if block_relative(n) in missing]
    assert {block_relative(n) for n in names} == set(missing)  # the spec names hooks the family has
    assert set(names) <= set(model(arch, "nnsight").hook_names())
    with pytest.raises(InterpError, match=f"no hook named {re.escape(repr(names[0]))}"):
        model(arch, "transformer_lens").run_with_cache(TOKENS, names=names[:1])


def _attention_output(reference: PreTrainedModel, arch: str, layer: int, z: Tensor) -> Tensor:
    """What HF's own modules add to the residual stream from z: the output projection, then (in blocks that
    normalise before adding, Gemma-2/3 and OLMo-2, which have a `post_feedforward_layernorm`) the post-attention
    norm."""
    out = reference.get_submodule(O_PROJ.get(arch, LLAMA_O_PROJ).format(l=layer))(
        einops.rearrange(z, "b p h d -> b p (h d)"))
    block = reference.get_submodule(LLAMA_LAYER.format(l=layer)) if arch not in O_PROJ else None
    return block.post_attention_layernorm(out) if hasattr(block, "post_feedforward_layernorm") else out


def _queries(reference: PreTrainedModel, arch: str, layer: int, resid_pre: Tensor, d_head: int) -> Tensor | None:
    """HF's query projection of a Llama-style block's (normalised) input, `[b, p, head, d_head]` (Phi-3's fused
    projection: its first part); None for GPT-2 and GPT-NeoX."""
    if arch in O_PROJ:
        return None
    block = reference.get_submodule(LLAMA_LAYER.format(l=layer))
    x = block.input_layernorm(resid_pre) if hasattr(block, "input_layernorm") else resid_pre  # OLMo-2: no pre-norm
    attn, width = block.self_attn, reference.config.num_attention_heads * d_head
    q = attn.q_proj(x) if hasattr(attn, "q_proj") else attn.qkv_proj(x)[..., :width]
    return einops.rearrange(q, "b p (h d) -> b p h d", d=d_head)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_activations_agree_with_hugging_face_internals(arch: str, backend: str, model, hf) -> None:
    """resid_pre and pattern against HF's hidden states and attentions; q is HF's query projection of the block's
    normalised input; z through HF's output projection (and post-attention norm) gives attn_out; the residual
    stream adds up (resid_mid = pre + attn_out, resid_post = mid + mlp_out)."""
    reference, m = hf(arch), model(arch, backend)
    with torch.no_grad():
        out = reference(TOKENS, output_hidden_states=True, output_attentions=True)
    _, cache = m.run_with_cache(TOKENS)
    s = m.summary
    for layer in range(s.n_layers):
        act = {key.removeprefix(f"blocks.{layer}."): v for key, v in cache.items() if key.startswith(f"blocks.{layer}.")}
        assert _close(act["hook_resid_pre"], out.hidden_states[layer])
        assert _close(act["attn.hook_pattern"], out.attentions[layer])
        assert act["attn.hook_q"].shape == (2, TOKENS.shape[1], s.n_heads, s.d_head)
        assert act["attn.hook_k"].shape == act["attn.hook_v"].shape == (2, TOKENS.shape[1], s.n_kv_heads, s.d_head)
        with torch.no_grad():
            assert _close(act["hook_attn_out"], _attention_output(reference, arch, layer, act["attn.hook_z"]))
            q = _queries(reference, arch, layer, act["hook_resid_pre"], s.d_head)
        assert q is None or _close(act["attn.hook_q"], q)
        mid = act["hook_resid_pre"] + act["hook_attn_out"]
        if "hook_resid_mid" in act:
            assert _close(act["hook_resid_mid"], mid)
        assert _close(act["hook_resid_post"], mid + act["hook_mlp_out"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_zeroing_a_head_matches_hugging_face(arch: str, backend: str, model, hf) -> None:
    """Zeroing head 2's z in layer 1 changes logits exactly as zeroing that slice of HF's output-projection input."""
    m, layer, head = model(arch, backend), 1, 2
    d_head = m.summary.d_head

    def zero_head(z: Tensor, name: str) -> Tensor:
        z = z.clone()
        z[:, :, head] = 0
        return z

    def zero_slice(module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., head * d_head:(head + 1) * d_head] = 0
        return (x, *args[1:])

    reference = hf(arch)
    handle = reference.get_submodule(O_PROJ.get(arch, LLAMA_O_PROJ).format(l=layer)).register_forward_pre_hook(zero_slice)
    try:
        with torch.no_grad():
            expected = reference(TOKENS).logits
    finally:
        handle.remove()
    with torch.no_grad(), m.hooks([(f"blocks.{layer}.attn.hook_z", zero_head)]):
        got = m(TOKENS)
    with torch.no_grad():
        clean = m(TOKENS)
    assert (expected - clean).abs().max() > 1e-2  # the ablation matters
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "gpt_neox"])  # parallel residual: no resid_mid
def test_editing_resid_mid_reaches_resid_post(arch: str, backend: str, model) -> None:
    """An edit of resid_mid changes the residual stream itself, not only the MLP input (TransformerLens semantics)."""
    m, seen = model(arch, backend), {}

    def save(act: Tensor, name: str) -> None:
        seen[name] = act.detach().clone()

    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    with torch.no_grad(), m.hooks([("blocks.0.hook_resid_mid", lambda act, name: 2 * act)]
                                  + [(name, save) for name in names]):
        m(TOKENS)
    edited = 2 * (seen["blocks.0.hook_resid_pre"] + seen["blocks.0.hook_attn_out"])
    assert _close(seen["blocks.0.hook_resid_post"], edited + seen["blocks.0.hook_mlp_out"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_hook_functions_get_our_names_and_unknown_names_fail(backend: str, model) -> None:
    m, names = model("llama", backend), []
    with torch.no_grad(), m.hooks([("blocks.1.hook_resid_post", lambda act, name: names.append(name))]):
        m(TOKENS)
    assert names == ["blocks.1.hook_resid_post"]  # the bridge's own name would be blocks.1.hook_out
    with pytest.raises(InterpError, match="no hook named 'blocks.7.hook_resid_pre'"), \
            m.hooks([("blocks.7.hook_resid_pre", print)]):
        pass
    with pytest.raises(InterpError, match="did you mean 'blocks.0.hook_resid_pre'"), \
            m.hooks([("blocks.0.hook_resid_prex", print)]):
        pass


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_summary_from_config(arch: str, model, hf) -> None:
    """Every backend's summary is what the tiny checkpoint was built with (2 layers, 4 heads of d_model 64; key/value
    heads and head width as its spec's tiny config sets them, else 4 and 64 / 4)."""
    summaries = {backend: model(arch, backend).summary for backend in BACKENDS}
    s, tiny = summaries["transformer_lens"], specs()[arch].tiny[1]
    assert s.architecture == type(hf(arch)).__name__
    assert (s.n_layers, s.n_heads, s.d_model, s.d_vocab, s.n_ctx) == (2, 4, 64, 384, 128)
    assert (s.n_kv_heads, s.d_head) == (tiny.get("num_key_value_heads", 4), tiny.get("head_dim", 16))
    assert s.n_params == sum(p.numel() for p in hf(arch).parameters())
    assert summaries["nnsight"] == s == summaries["native"]


def test_step_from_directory_name_unless_given(tmp_path: Path, tiny_dir: Callable[[str], Path]) -> None:
    checkpoint = shutil.copytree(tiny_dir("gpt2"), tmp_path / "run" / "checkpoint-1200")
    assert interp.load(checkpoint, backend="nnsight", device="cpu").step == 1200
    assert interp.load(checkpoint, backend="nnsight", device="cpu", step=7).step == 7
    assert interp.load(tiny_dir("gpt2"), backend="nnsight", device="cpu").step is None


def _copy(tiny_dir: Callable[[str], Path], tmp_path: Path) -> Path:
    return shutil.copytree(tiny_dir("llama"), tmp_path / "ckpt")


def _truncate_weights(d: Path) -> Path:
    file = d / "model.safetensors"
    os.truncate(file, file.stat().st_size // 2)
    return d


def _unknown_architecture(d: Path) -> Path:
    """A model_type no transformers class is registered for: refused on every backend."""
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "nonsense",
                                               "architectures": ["NonsenseForCausalLM"]}))
    return d


def _remove(*names: str) -> Callable[[Path], Path]:
    def remove(d: Path) -> Path:
        for name in names:
            (d / name).unlink()
        return d
    return remove


def _as_run(d: Path) -> Path:
    run = d.parent / "run"
    run.mkdir()
    for step in (100, 200):
        shutil.copytree(d, run / f"step_{step}")
    return run


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.parent / "nope", "does not exist"),
    (lambda d: (shutil.rmtree(d), d.mkdir(), d)[-1], "no config.json"),
    (_truncate_weights, "model.safetensors is damaged"),
    (_unknown_architecture, "model_type 'nonsense'.* is not a causal language model transformers can build"),
    (_remove("tokenizer.json", "tokenizer_config.json"), "no tokenizer"),
    (_remove("model.safetensors"), "no weights"),
    (_as_run, "training run holding 2 checkpoints"),
], ids=["missing", "empty", "corrupt-weights", "unknown-arch", "no-tokenizer", "no-weights", "run-dir"])
def test_bad_directories_raise_interp_error(damage, message: str, tmp_path: Path, tiny_dir) -> None:
    path = damage(_copy(tiny_dir, tmp_path))
    with pytest.raises(InterpError, match=message) as err:
        interp.load(path, backend="nnsight")
    assert err.value.fix and str(path) in err.value.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_architecture_error_names_the_supported_ones(backend: str, tmp_path: Path, tiny_dir) -> None:
    with pytest.raises(InterpError, match="'nonsense'") as err:
        interp.load(_unknown_architecture(_copy(tiny_dir, tmp_path)), backend=backend)
    assert all(f"({model_type})" in err.value.fix for spec in specs().values() for model_type in spec.model_types)
    assert "hook backends" in err.value.fix


@pytest.fixture(scope="module")
def gptj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-J checkpoint: a causal LM transformers builds and interp has no native spec for."""
    out, tokenizer = tmp_path_factory.mktemp("gptj"), train_tiny_tokenizer()
    config = GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=128, vocab_size=len(tokenizer))
    AutoModelForCausalLM.from_config(config, attn_implementation="eager").save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_family_without_native_spec_opens_on_the_hook_backends_only(gptj: Path) -> None:
    """A model_type transformers knows but interp does not implement: native is refused naming the hook backends,
    "auto" picks the bridge, and both hook backends give Hugging Face's logits."""
    with pytest.raises(InterpError, match="model_type 'gptj' has no native implementation") as err:
        interp.load(gptj, backend="native", device="cpu")
    assert "backend='transformer_lens'" in err.value.fix and str(gptj) in err.value.message
    assert resolve_backend(gptj, "auto") == "transformer_lens"
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(gptj, attn_implementation="eager").eval()(TOKENS).logits
        for backend in OURS:
            torch.testing.assert_close(interp.load(gptj, backend=backend, device="cpu")(TOKENS), expected,
                                       atol=ATOL, rtol=0)


def test_unknown_backend(tiny_dir) -> None:
    with pytest.raises(InterpError, match="unknown backend 'jax'"):
        interp.load(tiny_dir("llama"), backend="jax")


# --- hub ids: resolved offline in the local Hugging Face cache ------------------------------------------------------
@pytest.fixture()
def hub(tiny_dir: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """HF_HUB_CACHE -> a cache holding tiny-org/tiny at step1000 (a GPT-2) and main (a Llama): their snapshots."""
    from interp.testing import write_hub_cache

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return {"step1000": write_hub_cache(cache, "tiny-org/tiny", "step1000", tiny_dir("gpt2")),
            "main": write_hub_cache(cache, "tiny-org/tiny", "main", tiny_dir("llama"))}


def test_load_a_hub_id_at_a_revision(hub: dict[str, Path], tiny_dir) -> None:
    model = interp.load("tiny-org/tiny", revision="step1000", backend="native", device="cpu")
    assert model.path == hub["step1000"] and model.step == 1000  # the step the revision names
    with torch.no_grad():
        torch.testing.assert_close(model(TOKENS), interp.load(tiny_dir("gpt2"), backend="native", device="cpu")(TOKENS))
    main = interp.load("tiny-org/tiny", backend="transformer_lens", device="cpu")
    assert main.path == hub["main"] and main.step is None and main.summary.architecture.startswith("Llama")


def test_every_reader_accepts_a_hub_id(hub: dict[str, Path], tiny_dir) -> None:
    from interp.checkpoints import check_compatible, read_summary
    from interp.loading import load_tokenizer, read_config, verify_checkpoint

    assert verify_checkpoint("tiny-org/tiny", "step1000") == hub["step1000"]
    assert verify_checkpoint("tiny-org/tiny") == hub["main"]
    assert read_config("tiny-org/tiny")["model_type"] == "llama"
    assert load_tokenizer("tiny-org/tiny").get_vocab() == load_tokenizer(tiny_dir("llama")).get_vocab()
    assert read_summary("tiny-org/tiny") == read_summary(tiny_dir("llama"))
    check_compatible("tiny-org/tiny", tiny_dir("llama"))
    with pytest.raises(InterpError, match="checkpoints differ"):
        check_compatible("tiny-org/tiny", tiny_dir("gpt2"))


def test_a_revision_not_cached_names_the_download(hub: dict[str, Path], tiny_dir) -> None:
    with pytest.raises(InterpError, match="huggingface-cli download tiny-org/tiny --revision step5"):
        interp.load("tiny-org/tiny", revision="step5", device="cpu")
    with pytest.raises(InterpError, match="no local path.*huggingface-cli download tiny-org/absent"):
        interp.load("tiny-org/absent", device="cpu")
    with pytest.raises(InterpError, match="not a hub id"):
        interp.load(tiny_dir("gpt2"), revision="step5", device="cpu")
