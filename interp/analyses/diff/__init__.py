"""Token-level diffing of a base and a post-trained model (`interp diff BASE POST --prompts F`): per-token KL both
ways, the tokens whose predictions changed most, resid_post difference norms per layer and position, and the
activation-difference lens of Minder et al. 2025 ("Narrow Finetuning Leaves Clearly Readable Traces in Activation
Differences") on the first positions of unrelated text, read through the POST model's final norm and unembedding:
the lens asks what the post-trained model now writes into its residual stream, and its own readout is what turns
that into its behaviour (Minder et al. read the difference with the fine-tuned model too). The same difference is
also read through a tuned lens (Belrose et al. 2023) of the POST model, trained here on every real token of the ADL
text (the prompts when no --adl-text is given; Belrose et al. train on a pretraining corpus, which the ADL text
stands in for), so that middle layers are read in the basis the final layer predicts in (`--adl-tuned-steps 0`
leaves it out). BOS, padding and unknown tokens, which no model predicts, are left out of both lenses' ranking
(`diffing.unpredicted_ids`). A family interp has no native implementation of gets the KL and norms on its hook
backend and no lens, said in one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

from interp.analyses.unit import Analysis, Arg, Bos, Opt, settings_of, write
from interp.data.tokens import BOS_DEFAULT

if TYPE_CHECKING:
    from torch import Tensor

    from interp.base_vs_post.diffing import Lens, TokenDiff
    from interp.results import Results

LENS = "logit lens of the post model (its final norm and unembedding)"
NO_LENS = "the activation-difference lens is left out: it reads the unembedding of a natively implemented family"
TUNED_LENS = "tuned lens of the post model (Belrose et al. 2023), trained on the ADL text"
TUNED_OFF = "the tuned-lens reading is left out (--adl-tuned-steps 0)"
TUNED_LR, TUNED_BATCH, TUNED_SEED = 1e-3, 512, 0  # Adam settings of the tuned lens (`interp lens`'s defaults)


@dataclass(frozen=True)
class Spec:
    """Per-token KL base<->post, top changed tokens, activation-difference norms and the activation-difference lens.

    Writes kl [direction, prompt, pos], act_diff_norm [layer, prompt, pos], pred_base and pred_post [prompt, pos]
    (each model's top next token), tokens and mask [prompt, pos], adl_delta [layer, slot, d_model] (mean post - base
    at each of the first --adl-positions positions of the ADL text, and their mean), adl_top_ids and adl_top_logits
    [layer, slot, rank]; unless --adl-tuned-steps is 0, adl_tuned_top_ids and adl_tuned_top_logits [layer, slot,
    rank] (the same difference read by a tuned lens of the post model trained on the ADL text) and adl_tuned_loss
    [train_step] (its training loss).
    """

    base: Annotated[Path, Arg("Base checkpoint directory.")]
    post: Annotated[Path, Arg("Post-trained checkpoint directory (same architecture and tokenizer).")]
    prompts: Annotated[Path, Opt('Prompts: JSONL of {"prompt": str}, or one per line.', ("--prompts",))]
    out: Annotated[Path, Opt("Results directory to write.", ("--out",))]
    adl_text: Annotated[Optional[Path], Opt("Unrelated text for the activation-difference lens (same format as "
                                            "--prompts); default: the prompts.", ("--adl-text",))] = None
    adl_positions: Annotated[int, Opt("First token positions of the ADL text whose mean difference is read "
                                      "(Minder et al.: 5).", ("--adl-positions",))] = 5
    adl_tuned_steps: Annotated[int, Opt("Adam steps training the post model's tuned lens on the ADL text, which reads "
                                        "the difference beside the logit lens (0 to 100000; 0: no tuned lens).",
                                        ("--adl-tuned-steps",))] = 250
    top_k: Annotated[int, Opt("Changed tokens listed, and tokens read per layer by the lens.", ("--top-k",))] = 10
    bos: Bos = BOS_DEFAULT
    backend: Annotated[str, Opt("Model backend: auto, native, transformer_lens or nnsight.")] = "auto"
    device: Annotated[str, Opt("torch device, e.g. cpu or cuda.")] = "cpu"
    force: Annotated[bool, Opt("Replace what --out holds.", ("--force",))] = False


def check_backend(backend: str) -> None:
    """Refuse a model backend interp does not have."""
    from interp.errors import InterpError
    from interp.loading import BACKENDS

    if backend not in (*BACKENDS, "auto"):
        raise InterpError(f"unknown backend {backend!r}", fix=f"use one of auto, {', '.join(BACKENDS)}")


def encoded(path: Path, tokenizer: Any, bos: bool, n_ctx: int) -> list[list[int]]:
    """Token ids of a prompt file's texts, each checked to encode to tokens within the context."""
    from interp.data.prompts import read_prompts
    from interp.data.tokens import encode
    from interp.options import check_context

    texts = read_prompts(path)
    ids = [encode(tokenizer, text, bos) for text in texts]
    check_context(ids, texts, n_ctx, source=str(path))
    return ids


