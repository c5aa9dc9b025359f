"""Train the zoo's Llama-style models on CPU: packed token streams, AdamW, warmup + cosine, log-spaced checkpoints.

Sequences are packed from a stream of documents (`<|bos|> doc <|eos|>` ...) and cut into fixed windows, so a window
can start anywhere: the models work with or without a leading BOS. Chat training masks the loss to the answers.
Forward and backward passes run under bfloat16 autocast (weights, gradients and AdamW state stay float32; checkpoints
are float32): on a CPU with bfloat16 instructions (AVX512-BF16, AMX) that nearly halves a step's time
(`benchmarks/zoo_training.py`).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from interp.models.hf import pin_eager_attention
from interp.zoo import corpus

Batch = tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]  # tokens, loss mask over predicted tokens


@dataclass(frozen=True)
class ModelSpec:
    """Llama architecture sizes."""

    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    n_ctx: int = 256
    init_std: float = 0.02


@dataclass(frozen=True)
class TrainSpec:
    """One training run's optimisation settings and how many checkpoints to keep (log-spaced, step 0 included)."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float
    n_checkpoints: int
    first_log_step: int = 1  # the first checkpoint after step 0; the rest are spaced evenly in log(step) from it
    warmup: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    pretraining_rows: int = 0  # chat runs: rows per batch drawn from the pre-training stream (keeps knowledge)
    late_mix_from: int | None = None  # base runs: steps after this many draw documents from corpus.LATE_PRETRAINING_MIX
    frozen_top_blocks: int = 0  # chat runs: the last blocks, final norm and unembedding keep their weights (`freeze_top`)

    def checkpoint_steps(self) -> list[int]:
        """Step 0, then `n_checkpoints - 1` steps spaced evenly in log(step) from `first_log_step` up to `steps`, all
        distinct."""
        n_log, first = self.n_checkpoints - 1, self.first_log_step
        wanted = [round(first * (self.steps / first) ** (i / (n_log - 1))) for i in range(n_log)] if n_log > 1 \
            else [self.steps]
        steps = [0]
        for step in wanted:
            steps.append(max(step, steps[-1] + 1))
        if steps[-1] > self.steps:
            raise ValueError(f"cannot fit {self.n_checkpoints} distinct checkpoints into {self.steps} steps")
        return steps

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to `min_lr_ratio * lr`."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


TRAIN_THREADS = 2


def pin_threads(threads: int = TRAIN_THREADS) -> int:
    """Train on exactly `threads` torch threads, whatever the caller set, the machine's load or its core count.

    On CPUs with AMX (bfloat16 tile) kernels, oneDNN splits some bfloat16 reductions by thread (the MLP output
    projection's weight gradient at the zoo's sizes), so the weights depend on the thread count; a build that adapted
    its threads to the load gave weights that depended on what else ran on the machine (tests/test_zoo.py)."""
    torch.set_num_threads(threads)
    return threads


def new_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama causal LM with eager attention (deterministic for a seed)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.d_model, intermediate_size=spec.d_mlp,
        num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_heads,
        max_position_embeddings=spec.n_ctx, initializer_range=spec.init_std, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM._from_config(config, attn_implementation="eager", dtype=torch.float32)


def _windows(stream: Iterator[tuple[list[int], list[bool]]], seq_len: int) -> Iterator[tuple[list[int], list[bool]]]:
    """Cut a stream of (tokens, trained-on flags) documents into consecutive windows of `seq_len` tokens."""
    ids: list[int] = []
    mask: list[bool] = []
    for doc_ids, doc_mask in stream:
        ids += doc_ids
        mask += doc_mask
        while len(ids) >= seq_len:
            yield ids[:seq_len], mask[:seq_len]
            ids, mask = ids[seq_len:], mask[seq_len:]


def _pretraining_docs(rng: random.Random, tokenizer: PreTrainedTokenizerFast, mix: dict[str, tuple[int, corpus.Doc]],
                      chunk: int = 64) -> Iterator[tuple[list[int], list[bool]]]:
    words = corpus.words()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    while True:
        docs = [corpus.pretraining_document(rng, words, mix) for _ in range(chunk)]
        for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
            seq = [bos, *ids, eos]
            yield seq, [True] * len(seq)


