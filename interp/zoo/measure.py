"""Measure a zoo checkpoint's behaviour straight from the Hugging Face model (independent of interp's own engines).

Induction score (Olsson et al. 2022; TransformerLens convention): on [BOS, r_1..r_T, r_1..r_T] the mean attention
from each second-repeat position i to i - T + 1. Truth: a difference-in-means direction (Marks & Tegmark; Du et al.
2025) fitted on train statements, thresholded at the midpoint of the projected class means, scored on test ones.
Refusal: greedy completions that start with a refusal phrase (Arditi et al.). Every input starts with `<|bos|>`.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from interp.zoo import data

MAX_PROMPTS = 128  # per generation metric: keeps a checkpoint's measurement to a few seconds


def encode(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text with `<|bos|>` prepended."""
    return [[tokenizer.bos_token_id, *ids] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _right_padded(seqs: list[list[int]], pad: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    width = max(len(s) for s in seqs)
    tokens = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    return tokens, torch.tensor([len(s) - 1 for s in seqs])


@torch.no_grad()
def induction(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, length: int = 50, batch: int = 10,
              seed: int = 0) -> dict[str, Any]:
    """Per-head induction scores on repeated random tokens, the best head, and the loss on each half."""
    generator = torch.Generator().manual_seed(seed)
    n_special = len(tokenizer.all_special_ids)
    rand = torch.randint(n_special, len(tokenizer), (batch, length), generator=generator)
    tokens = torch.cat([torch.full((batch, 1), tokenizer.bos_token_id), rand, rand], dim=1)
    out = model(input_ids=tokens, output_attentions=True)
    queries = torch.arange(length + 1, 2 * length + 1)
    scores = torch.stack([att[:, :, queries, queries - length + 1].mean(dim=(0, 2)) for att in out.attentions])
    losses = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    losses = losses.view(batch, -1).mean(0)  # losses[p] = loss of predicting token p + 1
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return {
        "induction_score": float(scores.max()),
        "induction_head": f"{layer}.{head}",
        "induction_scores": [[round(float(s), 4) for s in row] for row in scores],
        "first_half_loss": float(losses[1:length].mean()),  # predicting r_2..r_T the first time
        "repeated_half_loss": float(losses[length + 1:].mean()),  # predicting r_2..r_T the second time
    }


@torch.no_grad()
def _last_logits(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
                 texts: Sequence[str]) -> Float[Tensor, "batch vocab"]:
    tokens, last = _right_padded(encode(tokenizer, texts), tokenizer.pad_token_id)
    return model(input_ids=tokens).logits[torch.arange(len(texts)), last]


def fact_recall(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, split: str = "test") -> float:
    """Top-1 accuracy of the answer word after each fact prompt."""
    prompts, answers = zip(*data.facts(split))
    predicted = _last_logits(model, tokenizer, prompts).argmax(-1)
    return float((predicted == torch.tensor(tokenizer.convert_tokens_to_ids(list(answers)))).float().mean())


@torch.no_grad()
def last_token_residuals(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
                         texts: Sequence[str]) -> Float[Tensor, "layer batch d_model"]:
    """Residual stream after each decoder block (TransformerLens `hook_resid_post`) at each text's last token."""
    tokens, last = _right_padded(encode(tokenizer, texts), tokenizer.pad_token_id)
    outputs: list[Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple)
                                                                              else out))
               for layer in model.model.layers]
    try:
        model(input_ids=tokens)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([resid[torch.arange(len(texts)), last] for resid in outputs])


def mean_difference_accuracy(train: Float[Tensor, "n d"], train_true: Bool[Tensor, " n"], test: Float[Tensor, "m d"],
                             test_true: Bool[Tensor, " m"]) -> float:
    """Accuracy on `test` of the direction mean(true) - mean(false) of `train`, thresholded at the midpoint of the
    two class means' projections."""
    mu_true, mu_false = train[train_true].mean(0), train[~train_true].mean(0)
    direction = mu_true - mu_false
    threshold = (mu_true + mu_false) @ direction / 2
    return float(((test @ direction > threshold) == test_true).float().mean())


def truth_probe(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Held-out accuracy, per layer, of a difference-in-means truth direction fitted on the train statements."""
    train_text, train_label = zip(*data.truth_statements("train"))
    test_text, test_label = zip(*data.truth_statements("test"))
    train, test = last_token_residuals(model, tokenizer, train_text), last_token_residuals(model, tokenizer, test_text)
    y_train, y_test = torch.tensor(train_label).bool(), torch.tensor(test_label).bool()
    accuracy = [mean_difference_accuracy(a, y_train, b, y_test) for a, b in zip(train, test)]
    best = max(range(len(accuracy)), key=accuracy.__getitem__)
    return {"truth_accuracy": accuracy[best], "truth_layer": best, "truth_accuracy_by_layer": accuracy}


@torch.no_grad()
def greedy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str],
           max_new_tokens: int) -> list[str]:
    """Greedy completions decoded up to the first EOS: one left-padded batch, keys and values cached, pads masked."""
    seqs = encode(tokenizer, prompts)
    width = max(len(s) for s in seqs)
    tokens = torch.tensor([[tokenizer.pad_token_id] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True)
    new = [out.logits[:, -1].argmax(-1)]
    for _ in range(max_new_tokens - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=new[-1][:, None], attention_mask=mask, position_ids=positions,
                    past_key_values=out.past_key_values, use_cache=True)
        new.append(out.logits[:, -1].argmax(-1))
    completions = []
    for row in torch.stack(new, dim=1).tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        completions.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return completions


def refusal(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, split: str = "test",
            max_prompts: int = MAX_PROMPTS) -> dict[str, float]:
    """Fraction of held-out harmful and harmless requests whose greedy answer starts with a refusal phrase."""
    harmful, harmless = data.refusal_requests(split)
    rates = {}
    for name, requests in (("refusal_harmful", harmful), ("refusal_harmless", harmless)):
        answers = greedy(model, tokenizer, [data.chat_prompt(r) for r in requests[:max_prompts]], 8)
        rates[name] = sum(map(data.is_refusal, answers)) / len(answers)
    return rates


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+", text)


def chat_skills(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
                max_prompts: int = MAX_PROMPTS) -> dict[str, float]:
    """Held-out chat accuracy: factual questions (the answer word in the reply) and arithmetic in both styles."""
    questions = data.fact_questions("test")[:max_prompts]
    replies = greedy(model, tokenizer, [data.chat_prompt(q) for q, _ in questions], 8)
    out = {"chat_fact_accuracy": sum(a in re.findall(r"\w+", r) for (_, a), r in zip(questions, replies))
           / len(questions)}
    for style, budget in (("fast", 3), ("slow", 24)):
        problems = data.arithmetic("test", style)[:max_prompts]
        replies = greedy(model, tokenizer, [data.chat_prompt(q) for q, _ in problems], budget)
        out[f"arithmetic_{style}"] = sum(_numbers(r)[-1:] == _numbers(a)[-1:] for (_, a), r in zip(problems, replies)) \
            / len(problems)
    return out


def measure(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
            max_prompts: int = MAX_PROMPTS) -> dict[str, Any]:
    """Every behaviour the manifest records for one checkpoint (generation metrics on `max_prompts` prompts each)."""
    model.eval()
    return {**induction(model, tokenizer), "fact_recall": fact_recall(model, tokenizer),
            **truth_probe(model, tokenizer), **refusal(model, tokenizer, max_prompts=max_prompts),
            **chat_skills(model, tokenizer, max_prompts=max_prompts)}
