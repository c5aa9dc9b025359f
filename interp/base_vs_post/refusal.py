"""Refusal directions of a base and a post-trained model and their transfer (Du et al. 2025 section 1.3, after
Arditi et al. 2024).

r = mean(harmful) - mean(harmless) of `blocks.{l}.hook_resid_pre` at token `pos` of each instruction in the model's
own prompt template, for every layer (cosine per layer between the two models). Interventions, as the reference's
`apply_refusal_dir.py`: ablation x - (x . r^) r^ at resid_pre/mid/post of every layer, measured on harmful requests;
addition x += c r^ at resid_pre/mid/post of `layer` only (every position, generated tokens included), measured on
harmless requests. Refusal score = fraction of greedy `max_new_tokens` generations whose stripped text starts with a
refusal prefix. Each intervention runs in both models with both directions (forward transfer = base direction in the
post-trained model, backward = post-trained direction in the base model).
Deviation: c defaults to |r|/3 of the steered model at `layer`, so that the three additions move the layer's output
by exactly the mean difference (the reference hand-tunes c per model).

Selection of the layer and position (Arditi et al. 2024, "Refusal in language models is mediated by a single
direction", appendix on direction selection; `select_direction`): every candidate r (resid_pre difference in means at
a post-instruction position of a layer l < 0.8 n_layers) gets three scores from one forward each, no generation:
bypass = mean refusal log-odds at the first response position on harmful requests with r^ ablated at every layer;
induce = the same on harmless requests with r added at resid_pre of l; kl = mean KL of the harmless next-token
distribution, ablated vs not. Kept: induce >= 0 and kl <= 0.1; chosen: the lowest bypass score, ties to the earlier
position, then the lower layer; none kept is an InterpError. Generation scores only the reported refusal rates.
Deviations: the refusal tokens are the first tokens of the judge's refusal prefixes (`refusal_token_ids`; the paper
picks them by hand); the scores are computed on training requests (the paper uses a validation split); zero
candidates are discarded; log-odds and KL are exact (the paper adds epsilons); a model whose refusal tokens never
reach even odds keeps the candidates whose addition lifts the log-odds to the harmless baseline, flagged in the
summary (the paper's code stops there).

On a hook backend (a family interp has no native implementation of, or a native one loaded on TransformerLens or
nnsight) the same numbers come from hooks only: prompts of equal length run together, unpadded, each differently
hooked group of requests in forwards of its own, and generation is greedy by a full forward per new token (no key/value
cache): exact, and slow on a large model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.data.judges import REFERENCE, Judge
from interp.divergence import kl_divergence
from interp.errors import InterpError
from interp.models.hooked import HookedModel
from interp.progress import progress
from interp.data.tokens import BOS_DEFAULT, encode, pad
from probes.activations import batches, collect, generate, model_device, residual_layout, runner, tail_logits
from probes.directions import cosine, diff_in_means, unit
from probes.steering import Hook, ablate_hooks, add_hooks

ROLES = ("base", "post")
BASE_TEMPLATE = "User: {instruction}\nAssistant:"

PromptFn = Callable[[str], list[int]]


def template_prompt(tokenizer: Any, template: str | None = None, bos: bool = BOS_DEFAULT) -> PromptFn:
    """instruction -> token ids in the model's own format: `template` (with `{instruction}`) if given, else the
    tokenizer's chat template if it has one (its special tokens as it writes them), else the reference's base
    template "User: ...\\nAssistant:"; `bos` as `interp.data.tokens.encode` for the two format strings."""
    if template is not None:
        return lambda instruction: encode(tokenizer, template.format(instruction=instruction), bos)
    if getattr(tokenizer, "chat_template", None):
        return lambda instruction: list(tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=True, return_dict=False))
    return lambda instruction: encode(tokenizer, BASE_TEMPLATE.format(instruction=instruction), bos)


def candidate_directions(model: HookedModel, prompt: PromptFn, harmful: Sequence[str], harmless: Sequence[str],
                         positions: Sequence[int] = (-1,), batch_size: int = 32
                         ) -> Float[Tensor, "position layer d_model"]:
    """Difference in means (harmful - harmless) of resid_pre at each of `positions` for every layer (not normalised)."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.summary.n_layers)]
    ids = [prompt(x) for x in list(harmful) + list(harmless)]
    acts = collect(runner(model), ids, names, tuple(positions), model.tokenizer, batch_size,
                   desc="refusal acts")
    labels = torch.arange(len(ids)) < len(harmful)
    return diff_in_means(acts.permute(2, 0, 1, 3), labels)


