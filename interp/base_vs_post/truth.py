"""Truthfulness directions of a base and a post-trained model and their transfer (Du et al. 2025, section 1.2).

Per layer: the mass-mean direction theta = mean(true) - mean(false) of the residual stream (`hook`, default
resid_post = Du's block output) at the last token of the bare statement, activations centred per dataset (the
held-out set with its own mean, as in the reference). Held-out accuracy of each model's MMProbe on both models'
activations, a logistic probe per layer, and cos(theta_base, theta_post) per layer.

Steering (Du's `interventions.py`): v = theta at `probe_layer` is subtracted from true and added to false statements
at the last two statement tokens, at `hook` of `intervene_layers` (the directions' own site), inside few-shot
prompts ending in " This statement is:". PD = P(" TRUE") - P(" FALSE") after the prompt, each answer's probability
that of its whole token sequence (teacher-forced; the reference reads the last token of each, which for a tokenizer
that splits " TRUE" into pieces is a piece such as "UE", not the answer);
NIE_T->F = (PD_int - PD)/(-1 - PD), NIE_F->T = (PD_int - PD)/(1 - PD). Four conditions: each model steered with its
own and with the other's direction.
Deviations: few-shot examples are drawn from the training statements (the reference ships fixed ones per dataset);
`probe_layer` defaults to the layer where both models' probes fit the training statements best (the reference
hand-picks one per model family); steering always includes a layer below the probe layer (Du's L/8 is 0 layers in a
model of fewer than 8), since a steer at the last layer cannot reach the answer position.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.options import check_context
from interp.models.hooked import HookedModel
from interp.options import check_range
from interp.data.tokens import encode
from probes.activations import collect, residual_layout, runner, tail_logits
from interp.data.datasets import Statement, check_both_labels
from probes.directions import LinearProbe, center_by_group, cosine, logistic_probe, mass_mean_probe
from probes.steering import Hook, add_hooks, site_names

ROLES = ("base", "post")
SUFFIX = " This statement is:"
LABEL_WORDS = (" TRUE", " FALSE")


def answer_ids(tokenizer: Any) -> list[list[int]]:
    """Token ids of " TRUE" and " FALSE" as they continue " This statement is:" (one or several tokens each; on their
    own if the suffix tokenises differently before them)."""
    head = encode(tokenizer, SUFFIX, bos=False)
    answers = []
    for word in LABEL_WORDS:
        full = encode(tokenizer, SUFFIX + word, bos=False)
        seq = full[len(head):] if full[: len(head)] == head else encode(tokenizer, word, bos=False)
        if not seq or getattr(tokenizer, "unk_token_id", None) in seq:
            raise InterpError(f"the tokenizer has no tokens for {word.strip()!r}",
                              fix="use a model whose vocabulary contains TRUE and FALSE")
        answers.append(seq)
    if answers[0] == answers[1]:
        raise InterpError("' TRUE' and ' FALSE' encode to the same tokens", fix="use a model with a real vocabulary")
    return answers


def label_ids(tokenizer: Any) -> tuple[int, int]:
    """Ids of " TRUE" and " FALSE" for a one-token logit difference; an error when either is several tokens."""
    answers = answer_ids(tokenizer)
    for word, seq in zip(LABEL_WORDS, answers):
        if len(seq) > 1:
            raise InterpError(f"{word.strip()!r} is {len(seq)} tokens in this tokenizer "
                              f"({tokenizer.convert_ids_to_tokens(seq)}), but this measure is the logit difference of "
                              "one TRUE and one FALSE token", fix="use a model whose tokenizer has one token for each "
                                                                  "(`interp directions truth` scores whole answers)")
    return answers[0][0], answers[1][0]


def few_shot_lines(train: Sequence[Statement], n_shots: int = 4, seed: int = 0) -> list[str]:
    """`n_shots` labelled lines "<statement> This statement is: TRUE/FALSE", half true and half false."""
    rng = random.Random(seed)
    true = [s for s in train if s.label]
    false = [s for s in train if not s.label]
    picked = rng.sample(true, min(len(true), (n_shots + 1) // 2)) + rng.sample(false, min(len(false), n_shots // 2))
    return [f"{s.text}{SUFFIX}{LABEL_WORDS[0] if s.label else LABEL_WORDS[1]}" for s in picked]


def truth_query(statement: str, shots: Sequence[str], seed: int) -> str:
    """The few-shot lines, shuffled with `seed`, then the statement and " This statement is:"."""
    lines = list(shots)
    random.Random(seed).shuffle(lines)
    return "\n".join(lines) + "\n" + statement + SUFFIX


def suffix_length(tokenizer: Any, queries: Sequence[str]) -> int:
    """How many tokens " This statement is:" takes at the end of every query (the same for all, or an error)."""
    lengths = {len(encode(tokenizer, q)) - len(encode(tokenizer, q[: -len(SUFFIX)])) for q in queries}
    if len(lengths) != 1:
        raise InterpError(f"' This statement is:' tokenises differently across prompts ({sorted(lengths)})",
                          fix="use statements ending in a separate token such as '.'")
    return lengths.pop()


def statement_acts(model: HookedModel, statements: Sequence[Statement], hook: str = "resid_post", pos: int = -1,
                   batch_size: int = 32, bos: bool = True) -> Float[Tensor, "layer n d_model"]:
    """Activations at `blocks.{l}.hook_{hook}`, token `pos` (from the end) of each bare statement (BOS first with
    `bos`), centred per source dataset."""
    n_layers, parallel = residual_layout(model)
    names = site_names(range(n_layers), [hook], parallel)
    ids = [encode(model.tokenizer, s.text, bos) for s in statements]
    acts = collect(runner(model), ids, names, (pos,), model.tokenizer, batch_size,
                   desc=f"acts {hook}")[:, :, 0]
    sources = sorted({s.source for s in statements})
    groups = torch.tensor([sources.index(s.source) for s in statements])
    return center_by_group(acts, groups)


HooksAt = Callable[[int], Sequence[Hook]]  # n answer tokens after the prompt -> the hooks for that input


def answer_logprobs(model: HookedModel, queries: Sequence[str], hooks_at: HooksAt | None = None,
                    batch_size: int = 32, bos: bool = True) -> Float[Tensor, "n answer"]:
    """log P(" TRUE") and log P(" FALSE") after each query: the sum of the log-probabilities of each answer's tokens,
    teacher-forced, softmax over the full vocabulary. `hooks_at(k)` gives the hooks for a query followed by k answer
    tokens (positions counted from the end move by k). Answers sharing all but their last token share a forward."""
    nt, tok = runner(model), model.tokenizer
    ids = [encode(tok, q, bos) for q in queries]
    answers = answer_ids(tok)
    out = torch.zeros(len(ids), len(answers))
    for prefix in dict.fromkeys(tuple(a[:-1]) for a in answers):
        with nt.hooks(list(hooks_at(len(prefix)) if hooks_at else ())):
            logp = tail_logits(nt, [q + list(prefix) for q in ids], len(prefix) + 1, tok,
                               batch_size).log_softmax(-1)
        for k, answer in enumerate(answers):
            if tuple(answer[:-1]) == prefix:
                out[:, k] = logp[:, torch.arange(len(answer)), torch.tensor(answer)].sum(-1)
    return out


def probability_difference(model: HookedModel, queries: Sequence[str], hooks_at: HooksAt | None = None,
                           batch_size: int = 32, bos: bool = True) -> Float[Tensor, "n"]:
    """P(" TRUE") - P(" FALSE") after each query, each answer's probability that of its whole token sequence."""
    probs = answer_logprobs(model, queries, hooks_at, batch_size, bos).exp()
    return probs[:, 0] - probs[:, 1]