def load_models(spec: Spec) -> dict[str, Any]:
    """Both checkpoints on --backend (auto: `load_pair`'s choice)."""
    from interp.analyses.pairs import load_pair
    from interp.loading import load

    if spec.backend == "auto":
        return load_pair(spec.base, spec.post, spec.device, "")
    return {role: load(path, backend=spec.backend, device=spec.device)
            for role, path in (("base", spec.base), ("post", spec.post))}


@dataclass(frozen=True)
class Checked:
    """What `check_inputs` found: where to write, the layer count, the tokenizer, and the token ids of the prompts
    and of the ADL text."""

    out: Path
    n_layers: int
    tokenizer: Any
    ids: list[list[int]]
    adl_ids: list[list[int]]


def check_inputs(s: Spec) -> Checked:
    """Every check, in the design's order, before any model is loaded: --out, option ranges and backend, the pair,
    BOS, the prompt and ADL files and their lengths (some ADL text must reach every position read)."""
    from interp.analyses.pairs import check_pair
    from interp.data.tokens import check_bos
    from interp.loading import checkpoint_dir, load_tokenizer, resolve_backend
    from interp.options import check_range
    from interp.outdir import check_out

    out = check_out(s.out, UNIT.name, settings_of(s), s.force)
    for option, value in (("--top-k", s.top_k), ("--adl-positions", s.adl_positions)):
        check_range(option, value, 1)
    check_backend(s.backend)
    facts = check_pair(s.base, s.post, s.device)
    resolve_backend(checkpoint_dir(s.base), s.backend)
    tokenizer = load_tokenizer(s.base)
    check_bos(tokenizer, s.bos)
    ids = encoded(s.prompts, tokenizer, s.bos, facts.n_ctx)
    adl_ids = ids if s.adl_text is None else encoded(s.adl_text, tokenizer, s.bos, facts.n_ctx)
    check_range("--adl-positions", s.adl_positions, 1, max(map(len, adl_ids)))
    check_range("--adl-tuned-steps", s.adl_tuned_steps, 0, 100_000)
    return Checked(out, facts.n_layers, tokenizer, ids, adl_ids)


