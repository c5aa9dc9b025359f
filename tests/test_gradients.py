"""Layer-gradient analysis (Li, Li & Zhou 2025): statistics, response-only loss, per-sample gradients, pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp.dynamics.gradients import run as gradient_run
from interp.dynamics.gradients.data import Encoded, encode_pair, read_pairs, sample_sources, write_pairs
from interp.dynamics.gradients.run import layer_gradients
from interp.dynamics.gradients.stats import (
    layer_thirds, mad, mad_table, relative_difference, singular_value_stats,
)
from interp.dynamics.gradients.per_sample import IGNORE, per_sample_gradients, response_loss
from interp.errors import InterpError
from interp.models.convert import load_hf_causal_lm
from interp.testing import ARCHITECTURES

PAIRS = [("the cat sees", "the ball ."), ("a dog likes the", "moon and the door ."), ("my friend", "calls")]


def _encode(tokenizer, pairs: list[tuple[str, str]]) -> list[Encoded]:
    """Oracle encoding: prompt and response tokenised on their own with the Hugging Face tokenizer."""
    out = []
    for instruction, response in pairs:
        prompt = tokenizer(instruction + "\n")["input_ids"]
        out.append(Encoded(tuple(prompt) + tuple(tokenizer(response, add_special_tokens=False)["input_ids"]),
                           len(prompt)))
    return out


def _reference_gradients(model, sample: Encoded) -> tuple[float, dict[tuple[int, str], torch.Tensor]]:
    """One sample alone, unpadded: Hugging Face's own labelled loss, `.backward()`, and the weights' `.grad`
    split by explicit slicing into [out, in] matrices."""
    model.zero_grad()
    ids = torch.tensor([sample.ids])
    labels = ids.clone()
    labels[:, : sample.n_prompt] = IGNORE
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    arch = type(model).__name__
    grads: dict[tuple[int, str], torch.Tensor] = {}
    if arch == "GPT2LMHeadModel":
        for l, block in enumerate(model.transformer.h):
            qkv, d = block.attn.c_attn.weight.grad, block.attn.c_attn.weight.shape[0]  # Conv1D: [in, out]
            grads |= {(l, "q"): qkv[:, :d].T, (l, "k"): qkv[:, d: 2 * d].T, (l, "v"): qkv[:, 2 * d:].T,
                      (l, "o"): block.attn.c_proj.weight.grad.T, (l, "up"): block.mlp.c_fc.weight.grad.T,
                      (l, "down"): block.mlp.c_proj.weight.grad.T}
    elif arch == "GPTNeoXForCausalLM":
        h = model.config.num_attention_heads
        for l, layer in enumerate(model.gpt_neox.layers):
            qkv = layer.attention.query_key_value.weight.grad
            per_head = qkv.view(h, 3, qkv.shape[0] // (3 * h), qkv.shape[1])  # rows: head, (q, k, v), d_head
            for i, name in enumerate("qkv"):
                grads[(l, name)] = per_head[:, i].reshape(-1, qkv.shape[1])
            grads |= {(l, "o"): layer.attention.dense.weight.grad, (l, "up"): layer.mlp.dense_h_to_4h.weight.grad,
                      (l, "down"): layer.mlp.dense_4h_to_h.weight.grad}
    else:
        for l, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            if hasattr(attn, "qkv_proj"):  # Phi-3: rows [q | k | v] and [gate | up]
                qkv, q_rows = attn.qkv_proj.weight.grad, model.config.num_attention_heads * attn.head_dim
                kv_rows = (qkv.shape[0] - q_rows) // 2
                gate_up, d_mlp = mlp.gate_up_proj.weight.grad, model.config.intermediate_size
                grads |= {(l, "q"): qkv[:q_rows], (l, "k"): qkv[q_rows: q_rows + kv_rows],
                          (l, "v"): qkv[q_rows + kv_rows:], (l, "gate"): gate_up[:d_mlp], (l, "up"): gate_up[d_mlp:]}
            else:
                grads |= {(l, name): getattr(attn, f"{name}_proj").weight.grad for name in "qkv"}
                grads |= {(l, name): getattr(mlp, f"{name}_proj").weight.grad for name in ("gate", "up")}
            grads |= {(l, "o"): attn.o_proj.weight.grad, (l, "down"): mlp.down_proj.weight.grad}
    return loss.item(), {key: g.clone() for key, g in grads.items()}


# ---- statistics -------------------------------------------------------------------------------------------------


def test_singular_value_stats_match_matrix_norms() -> None:
    grads = torch.randn(3, 2, 6, 4, generator=torch.Generator().manual_seed(0))
    stats = singular_value_stats(grads)
    nuclear = torch.linalg.matrix_norm(grads, "nuc")
    torch.testing.assert_close(stats["nuclear"], nuclear)
    torch.testing.assert_close(stats["frobenius"], torch.linalg.matrix_norm(grads, "fro"))
    torch.testing.assert_close(stats["sigma1_ratio"], torch.linalg.matrix_norm(grads, 2) / nuclear)


def test_mad_thirds_and_rd_by_hand() -> None:
    curve = torch.tensor([1.0, 3.0, 2.0, 6.0, 6.0, 4.0, 5.0, 0.0])
    assert mad(curve) == pytest.approx((2 + 1 + 4 + 0 + 2 + 1 + 5) / 7)
    table = mad_table(curve)  # 8 layers -> thirds 0-2, 3-5, 6-7
    assert table == pytest.approx({"all": 15 / 7, "early": 1.5, "middle": 1.0, "late": 5.0})
    assert math.isnan(mad(torch.tensor([1.0])))
    assert relative_difference(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 5.0])) == pytest.approx((0.5 + 0.25) / 2)


def test_layer_thirds_paper_table_and_any_depth() -> None:
    paper = layer_thirds(28)
    assert (paper["early"], paper["middle"], paper["late"]) == (range(0, 7), range(7, 21), range(21, 28))
    assert layer_thirds(32)["middle"] == range(10, 20)
    for depth in range(1, 50):
        thirds = list(layer_thirds(depth).values())
        assert [l for part in thirds for l in part] == list(range(depth))
        if depth not in (26, 28, 32, 42):
            sizes = [len(part) for part in thirds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


# ---- response-only loss -----------------------------------------------------------------------------------------


def test_loss_counts_response_tokens_only(tiny_dir) -> None:
    """Our per-sample loss equals HF's labelled loss; it ignores what the prompt positions predict but not the
    prediction of the first response token (the boundary is not off by one)."""
    path = tiny_dir("llama")
    model = load_hf_causal_lm(path)
    from transformers import AutoTokenizer

    samples = _encode(AutoTokenizer.from_pretrained(str(path)), PAIRS)
    ids, labels = gradient_run._pad(samples, torch.device("cpu"))
    losses, _ = per_sample_gradients(model, ids, labels)
    for row, sample in enumerate(samples):
        torch.testing.assert_close(losses[row].item(), _reference_gradients(model, sample)[0], rtol=1e-5, atol=1e-6)

    sample = samples[1]
    logits = torch.randn(1, len(sample.ids), 50, generator=torch.Generator().manual_seed(1))
    ids, labels = gradient_run._pad([Encoded(tuple(i % 50 for i in sample.ids), sample.n_prompt)], torch.device("cpu"))
    base = response_loss(logits, labels)
    prompt_side = logits.clone()
    prompt_side[:, : sample.n_prompt - 1] += 5 * torch.randn(sample.n_prompt - 1, 50)
    torch.testing.assert_close(response_loss(prompt_side, labels), base)
    first_response = logits.clone()
    first_response[:, sample.n_prompt - 1] += 5 * torch.randn(50)
    assert not torch.allclose(response_loss(first_response, labels), base)


# ---- per-sample gradients ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_per_sample_gradients_equal_one_at_a_time(tiny_dir, arch: str) -> None:
    """Right-padded batch, input x output-gradient einsum == one backward per unpadded sample (fused QKV split)."""
    path = tiny_dir(arch)
    model = load_hf_causal_lm(path)
    from transformers import AutoTokenizer

    samples = _encode(AutoTokenizer.from_pretrained(str(path)), PAIRS)
    assert len({len(s.ids) for s in samples}) > 1  # padding is exercised
    ids, labels = gradient_run._pad(samples, torch.device("cpu"))
    losses, stream = per_sample_gradients(model, ids, labels, include_mlp=True)
    batched = {(layer, name): grad for layer, name, grad in stream}
    expected_names = {"q", "k", "v", "o", "up", "down"} | (set() if arch in ("gpt2", "gpt_neox") else {"gate"})
    assert {name for _, name in batched} == expected_names
    for row, sample in enumerate(samples):
        loss, reference = _reference_gradients(model, sample)
        assert set(reference) == set(batched)
        for key, grad in reference.items():
            assert batched[key][row].shape == grad.shape, key
            torch.testing.assert_close(batched[key][row], grad, rtol=1e-4, atol=1e-6, msg=f"{arch} {key}")


def _large_vocabulary_llama(tiny: Path, vocab_size: int = 49152) -> torch.nn.Module:
    """The tiny Llama's shape with a 49k-token vocabulary (as SmolLM's) and random weights whose logits spread over a
    few units, as a trained model's do (matrices N(0, 0.15), the unembedding three times that)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny)
    config.vocab_size = vocab_size
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
        model.lm_head.weight.mul_(3.0)
    return model.eval()