def refusal_directions(model: HookedModel, prompt: PromptFn, harmful: Sequence[str], harmless: Sequence[str],
                       pos: int = -1, batch_size: int = 32) -> Float[Tensor, "layer d_model"]:
    """Difference in means (harmful - harmless) of resid_pre at `pos` for every layer (not normalised)."""
    return candidate_directions(model, prompt, harmful, harmless, (pos,), batch_size)[0]


def refusal_score(model: HookedModel, prompt: PromptFn, instructions: Sequence[str], hooks: Sequence[Hook] = (),
                  max_new_tokens: int = 16, judge: Callable[[str], bool] = REFERENCE, batch_size: int = 32
                  ) -> tuple[float, list[str]]:
    """Fraction of greedy generations judged refusals, and the generations (decoded, special tokens skipped)."""
    nt, tok = runner(model), model.tokenizer
    with nt.hooks(list(hooks)):
        new = generate(nt, [prompt(x) for x in instructions], max_new_tokens, tok, tok.eos_token_id,
                       batch_size)
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in new]
    return sum(map(judge, texts)) / max(1, len(texts)), texts


SELECTION_PROMPTS = 32  # harmful and harmless training requests (each) scored per candidate direction
SCORES = ("bypass", "induce", "kl")  # the last axis of `Selection.scores`
INDUCE_MIN = 0.0  # Arditi et al.: discard a direction whose induce score is below 0
KL_MAX = 0.1  # Arditi et al.: discard a direction whose ablation moves harmless next-token KL above 0.1
ZERO_DIRECTION = 1e-6  # a candidate shorter than this times the longest one is zero (not a direction)


def candidate_layers(n_layers: int) -> list[int]:
    """Layers l < 0.8 L, compared exactly (Arditi et al. exclude the last fifth, too close to the unembedding). Their
    code's `l < int(0.8 L)` also drops the layer that 0.8 L falls inside when L is not a multiple of 5 (layer 25 of
    32; layer 1 of 2, which would leave a 2-layer model only layer 0, whose template-token directions are zero)."""
    return [layer for layer in range(n_layers) if 5 * layer < 4 * n_layers]


def post_instruction_positions(ids: Sequence[Sequence[int]]) -> list[int]:
    """Negative offsets of the tokens every prompt ends with (the template after `{instruction}`, e.g.
    "\\nAssistant:"): Arditi et al.'s post-instruction positions, found from the prompts rather than the template
    text so that tokenization at the boundary cannot shift them; [-1] when the prompts share no final token."""
    shortest, n = min(len(seq) for seq in ids), 0
    while n < shortest and len({seq[len(seq) - n - 1] for seq in ids}) == 1:
        n += 1
    return list(range(-max(n, 1), 0))


def refusal_token_ids(tokenizer: Any, judge: Judge) -> list[int]:
    """The first token of every known refusal prefix (the reference's and the zoo's) that `judge` accepts, with and
    without a leading space, skipping whitespace pieces and prefixes that start with the unknown token. Arditi et al.
    fix these by hand per model family ("I" for Llama-3 and Gemma, "I" and "As" for Qwen); deriving them from the
    judge keeps the logit score and the generation score counting the same openings."""
    prefixes = [p for p in dict.fromkeys(REFERENCE.prefixes + judge.prefixes) if judge(p)]
    if not prefixes:
        raise InterpError("the refusal judge accepts none of the known refusal prefixes, so Arditi et al.'s "
                          "selection has no refusal tokens to score", fix="choose the direction with --layer and --pos")
    unk, ids = getattr(tokenizer, "unk_token_id", None), set()
    for text in prefixes + [" " + p for p in prefixes]:
        first = next((i for i in encode(tokenizer, text, bos=False)
                      if tokenizer.decode([i]).strip()), None)
        if first is not None and first != unk:
            ids.add(int(first))
    return sorted(ids)


def refusal_log_odds(logits: Float[Tensor, "prompt d_vocab"], token_ids: Sequence[int]) -> Float[Tensor, "prompt"]:
    """log P(refusal token) - log P(any other token) of each row's next token (Arditi et al.'s refusal score), in
    float64 as a difference of log-sum-exps: exact where their log(p + 1e-8) - log(1 - p + 1e-8) saturates."""
    logp = logits.double().log_softmax(-1)
    refusal = torch.zeros(logp.shape[-1], dtype=torch.bool, device=logp.device)
    refusal[list(token_ids)] = True
    return logp[:, refusal].logsumexp(-1) - logp[:, ~refusal].logsumexp(-1)