def run(spec: Spec) -> Results:
    """Every input checked before the models are loaded; then the token diff, the lens, and the results directory."""
    import sys

    from interp.analyses.pairs import pair_inputs
    from interp.base_vs_post.diffing import mean_difference, token_diff, with_mean_position
    from interp.data.tokens import pad
    from interp.models.auto_backend import is_native

    s, c = spec, check_inputs(spec)
    lens_ok = is_native(s.base)
    if not lens_ok:
        print(f"note: {NO_LENS}", file=sys.stderr)
    models = load_models(s)
    tokens, mask = pad(c.tokenizer, c.ids, side="right")
    diff = token_diff(models, tokens, mask, c.n_layers)
    adl_tokens, adl_mask = pad(c.tokenizer, [x[:s.adl_positions] for x in c.adl_ids], side="right")
    delta = with_mean_position(mean_difference(models, adl_tokens, adl_mask, c.n_layers))
    lens = lens_part(models["post"], delta, s.top_k, c.tokenizer) if lens_ok else ({}, {"adl_skipped": NO_LENS})
    tuned = tuned_part(models["post"], delta, c, s) if lens_ok else ({}, {})
    summary = {"method": "token-level diffing and the activation-difference lens (Minder et al. 2025)",
               "base": str(s.base), "post": str(s.post), "n_prompts": len(c.ids), "n_tokens": int(mask.sum()),
               "mean_kl": diff.mean_kl(), "top_changed": changed_rows(diff, tokens, s.top_k, c.tokenizer),
               "prompt_tokens": [token_strings(c.tokenizer, x) for x in c.ids],
               "adl_text": "the prompts" if s.adl_text is None else str(s.adl_text), "adl_n_texts": len(c.adl_ids),
               "adl_texts_per_position": adl_mask.sum(0).tolist(), **lens[1], **tuned[1], "bos": s.bos,
               "backend": models["base"].backend}
    tensors = {"kl": diff.kl, "act_diff_norm": diff.norms, "pred_base": diff.pred_base, "pred_post": diff.pred_post,
               "tokens": tokens, "mask": mask, "adl_delta": delta, **lens[0], **tuned[0]}
    return write(UNIT, c.out, tensors, summary, title=f"Token-level diff: {s.post.name} vs {s.base.name}",
                 axes=diff_axes(s.adl_positions), tokenization={"bos": s.bos, "padding": "right"},
                 inputs=pair_inputs(s.base, s.post, [("prompts", s.prompts), ("adl_text", s.adl_text)]),
                 settings=settings_of(s))


def token_strings(tokenizer: Any, ids: Any) -> list[str]:
    """One decoded string per token id (what the page and tables show)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def slots(k: int) -> list[str]:
    """Tick labels of the lens's slots: each of the first k positions, then their mean."""
    return [f"pos {j}" for j in range(k)] + [f"mean pos 0-{k - 1}"]


def lens_reading(prefix: str, lens: Lens, delta: Tensor, top_k: int, tokenizer: Any
                 ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, summary entries) of the activation-difference lens read by `lens`, named `prefix`_top_ids,
    `prefix`_top_logits and `prefix`_top_tokens (per layer and slot, the decoded top tokens)."""
    from interp.base_vs_post.diffing import lens_top, unpredicted_ids

    ids, values = lens_top(lens, delta, top_k, unpredicted_ids(tokenizer))
    names = slots(delta.shape[1] - 1)
    top = {f"L{layer}": {slot: token_strings(tokenizer, ids[layer, j]) for j, slot in enumerate(names)}
           for layer in range(len(ids))}
    return {f"{prefix}_top_ids": ids, f"{prefix}_top_logits": values}, {f"{prefix}_top_tokens": top}


def lens_part(post: Any, delta: Tensor, top_k: int, tokenizer: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, summary entries) of the activation-difference lens read by the post model's logit lens (adl_*)."""
    from interp.base_vs_post.diffing import logit_lens, unpredicted_ids

    tensors, summary = lens_reading("adl", logit_lens(post), delta, top_k, tokenizer)
    return tensors, summary | {"adl_lens": LENS, "adl_left_out": token_strings(tokenizer, unpredicted_ids(tokenizer))}