def _one_at_a_time_nuclear(model: torch.nn.Module, samples: list[Encoded]) -> torch.Tensor:
    """[sample, layer x projection] nuclear norms of q/k/v/o gradients: one unpadded sample at a time, the loss
    written out directly (cross-entropy of the response tokens in the model's dtype), `.backward()`."""
    norms = []
    for sample in samples:
        model.zero_grad()
        ids = torch.tensor([sample.ids])
        logits = model(input_ids=ids).logits[0]
        torch.nn.functional.cross_entropy(logits[sample.n_prompt - 1: -1], ids[0, sample.n_prompt:]).backward()
        norms.append(torch.stack([torch.linalg.matrix_norm(getattr(layer.self_attn, f"{p}_proj").weight.grad.double(),
                                                           "nuc") for layer in model.model.layers for p in "qkvo"]))
    return torch.stack(norms)


def test_nuclear_norms_as_accurate_as_float32_autograd_on_a_large_vocabulary(tiny_dir) -> None:
    """Against a float64 reference, the batched per-sample nuclear norms of a 49k-vocabulary model are as close as
    plain float32 autograd's (3.9e-7 here). The earlier loss, a float32 cross-entropy over the transposed
    [vocab, position] logits, was 12x further off (4.6e-6)."""
    import copy

    model = _large_vocabulary_llama(tiny_dir("llama"))
    generator = torch.Generator().manual_seed(0)
    samples = [Encoded(tuple(torch.randint(3, 49152, (n,), generator=generator).tolist()), 8) for n in (40, 60, 50)]
    reference = _one_at_a_time_nuclear(copy.deepcopy(model).double(), samples)
    plain = _one_at_a_time_nuclear(model, samples)
    ids, labels = gradient_run._pad(samples, torch.device("cpu"))
    _, stream = per_sample_gradients(model, ids, labels)
    ours = torch.stack([torch.linalg.matrix_norm(grad.double(), "nuc") for _, name, grad in stream], dim=1)
    error = lambda norms: float(((norms - reference).abs() / reference).max())  # noqa: E731
    print(f"relative error vs float64: interp {error(ours):.2e}, plain float32 autograd {error(plain):.2e}")
    assert error(ours) <= 2 * error(plain) + 1e-7