def steering_groups(test: Sequence[Statement], n_steer: int | None, seed: int) -> list[list[Statement]]:
    """The held-out statements used for steering (`n_steer` of them, drawn with `seed`; None = all), true ones then
    false ones: an error unless both are there."""
    steer = list(test if n_steer is None else random.Random(seed).sample(list(test), min(n_steer, len(test))))
    check_both_labels(steer, f"the {len(steer)} held-out statement(s) used for steering",
                      fix="raise --n-steer, or pass a held-out set with both labels")
    return [[s for s in steer if s.label], [s for s in steer if not s.label]]


def check_inputs(tokenizer: Any, n_ctx: int, train: Sequence[Statement], test: Sequence[Statement], pos: int = -1,
                 n_shots: int = 4, n_steer: int | None = 200, seed: int = 0, bos: bool = True
                 ) -> tuple[list[list[Statement]], list[list[str]]]:
    """Everything `truth_directions` checks before its first forward pass (needing only the tokenizer and context
    length): both labels among the training statements and the steering ones, `pos` within the shortest statement,
    every statement and few-shot query (with its longest answer) within the context. Returns the steering statements
    and their queries, true ones then false ones."""
    check_both_labels(train, "the training statements", fix="pass training statements with both labels")
    shots = few_shot_lines(train, n_shots, seed)
    by_label = steering_groups(test, n_steer, seed)
    queries = [[truth_query(s.text, shots, seed + i) for i, s in enumerate(group)] for group in by_label]
    statements = [*train, *test]
    ids = [encode(tokenizer, s.text, bos) for s in statements]
    check_context(ids, [s.text for s in statements], n_ctx)
    check_range("--pos", pos, -min(map(len, ids)), -1)  # from the end, within the shortest statement
    flat = queries[0] + queries[1]
    extra = max(map(len, answer_ids(tokenizer))) - 1
    check_context([encode(tokenizer, q, bos) for q in flat], flat, n_ctx, extra)
    return by_label, queries