def tuned_part(post: Any, delta: Tensor, c: Checked, s: Spec) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, summary entries) of the activation-difference lens read by a tuned lens of the post model trained on
    every real token of the whole ADL texts (adl_tuned_*, with its training loss); only a note when turned off."""
    from interp.base_vs_post.diffing import train_text_lens, tuned_lens
    from interp.data.tokens import pad

    if s.adl_tuned_steps == 0:
        return {}, {"adl_tuned_skipped": TUNED_OFF}
    tokens, mask = pad(c.tokenizer, c.adl_ids, side="right")
    lens, loss = train_text_lens(post, tokens, mask, s.adl_tuned_steps, TUNED_LR, TUNED_BATCH, TUNED_SEED)
    tensors, summary = lens_reading("adl_tuned", tuned_lens(post, lens), delta, s.top_k, c.tokenizer)
    training = {"trained_on": f"{int(mask.sum())} real tokens of the ADL text", "optimiser": "Adam",
                "steps": s.adl_tuned_steps, "lr": TUNED_LR, "batch": TUNED_BATCH, "seed": TUNED_SEED,
                "loss_first": float(loss[0]), "loss_last": float(loss[-1])}
    return tensors | {"adl_tuned_loss": loss}, summary | {"adl_tuned_lens": TUNED_LENS, "adl_tuned_training": training}


def changed_rows(diff: TokenDiff, tokens: Tensor, k: int, tokenizer: Any) -> list[dict[str, Any]]:
    """The top changed positions as table rows: where, the token read there, the true next token, each model's top
    prediction and both KLs."""
    from interp.base_vs_post.diffing import DIRECTIONS, top_changed

    def decode(ids: Tensor) -> str | None:
        return token_strings(tokenizer, ids)[0] if len(ids) else None

    rows = []
    for i, j in top_changed(diff.kl, diff.mask, k).tolist():
        rows.append({"prompt": i, "pos": j, "token": decode(tokens[i, j:j + 1]),
                     "next": decode(tokens[i, j + 1:j + 2][diff.mask[i, j + 1:j + 2] == 1]),
                     "base_top": decode(diff.pred_base[i, j:j + 1]), "post_top": decode(diff.pred_post[i, j:j + 1]),
                     **{f"kl_{d}": float(diff.kl[n, i, j]) for n, d in enumerate(DIRECTIONS)}})
    return rows


def diff_axes(k: int) -> dict[str, Any]:
    """Axes of every tensor `run` writes (the lenses' only when they ran)."""
    from interp.base_vs_post.diffing import DIRECTIONS
    from interp.results import axes

    ticks = {"direction": DIRECTIONS, "slot": slots(k)}
    return {"kl": axes("direction", "prompt", "pos", **ticks), "act_diff_norm": axes("layer", "prompt", "pos"),
            **{name: axes("prompt", "pos") for name in ("pred_base", "pred_post", "tokens", "mask")},
            "adl_delta": axes("layer", "slot", "d_model", **ticks),
            **{f"{prefix}_{name}": axes("layer", "slot", "rank", **ticks)
               for prefix in ("adl", "adl_tuned") for name in ("top_ids", "top_logits")},
            "adl_tuned_loss": axes("train_step")}


def figures(results: Results) -> list[Any]:
    """Mean KL per prompt both ways, the mean activation-difference norm per layer and position, and each lens's top
    tokens per layer (pooled slot)."""
    import plotly.graph_objects as go

    from interp.base_vs_post.diffing import DIRECTIONS
    from interp.base_vs_post.figures import grouped_bars, heatmaps

    t, s = results.tensors, results.summary
    mask = t["mask"].float()
    per_prompt = t["kl"].sum(-1) / mask.sum(-1).clamp_min(1)
    shown = [grouped_bars({f"prompt {i}": {d: float(per_prompt[n, i]) for n, d in enumerate(DIRECTIONS)}
                           for i in range(mask.shape[0])},
                          f"Mean KL per prompt (all tokens: {s['mean_kl']})", "KL (nats)"),
             heatmaps({"|resid_post(post) - resid_post(base)|": t["act_diff_norm"].sum(1) / mask.sum(0).clamp_min(1)},
                      [str(j) for j in range(mask.shape[1])], "Activation-difference norm, mean over prompts")]
    for prefix in ("adl", "adl_tuned"):
        if f"{prefix}_top_tokens" in s:
            pooled = {layer: list(by_slot.values())[-1] for layer, by_slot in s[f"{prefix}_top_tokens"].items()}
            shown.append(go.Figure(go.Table(header={"values": ["layer", "tokens promoted (mean of first positions)"]},
                                            cells={"values": [list(pooled),
                                                              [" | ".join(x) for x in pooled.values()]]}))
                         .update_layout(title=f"Activation-difference lens ({s[f'{prefix}_lens']})"))
    return shown


UNIT = Analysis(name="diff", title="Token-level diff", command=("diff",), spec=Spec, run=run, figures=figures,
                page="interp.analyses.diff.page", example="diff BASE POST --prompts PROMPTS --out results/diff")