def next_token_kl(reference: Float[Tensor, "prompt d_vocab"], logits: Float[Tensor, "prompt d_vocab"]
                  ) -> Float[Tensor, "prompt"]:
    """KL(reference || intervened) of each row's next-token distribution, in float64 (Arditi et al.'s KL score)."""
    return kl_divergence(reference.double().log_softmax(-1), logits.double().log_softmax(-1))


def _within(rows: slice, part: slice) -> slice:
    """`rows` (of the whole batch) as a slice of the chunk `part`."""
    return slice(max(rows.start, part.start) - part.start, max(min(rows.stop, part.stop) - part.start, 0))


def _on_rows(hooks: Sequence[Hook], rows: slice) -> list[Hook]:
    """`hooks` applied to the batch rows `rows` only; the other rows pass through unchanged."""
    def only(fn: Callable[[Tensor, str], Tensor | None]) -> Callable[[Tensor, str], Tensor]:
        def apply(act: Tensor, name: str) -> Tensor:
            out, new = act.clone(), fn(act[rows], name)
            if new is not None:
                out[rows] = new
            return out
        return apply

    return [(name, only(fn)) for name, fn in hooks] if rows.start < rows.stop else []


@torch.no_grad()
def next_token_logits(model: HookedModel, ids: Sequence[Sequence[int]],
                      groups: Sequence[tuple[slice, Sequence[Hook]]] = (), batch_size: int = 32
                      ) -> Float[Tensor, "prompt d_vocab"]:
    """Logits at the last position of every prompt, each group's hooks acting on its rows only, so that differently
    hooked requests share one batched forward (only the last position is unembedded). Off the native backend each
    group runs in forwards of its own (`_hooked_next_token_logits`)."""
    if model.backend != "native":
        return _hooked_next_token_logits(model, ids, groups, batch_size)
    nt = model.native()
    tokens, mask = pad(model.tokenizer, ids, "left", model_device(nt))
    out = []
    for part in batches(len(ids), batch_size):
        hooks = [hook for rows, group in groups for hook in _on_rows(group, _within(rows, part))]
        with nt.hooks(hooks):
            positions = nt.positions(tokens[part], attention_mask=mask[part])
            resid, _ = nt.run_blocks(nt.embed(tokens[part], positions), positions, key_mask=mask[part])
            out.append(nt.unembed(resid[:, -1]).float().cpu())
    return torch.cat(out)


def _hooked_next_token_logits(model: HookedModel, ids: Sequence[Sequence[int]],
                              groups: Sequence[tuple[slice, Sequence[Hook]]], batch_size: int
                              ) -> Float[Tensor, "prompt d_vocab"]:
    """`next_token_logits` through hooks only: each group's rows (and then the rows of no group) under its hooks
    alone, prompts of equal length batched without padding, so no hook needs to act on some rows only."""
    rows = range(len(ids))
    parts = [(rows[part], list(hooks)) for part, hooks in groups]
    grouped = {row for part, _ in parts for row in part}
    found: dict[int, Tensor] = {}
    for part, hooks in [*parts, ([row for row in rows if row not in grouped], [])]:
        if len(part):
            with model.hooks(hooks):
                logits = tail_logits(model, [ids[row] for row in part], 1, batch_size=batch_size)[:, 0]
            found.update(zip(part, logits))
    return torch.stack([found[row] for row in rows])