def _chat_docs(rng: random.Random, tokenizer: PreTrainedTokenizerFast,
               chunk: int = 64) -> Iterator[tuple[list[int], list[bool]]]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    while True:
        examples = [corpus.chat_example(rng) for _ in range(chunk)]
        prompts = tokenizer([p for p, _ in examples], add_special_tokens=False)["input_ids"]
        answers = tokenizer([a for _, a in examples], add_special_tokens=False)["input_ids"]
        for prompt, answer in zip(prompts, answers):
            yield [bos, *prompt, *answer, eos], [False] * (1 + len(prompt)) + [True] * (len(answer) + 1)


def batches(kind: str, spec: TrainSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> Iterator[Batch]:
    """Endless batches for a "base" (pre-training) or "chat" (answers only, plus pre-training rows) run."""
    rng = random.Random(seed)
    pretrain = _windows(_pretraining_docs(random.Random(rng.random()), tokenizer, corpus.PRETRAINING_MIX), spec.seq_len)
    chat = _windows(_chat_docs(random.Random(rng.random()), tokenizer), spec.seq_len) if kind == "chat" else None
    late = _windows(_pretraining_docs(random.Random(rng.random()), tokenizer, corpus.LATE_PRETRAINING_MIX),
                    spec.seq_len) if kind == "base" and spec.late_mix_from is not None else None
    for step in itertools.count():
        if late is not None and step == spec.late_mix_from:
            pretrain = late
        rows = ([next(chat) for _ in range(spec.batch_size - spec.pretraining_rows)]
                + [next(pretrain) for _ in range(spec.pretraining_rows)]) if chat else \
            [next(pretrain) for _ in range(spec.batch_size)]
        yield torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def next_token_loss(model: LlamaForCausalLM, tokens: Int[Tensor, "batch pos"],
                    mask: Bool[Tensor, "batch pos"]) -> Tensor:
    """Mean cross-entropy of the tokens flagged in `mask` (position 0 is never predicted)."""
    logits = model(input_ids=tokens).logits[:, :-1]
    losses = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    weights = mask[:, 1:].flatten().float()
    return (losses * weights).sum() / weights.sum().clamp(min=1)


def freeze_top(model: LlamaForCausalLM, blocks: int) -> None:
    """Keep the last `blocks` decoder blocks, the final norm and the unembedding as they are (none when `blocks` is 0).

    The zoo's chat run freezes its last block: tuned whole, the 4-block model decides refusal in its last MLP from the
    request's words (76% of the refusal logit), and no one residual direction mediates it; with the top fixed, the
    lower blocks must write refusal to the residual stream the fixed readout reads, one direction, as Arditi et al.
    find in real chat models, whose decision sits many layers below the output (docs/zoo-experiments.md)."""
    if blocks:
        for module in (*model.model.layers[-blocks:], model.model.norm, model.lm_head):
            module.requires_grad_(False)


def _optimizer(model: LlamaForCausalLM, spec: TrainSpec) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with weight decay on matrices only (not norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.95))


def train(model: LlamaForCausalLM, data: Iterator[Batch], spec: TrainSpec,
          on_checkpoint: Callable[[int, LlamaForCausalLM, float | None], None], desc: str) -> list[float]:
    """Train for `spec.steps` steps, calling `on_checkpoint(step, model, mean training loss since the previous
    checkpoint)` at each checkpoint step (step 0 included, loss None); returns the losses."""
    save_at = set(spec.checkpoint_steps())
    pin_threads()
    freeze_top(model, spec.frozen_top_blocks)
    optimizer = _optimizer(model, spec)
    losses = []
    model.train()
    on_checkpoint(0, model, None)
    since = 0
    for step in (bar := tqdm(range(1, spec.steps + 1), desc=desc, leave=False)):
        for group in optimizer.param_groups:
            group["lr"] = spec.lr_at(step - 1)
        tokens, mask = next(data)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = next_token_loss(model, tokens, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step in save_at:
            on_checkpoint(step, model, sum(losses[since:]) / (step - since))
            since = step
    model.eval()
    return losses


def save_checkpoint(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> Path:
    """Write an ordinary Hugging Face checkpoint directory (config, safetensors weights, tokenizer files)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    pin_eager_attention(out / "config.json")
    return out