def default_intervene_layers(probe_layer: int, n_layers: int) -> list[int]:
    """The probe layer and the `n_layers // 8` layers before it (Du et al.), at least one: a steer at the last layer's
    output at the statement's tokens cannot reach the answer position, so it alone would give NIE 0 by construction."""
    return list(range(max(0, probe_layer - max(1, n_layers // 8)), probe_layer + 1))


def nie(pd_int: Float[Tensor, "..."], pd_base: Float[Tensor, "..."], target: float) -> Float[Tensor, "..."]:
    """Du et al.'s normalised indirect effect: (PD_int - PD_base) / (target - PD_base), target -1 (T->F) or +1."""
    return (pd_int - pd_base) / (target - pd_base)


@dataclass
class TruthResult:
    """Everything `truth_directions` measures; `[a, b]` axes index ROLES (direction owner, then model)."""

    hook: str
    theta: dict[str, Float[Tensor, "layer d_model"]]
    cosine: Float[Tensor, "layer"]
    mm_accuracy: Float[Tensor, "owner model layer"]
    lr_accuracy: Float[Tensor, "model layer"]
    probe_layer: int
    intervene_layers: list[int]
    pd_clean: Float[Tensor, "model label"]  # label 0 = true statements, 1 = false statements
    pd_steered: Float[Tensor, "owner model label"]
    nie: Float[Tensor, "owner model label"]  # label 0 = true->false, 1 = false->true
    answer_mass: Float[Tensor, "model label"]  # mean P(" TRUE") + P(" FALSE") unsteered: how much the model answers
    bos: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    pos: int = -1  # the token the directions are read at, counted from the end of each bare statement

    def tensors(self) -> dict[str, Tensor]:
        return {"theta_base": self.theta["base"], "theta_post": self.theta["post"], "cosine": self.cosine,
                "mm_accuracy": self.mm_accuracy, "lr_accuracy": self.lr_accuracy, "pd_clean": self.pd_clean,
                "pd_steered": self.pd_steered, "nie": self.nie}

    def summary(self) -> dict[str, Any]:
        """JSON-ready headline numbers (NIE keys are "<direction>_dir_in_<model>")."""
        p = self.probe_layer
        nies = {f"{o}_dir_in_{m}": {"true_to_false": float(self.nie[i, j, 0]),
                                    "false_to_true": float(self.nie[i, j, 1]),
                                    "average": float(self.nie[i, j].mean())}
                for i, o in enumerate(ROLES) for j, m in enumerate(ROLES)}
        return {"hook": self.hook, "probe_layer": p, "intervene_layers": self.intervene_layers,
                "cosine_per_layer": [round(float(c), 4) for c in self.cosine],
                "cosine_at_probe_layer": float(self.cosine[p]),
                "probe_accuracy_at_probe_layer": {f"{o}_probe_on_{m}": float(self.mm_accuracy[i, j, p])
                                                  for i, o in enumerate(ROLES) for j, m in enumerate(ROLES)},
                "pd_clean": {m: {"true": float(self.pd_clean[j, 0]), "false": float(self.pd_clean[j, 1])}
                             for j, m in enumerate(ROLES)},
                "answer_probability": {m: {"true": float(self.answer_mass[j, 0]),
                                           "false": float(self.answer_mass[j, 1])} for j, m in enumerate(ROLES)},
                "nie": nies, "bos": self.bos, "counts": self.counts, "pos": self.pos}


def truth_directions(
    models: Mapping[str, HookedModel],
    train: Sequence[Statement],
    test: Sequence[Statement],
    hook: str = "resid_post",
    pos: int = -1,
    probe_layer: int | None = None,
    intervene_layers: Sequence[int] | None = None,
    coeff: float = 1.0,
    n_shots: int = 4,
    n_steer: int | None = 200,
    seed: int = 0,
    batch_size: int = 32,
    bos: bool = True,
) -> TruthResult:
    """Directions, probes, cosines and the four steering NIEs for `models = {"base": ..., "post": ...}`.

    Directions are read at `blocks.{l}.hook_{hook}`, token `pos` from the end of each bare statement.
    `intervene_layers` defaults to the probe layer and the L/8 layers before it (Du: 8..12 of 32), at least one;
    `n_steer` caps the held-out statements used for steering (None = all); `bos` puts the tokenizer's BOS first in
    every prompt. Labels, positions and prompt lengths are checked before the first forward pass.
    """
    for m in ROLES:
        by_label, queries = check_inputs(models[m].tokenizer, models[m].summary.n_ctx, train, test, pos, n_shots,
                                         n_steer, seed, bos)
    labels = {"train": torch.tensor([s.label for s in train]), "test": torch.tensor([s.label for s in test])}
    acts = {m: {split: statement_acts(models[m], data, hook, pos, batch_size, bos)
                for split, data in (("train", train), ("test", test))} for m in ROLES}
    probes: dict[str, LinearProbe] = {}
    theta: dict[str, Tensor] = {}
    for m in ROLES:
        probes[m], theta[m] = mass_mean_probe(acts[m]["train"], labels["train"])
    mm_acc = torch.stack([torch.stack([probes[o].accuracy(acts[m]["test"], labels["test"]) for m in ROLES])
                          for o in ROLES])
    lr_acc = torch.stack([logistic_probe(acts[m]["train"], labels["train"]).accuracy(acts[m]["test"], labels["test"])
                          for m in ROLES])
    n_layers = theta["base"].shape[0]
    if probe_layer is None:  # chosen on training accuracy, so the held-out numbers stay held out
        train_acc = torch.stack([probes[m].accuracy(acts[m]["train"], labels["train"]) for m in ROLES])
        probe_layer = int(train_acc.mean(0).argmax())
    if intervene_layers is None:
        intervene_layers = default_intervene_layers(probe_layer, n_layers)

    pd_clean, mass = torch.zeros(2, 2), torch.zeros(2, 2)
    pd_steered = torch.zeros(2, 2, 2)
    for j, m in enumerate(ROLES):
        model = models[m]
        n_suffix = suffix_length(model.tokenizer, queries[0] + queries[1])
        positions = (-(n_suffix + 2), -(n_suffix + 1))  # last statement word and the final "." (Du's two states)
        for k in range(2):
            probs = answer_logprobs(model, queries[k], None, batch_size, bos).exp()
            pd_clean[j, k], mass[j, k] = (probs[:, 0] - probs[:, 1]).mean(), probs.sum(-1).mean()
        for i, o in enumerate(ROLES):
            v = theta[o][probe_layer]
            for k, sign in ((0, -1.0), (1, 1.0)):  # subtract from true statements, add to false ones
                def hooks_at(n_answer: int, v: Tensor = v, sign: float = sign) -> list[Hook]:
                    return add_hooks(v, intervene_layers, sign * coeff, (hook,), [p - n_answer for p in positions])

                pd_steered[i, j, k] = probability_difference(model, queries[k], hooks_at, batch_size, bos).mean()
    effects = torch.stack([nie(pd_steered[..., 0], pd_clean[:, 0], -1.0), nie(pd_steered[..., 1], pd_clean[:, 1], 1.0)],
                          dim=-1)
    check_effects(effects, pd_clean)
    counts = {"train": len(train), "test": len(test), "steer_true": len(by_label[0]), "steer_false": len(by_label[1])}
    return TruthResult(hook, theta, cosine(theta["base"], theta["post"]), mm_acc, lr_acc, probe_layer,
                       list(intervene_layers), pd_clean, pd_steered, effects, mass, bos, counts, pos)


def check_effects(effects: Float[Tensor, "owner model label"], pd_clean: Float[Tensor, "model label"]) -> None:
    """Refuse an undefined NIE: a model already at PD -1 on true statements (or +1 on false ones) has no way to go."""
    bad = torch.nonzero(~torch.isfinite(effects))
    if len(bad):
        _, j, k = (int(x) for x in bad[0])
        raise InterpError(f"the {ROLES[j]} model's P(TRUE) - P(FALSE) on the held-out {('true', 'false')[k]} "
                          f"statements is already {float(pd_clean[j, k]):+.3f}, so its NIE (the fraction of the way "
                          f"to {(-1, 1)[k]:+d} that steering moves it) is undefined",
                          fix="use statements the model does not answer with certainty")