def score_candidates(model: HookedModel, prompt: PromptFn, candidates: Float[Tensor, "position layer d_model"],
                     layers: Sequence[int], harmful: Sequence[str], harmless: Sequence[str], token_ids: Sequence[int],
                     batch_size: int = 32) -> tuple[Float[Tensor, "position layer score"], Float[Tensor, "kind"]]:
    """Arditi et al.'s three scores of every candidate (`candidates[:, j]` is read at layer `layers[j]`), and the
    mean refusal log-odds without intervention on (harmful, harmless). One forward per candidate over harmful and
    harmless requests with the unit direction ablated at every layer (bypass = mean refusal log-odds on harmful; kl =
    mean KL against no intervention on harmless) and harmless requests with the direction (not normalised) added at
    resid_pre of its layer, every position (induce = mean refusal log-odds)."""
    n_layers, parallel = residual_layout(model)
    h, s = len(harmful), len(harmless)
    ids = [prompt(x) for x in [*harmful, *harmless, *harmless]]
    reference = next_token_logits(model, ids[:h + s], batch_size=batch_size)
    baseline = refusal_log_odds(reference, token_ids)
    scores = torch.zeros(*candidates.shape[:2], len(SCORES), dtype=torch.float64)
    grid = [(i, j) for i in range(candidates.shape[0]) for j in range(candidates.shape[1])]
    for i, j in progress(grid, desc="refusal direction selection", unit="candidate"):
        r = candidates[i, j]
        ablate = ablate_hooks(unit(r), n_layers, parallel_attn_mlp=parallel)
        add = add_hooks(r, [layers[j]], 1.0, ("resid_pre",), None, parallel)
        logits = next_token_logits(model, ids, [(slice(0, h + s), ablate), (slice(h + s, h + 2 * s), add)],
                                   batch_size)
        odds = refusal_log_odds(logits, token_ids)
        kl = next_token_kl(reference[h:], logits[h:h + s])
        scores[i, j] = torch.stack([odds[:h].mean(), odds[h + s:].mean(), kl.mean()])
    return scores, torch.stack([baseline[:h].mean(), baseline[h:].mean()])


def passing(scores: Float[Tensor, "position layer score"], nonzero: Bool[Tensor, "position layer"],
            induce_min: float = INDUCE_MIN) -> Bool[Tensor, "position layer"]:
    """Candidates kept by Arditi et al.'s filters with their code's bounds (induce >= `induce_min`, KL <= 0.1), and
    non-zero."""
    return (scores[..., 1] >= induce_min) & (scores[..., 2] <= KL_MAX) & nonzero


def pick(scores: Float[Tensor, "position layer score"], passed: Bool[Tensor, "position layer"]) -> tuple[int, int]:
    """(position index, layer index) of the passing candidate with the lowest bypass score. Ties go to the earlier
    position, then the lower layer: the order that Arditi et al.'s stable sort keeps."""
    i, j = min(passed.nonzero().tolist(), key=lambda ij: (float(scores[ij[0], ij[1], 0]), ij[0], ij[1]))
    return i, j