# ---- resumable sweep and the command ----------------------------------------------------------------------------


class Interrupted(Exception):
    """Stands in for Ctrl-C in the middle of a sweep."""


def test_sweep_resumes_after_interruption(tiny_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_dir("gpt2")
    model = load_hf_causal_lm(path)
    from transformers import AutoTokenizer

    samples = _encode(AutoTokenizer.from_pretrained(str(path)), PAIRS * 2)
    full = layer_gradients(model, samples, batch_size=2)

    real, calls, interrupt_at = gradient_run.per_sample_gradients, [], [2]

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) in interrupt_at:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(gradient_run, "per_sample_gradients", flaky)
    partial = tmp_path / "partial.safetensors"
    with pytest.raises(Interrupted):
        layer_gradients(model, samples, batch_size=2, partial=partial, identity="weights-1")
    assert partial.is_file()
    calls.clear()
    interrupt_at.clear()
    resumed = layer_gradients(model, samples, batch_size=2, partial=partial, identity="weights-1")
    assert len(calls) == 2  # three batches in all; the first was saved before the interruption
    for key, value in full.per_sample.items():
        torch.testing.assert_close(resumed.per_sample[key], value, rtol=1e-5, atol=1e-7)
    # Other inputs (other samples, other weights) must not pick up that partial file.
    for other_samples, identity in ((samples[:4], "weights-1"), (samples, "weights-2")):
        calls.clear()
        layer_gradients(model, other_samples, batch_size=2, partial=partial, identity=identity)
        assert len(calls) == math.ceil(len(other_samples) / 2)