@dataclass
class Selection:
    """Arditi et al. (2024)'s direction selection on one model: every candidate's scores and the pick."""

    positions: list[int]
    layers: list[int]
    scores: Float[Tensor, "position layer score"]  # score axis: SCORES
    passed: Bool[Tensor, "position layer"]
    pos: int
    layer: int
    refusal_tokens: list[str]
    baseline: Float[Tensor, "kind"]  # mean refusal log-odds without intervention: harmful, harmless
    induce_min: float  # INDUCE_MIN, or the harmless baseline when no candidate reached it (fallback)
    requests: dict[str, int]

    @property
    def fallback(self) -> bool:
        """Whether the induce filter fell back to the harmless baseline (no candidate reached even odds)."""
        return self.induce_min != INDUCE_MIN

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: candidates, filters, the pick and its scores."""
        i, j = self.positions.index(self.pos), self.layers.index(self.layer)
        return {"method": "Arditi et al. 2024: lowest bypass score among candidates (layers < 0.8 n_layers unless one "
                          "was given) with induce score >= 0 and KL <= 0.1; ties to the earlier position, then the "
                          "lower layer",
                "tensor": "selection_scores", "axes": ["position", "layer", "score"], "positions": self.positions,
                "layers": self.layers, "scores": list(SCORES), "refusal_tokens": self.refusal_tokens,
                "requests": self.requests,
                "filters": {"induce_min": self.induce_min, "kl_max": KL_MAX, "non_zero_direction": True},
                "fallback": self.fallback,  # True: no candidate reached induce 0, induce_min = harmless baseline
                "passed": int(self.passed.sum()), "candidates": self.passed.numel(),
                "baseline_log_odds": {"harmful": float(self.baseline[0]), "harmless": float(self.baseline[1])},
                "chosen": {"pos": self.pos, "layer": self.layer,
                           **{k: float(v) for k, v in zip(SCORES, self.scores[i, j])}}}


def select_direction(model: HookedModel, prompt: PromptFn, candidates: Float[Tensor, "position layer d_model"],
                     positions: Sequence[int], layers: Sequence[int], harmful: Sequence[str],
                     harmless: Sequence[str], judge: Judge = REFERENCE, batch_size: int = 32
                     ) -> Selection:
    """Arditi et al. (2024)'s selection of the refusal direction among `candidates` (difference in means read at
    `positions` x `layers`), by logit scores instead of generations. Deviations: refusal tokens from the judge
    (`refusal_token_ids`); exact log-odds and KL (no epsilon); zero candidates (e.g. resid_pre of layer 0 at template
    tokens: the same embedding for every prompt) discarded; when no candidate reaches induce score 0, those that raise
    the refusal log-odds to at least the harmless baseline are kept instead (flagged as a fallback; the paper's code
    stops). None kept is an InterpError."""
    token_ids = refusal_token_ids(model.tokenizer, judge)
    scores, baseline = score_candidates(model, prompt, candidates, layers, harmful, harmless, token_ids, batch_size)
    bad = (~torch.isfinite(scores)).nonzero().tolist()
    if bad:
        i, j, k = bad[0]
        raise InterpError(f"the {SCORES[k]} score of the refusal direction at layer {layers[j]}, position "
                          f"{positions[i]} of {model.path} is not finite", fix="check the model's weights and inputs")
    norms = candidates.norm(dim=-1)
    nonzero = norms > ZERO_DIRECTION * norms.max()
    induce_min = INDUCE_MIN
    if not passing(scores, nonzero, induce_min).any() and float(baseline[1]) < INDUCE_MIN:
        induce_min = float(baseline[1])
    passed = passing(scores, nonzero, induce_min)
    if not passed.any():
        kl, induce = int((scores[..., 2] <= KL_MAX).sum()), int((scores[..., 1] >= induce_min).sum())
        raise InterpError(f"no candidate refusal direction of {model.path} passes Arditi et al.'s filters: of "
                          f"{passed.numel()} ({int(nonzero.sum())} non-zero), {kl} keep the harmless next-token KL <= "
                          f"{KL_MAX} when ablated and {induce} raise the refusal log-odds to {induce_min:.3g} when "
                          "added, none both", fix="choose the direction yourself with --layer and --pos")
    i, j = pick(scores, passed)
    return Selection(list(positions), list(layers), scores, passed, positions[i], layers[j],
                     model.tokenizer.convert_ids_to_tokens(token_ids), baseline, induce_min,
                     {"harmful": len(harmful), "harmless": len(harmless)})


@dataclass
class RefusalResult:
    """Directions, cosines and refusal scores; `[owner, model]` axes index ROLES. `selection` is None when both the
    layer and the position were given."""

    directions: dict[str, Float[Tensor, "layer d_model"]]
    cosine: Float[Tensor, "layer"]
    layer: int
    pos: int
    coeff: dict[str, float]
    baseline: Float[Tensor, "model kind"]  # kind 0 = harmful requests, 1 = harmless requests
    ablation: Float[Tensor, "owner model"]  # on harmful requests
    addition: Float[Tensor, "owner model"]  # on harmless requests
    samples: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    selection: Selection | None = None

    def tensors(self) -> dict[str, Tensor]:
        """Named tensors for the results file (`selection_scores`: [position, layer, score], see the summary)."""
        out = {"direction_base": self.directions["base"], "direction_post": self.directions["post"],
               "cosine": self.cosine, "baseline": self.baseline, "ablation": self.ablation, "addition": self.addition}
        if self.selection is not None:
            out["selection_scores"] = self.selection.scores.float()
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready headline numbers (keys "<direction>_dir_in_<model>"); `baseline_refuses_none` flags a model that
        refused none of the harmful test requests (then its refusal scores say nothing about a direction)."""
        cond = {f"{o}_dir_in_{m}": (i, j) for i, o in enumerate(ROLES) for j, m in enumerate(ROLES)}
        return {"layer": self.layer, "pos": self.pos, "coeff": self.coeff,
                "cosine_per_layer": [round(float(c), 4) for c in self.cosine],
                "cosine_at_layer": float(self.cosine[self.layer]),
                "baseline": {m: {"harmful": float(self.baseline[j, 0]), "harmless": float(self.baseline[j, 1])}
                             for j, m in enumerate(ROLES)},
                "baseline_refuses_none": {m: bool(self.baseline[j, 0] == 0) for j, m in enumerate(ROLES)},
                "ablation_harmful": {k: float(self.ablation[ij]) for k, ij in cond.items()},
                "addition_harmless": {k: float(self.addition[ij]) for k, ij in cond.items()},
                "selection": None if self.selection is None else self.selection.summary(),
                "samples": self.samples, "counts": self.counts}