def test_command_single_and_comparison(tiny_dir, tmp_path: Path) -> None:
    """`interp gradients` end to end; curves equal matrix_norm(., 'nuc') of one-at-a-time gradients, averaged."""
    from typer.testing import CliRunner
    from transformers import AutoTokenizer

    from interp.cli import app

    path = tiny_dir("gpt_neox")
    data_a = write_pairs(PAIRS, tmp_path / "fast.jsonl")
    data_b = write_pairs([(i, f"{r} so {r}") for i, r in PAIRS], tmp_path / "slow.jsonl")
    runner = CliRunner()
    done = runner.invoke(app, ["gradients", str(path), "--data", str(data_a), "--out", str(tmp_path / "one"),
                               "--batch-size", "2", "--no-bos"])
    assert done.exit_code == 0, done.output
    tensors = load_file(tmp_path / "one" / "results.safetensors")
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert not (tmp_path / "one" / "partial").exists()

    model = load_hf_causal_lm(path)
    refs = [_reference_gradients(model, s)[1] for s in _encode(AutoTokenizer.from_pretrained(str(path)), PAIRS)]
    for name in "qkvo":
        expected = torch.tensor([[float(torch.linalg.matrix_norm(r[(l, name)], "nuc")) for l in range(2)]
                                 for r in refs]).mean(0)
        torch.testing.assert_close(tensors[f"nuclear.{name}"], expected, rtol=1e-4, atol=1e-6)
        assert summary["mad"]["nuclear"][name]["all"] == pytest.approx(float((expected[1] - expected[0]).abs()),
                                                                        rel=1e-4)
    assert "nuclear.up" not in tensors and tensors["samples.nuclear.q"].shape == (3, 2)

    done = runner.invoke(app, ["gradients", str(path), "--data", str(data_a), "--data-b", str(data_b),
                               "--out", str(tmp_path / "two"), "--mlp", "--no-bos"])
    assert done.exit_code == 0, done.output
    both = load_file(tmp_path / "two" / "results.safetensors")
    torch.testing.assert_close(both["a.nuclear.q"], tensors["nuclear.q"])
    assert both["b.nuclear.up"].shape == (2,)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    rd = relative_difference(both["a.nuclear.q"], both["b.nuclear.q"])
    assert summary["relative_difference"]["nuclear.q"] == pytest.approx(rd) and rd > 0
    assert (tmp_path / "two" / "report.html").stat().st_size > 10_000
    assert "| fast | q |" in done.output and "| slow | down |" in done.output


# ---- data ------------------------------------------------------------------------------------------------------


def test_bad_jsonl_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "a"}\n')
    with pytest.raises(InterpError, match="bad.jsonl:2"):
        read_pairs(bad)


def test_sample_sources_name_the_lines_read_pairs_reads(tmp_path: Path) -> None:
    """Blank lines are skipped and a U+2028 inside a JSON string does not end a line: sources still name the line."""
    path = tmp_path / "data.jsonl"
    path.write_text('\n{"instruction": "a\u2028b", "response": "c"}\n\n{"instruction": "d", "response": "e"}\n',
                    encoding="utf-8")
    assert read_pairs(path) == [("a\u2028b", "c"), ("d", "e")]
    assert sample_sources(path) == [f"{path}:2", f"{path}:4"]


def test_chat_template_prompt(tiny_dir) -> None:
    """A tokenizer chat template formats the prompt (system turn first); the response is tokenised on its own."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir("llama")))
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant :{% endif %}")
    enc = encode_pair(tokenizer, "the cat sees", "the ball .", "chat", prepend_bos=True)
    assert enc.ids[0] == tokenizer.bos_token_id
    prompt = tokenizer.decode(enc.ids[1: enc.n_prompt])
    assert prompt.startswith("system : You are a helpful assistant.") and prompt.endswith("assistant :")
    assert list(enc.ids[enc.n_prompt:]) == tokenizer("the ball .", add_special_tokens=False)["input_ids"]


def test_a_data_source_chat_checkpoint_gets_its_template_without_folder_guessing(tiny_dir, monkeypatch) -> None:
    """`auto` asks `interp.data.sources.source_of`: a checkpoint a source chat-tuned is prompted with that source's
    template ("source-chat"), BOS first once; one no source owns falls back to plain (the tiny tokenizer has no chat
    template)."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    import interp.data.sources as sources
    from interp.dynamics.gradients.data import encode_pairs, resolve_template, source_chat_template

    path = tiny_dir("llama")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert resolve_template("auto", path, tokenizer) == "plain" and source_chat_template(path) is None
    owned = replace(sources.source(), name="mine", chat_template="Q: {instruction}\nA:",
                    owns=lambda p: p.resolve() == path.resolve(), chat=lambda p: p.resolve() == path.resolve())
    monkeypatch.setattr(sources, "sources", lambda: {"mine": owned})
    assert resolve_template("auto", path, tokenizer) == "source-chat" == resolve_template("chat", path, tokenizer)
    assert resolve_template("plain", path, tokenizer) == "plain"
    [enc] = encode_pairs(tokenizer, [("the cat sees", "the ball .")], "source-chat", 64, True,
                         chat_format=source_chat_template(path))
    prompt = tokenizer("Q: the cat sees\nA:", add_special_tokens=False)["input_ids"]
    assert list(enc.ids[: enc.n_prompt]) == [tokenizer.bos_token_id, *prompt]
    assert list(enc.ids[enc.n_prompt:]) == tokenizer("the ball .", add_special_tokens=False)["input_ids"]