def choose_direction(model: HookedModel, prompt: PromptFn, train: tuple[Sequence[str], Sequence[str]],
                     layer: int | None = None, pos: int | None = None, judge: Callable[[str], bool] | Judge = REFERENCE,
                     batch_size: int = 32) -> tuple[Float[Tensor, "layer d_model"], int, int, Selection | None]:
    """(directions of every layer at the chosen position, layer, position, selection). A `layer` or `pos` left None
    is chosen by `select_direction` over the candidates (layers < 0.8 n_layers, or `layer`; the post-instruction
    positions, or `pos`), scored on the first `SELECTION_PROMPTS` training requests of each kind (Arditi et al. score
    a separate validation split; Du et al. fix layer 11); the selection is None when both are given."""
    harmful, harmless = train
    positions = [pos] if pos is not None else post_instruction_positions([prompt(x) for x in [*harmful, *harmless]])
    candidates = candidate_directions(model, prompt, harmful, harmless, positions, batch_size)
    selection = None
    if layer is None or pos is None:
        layers = candidate_layers(candidates.shape[1]) if layer is None else [layer]
        selection = select_direction(model, prompt, candidates[:, layers], positions, layers,
                                     harmful[:SELECTION_PROMPTS], harmless[:SELECTION_PROMPTS], judge, batch_size)
        layer, pos = selection.layer, selection.pos
    return candidates[positions.index(pos)], layer, pos, selection


def refusal_transfer(
    models: Mapping[str, HookedModel],
    prompts: Mapping[str, PromptFn],
    train: tuple[Sequence[str], Sequence[str]],
    test: tuple[Sequence[str], Sequence[str]],
    layer: int | None = None,
    pos: int | None = None,
    coeff: float | None = None,
    max_new_tokens: int = 16,
    judge: Callable[[str], bool] | Judge = REFERENCE,
    batch_size: int = 32,
) -> RefusalResult:
    """Directions from `train = (harmful, harmless)`, generation refusal scores on `test`; the layer and position
    not given are chosen by `choose_direction` on the post model."""
    post, layer, pos, selection = choose_direction(models["post"], prompts["post"], train, layer, pos, judge,
                                                   batch_size)
    directions = {"base": refusal_directions(models["base"], prompts["base"], *train, pos=pos, batch_size=batch_size),
                  "post": post}
    n_layers = post.shape[0]
    # c r^ is added at resid_pre, resid_mid and resid_post, so the layer's output moves by 3c r^: c = |r|/3 moves it
    # by the steered model's own mean difference (Arditi et al.'s activation addition)
    coeffs = {m: float(directions[m][layer].norm()) / 3 if coeff is None else coeff for m in ROLES}
    harmful, harmless = test
    baseline, ablation, addition = torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2)
    samples: dict[str, list[str]] = {}
    for j, m in enumerate(ROLES):
        model, prompt = models[m], prompts[m]
        parallel = residual_layout(model)[1]
        for k, data in enumerate((harmful, harmless)):
            baseline[j, k], texts = refusal_score(model, prompt, data, (), max_new_tokens, judge, batch_size)
            samples[f"{m}_{('harmful', 'harmless')[k]}"] = texts[:3]
        for i, o in enumerate(ROLES):
            r = unit(directions[o][layer])
            ablate = ablate_hooks(r, n_layers, parallel_attn_mlp=parallel)
            ablation[i, j], texts = refusal_score(model, prompt, harmful, ablate, max_new_tokens, judge, batch_size)
            samples[f"{o}_dir_ablated_in_{m}"] = texts[:3]
            add = add_hooks(r, [layer], coeffs[m], ("resid_pre", "resid_mid", "resid_post"), None, parallel)
            addition[i, j], texts = refusal_score(model, prompt, harmless, add, max_new_tokens, judge, batch_size)
            samples[f"{o}_dir_added_in_{m}"] = texts[:3]
    counts = {"train_harmful": len(train[0]), "train_harmless": len(train[1]), "test_harmful": len(harmful),
              "test_harmless": len(harmless)}
    return RefusalResult(directions, cosine(directions["base"], directions["post"]), layer, pos, coeffs, baseline,
                         ablation, addition, samples, counts, selection)
