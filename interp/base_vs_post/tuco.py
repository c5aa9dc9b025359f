"""TuCo, the Tuning Contribution (Nuti, Franzmeyer, Henriques, ICML 2025, arXiv 2506.23423).

The fine-tuned forward pass splits exactly, block by block on the fine-tuned residual stream x_l, into a pre-training
component PTC_l = f_PT(x_l, l) and a fine-tuning component FTC_l = f_FT(x_l, l) - PTC_l, where f(x, l) = block_l(x) - x
is the whole block (attention + MLP), and
TuCo = ||sum_l FTC_l[last]||_1 / (||sum_l PTC_l[last]||_1 + ||sum_l FTC_l[last]||_1)   (Def. 4.3, Algorithm 1).
Scaling, x_{l+1} = x_l + PTC_l + alpha_l FTC_l (Def. 5.1), interpolates (alpha = 0 runs the
pre-trained blocks on the fine-tuned embedding) and extrapolates the fine-tuning.

Choices where the paper leaves room (seed-methods.md 2.7): x_0 is the fine-tuned model's embedding, so embedding
changes are not counted; the final norm is outside the decomposition, and logits under alpha use the fine-tuned
model's final norm and unembedding; OutputCo uses the last position's final residual states (before the final norm),
the pre-trained one from the pre-trained model's own forward pass. Prompts of different lengths are left-padded and
masked, so the last position is every prompt's last real token.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.tokens import check_bos, encode, pad
from interp.errors import InterpError
from interp.options import check_context
from interp.models.native import KV, NativeTransformer, PastKV
from interp.progress import progress as progress_bar

Alpha = float | Sequence[float] | Tensor


def check_pair(pt: NativeTransformer, ft: NativeTransformer, names: tuple[str, str] = ("pre-trained", "fine-tuned")
               ) -> None:
    """Refuse a pair whose blocks cannot be swapped: TuCo needs one architecture with identical shapes."""
    differ = [f.name for f in fields(pt.cfg) if getattr(pt.cfg, f.name) != getattr(ft.cfg, f.name)]
    if differ:
        detail = ", ".join(f"{n} {getattr(pt.cfg, n)} vs {getattr(ft.cfg, n)}" for n in differ)
        raise InterpError(f"{names[0]} and {names[1]} are not one architecture ({detail})",
                          fix="pass a pre-trained model and a model fine-tuned from it (same architecture and sizes)")


def layer_alphas(alpha: Alpha, n_layers: int) -> list[float]:
    """One scaling factor per layer from a scalar or a per-layer sequence; each finite and within float32."""
    values = torch.as_tensor(alpha, dtype=torch.float64).flatten().tolist()
    largest = torch.finfo(torch.float32).max
    for value in values:
        if not -largest <= value <= largest:
            raise InterpError(f"alpha {value} is not a finite float32 number", fix="use alphas like 0, 0.5, 1, 1.25")
    if len(values) == 1:
        values = values * n_layers
    if len(values) != n_layers:
        raise InterpError(f"alpha has {len(values)} values but the models have {n_layers} layers",
                          fix=f"give one alpha, or exactly {n_layers} (one per layer)")
    return values


@dataclass
class PairPass:
    """One pass of the fine-tuned stream through both models' blocks."""

    resid: Float[Tensor, "batch pos d_model"]  # x_L (before the final norm)
    ptc: Float[Tensor, "batch layer d_model"]  # sum over blocks 0..l of PTC at the last position (float32)
    ftc: Float[Tensor, "batch layer d_model"]  # the same for FTC (unscaled, whatever alpha is)
    kvs: list[tuple[KV, KV]]  # per layer: (pre-trained block's keys/values, fine-tuned block's), past included


def pair_pass(pt: NativeTransformer, ft: NativeTransformer, resid: Float[Tensor, "batch pos d_model"],
              positions: Int[Tensor, "batch pos"], alphas: Sequence[float],
              past_kvs: Sequence[tuple[PastKV, PastKV]] | None = None,
              key_mask: Int[Tensor, "batch key"] | None = None) -> PairPass:
    """x_{l+1} = x_l + PTC_l + alpha_l FTC_l for every block, both blocks reading x_l (the paper's Algorithm 1)."""
    rope_pt, rope_ft = pt.rope(resid, positions), ft.rope(resid, positions)
    ptc_last, ftc_last, kvs = [], [], []
    for layer, alpha in enumerate(alphas):
        past_pt, past_ft = past_kvs[layer] if past_kvs is not None else (None, None)
        out_pt, kv_pt = pt.blocks[layer](resid, positions, rope_pt, past_pt, key_mask)
        out_ft, kv_ft = ft.blocks[layer](resid, positions, rope_ft, past_ft, key_mask)
        ptc_last.append((out_pt - resid)[:, -1].float())
        ftc_last.append((out_ft - out_pt)[:, -1].float())
        kvs.append((kv_pt, kv_ft))
        resid = torch.lerp(out_pt, out_ft, alpha)  # out_pt + alpha * FTC; exactly out_ft at alpha = 1
    return PairPass(resid, torch.stack(ptc_last, 1).cumsum(1), torch.stack(ftc_last, 1).cumsum(1), kvs)


class ScaledPair:
    """The fine-tuned model with its fine-tuning component scaled by alpha (Def. 5.1): logits and greedy generation.

    It stands in for a `NativeTransformer` (embedding, positions and unembedding are the fine-tuned model's; the
    blocks are the pair), so `NativeTransformer.forward` and `.generate` (with a key/value cache per model) run it.
    """

    def __init__(self, pt: NativeTransformer, ft: NativeTransformer, alpha: Alpha = 1.0) -> None:
        check_pair(pt, ft)
        self.pt, self.ft, self.alphas = pt, ft, layer_alphas(alpha, ft.cfg.n_layers)
        self.cfg, self.positions, self.embed, self.unembed = ft.cfg, ft.positions, ft.embed, ft.unembed

    def run_blocks(self, resid: Float[Tensor, "batch pos d_model"], positions: Int[Tensor, "batch pos"],
                   past_kvs: Sequence[tuple[PastKV, PastKV]] | None = None,
                   key_mask: Int[Tensor, "batch key"] | None = None
                   ) -> tuple[Float[Tensor, "batch pos d_model"], list[tuple[KV, KV]]]:
        """The scaled stack on `resid`; the caches are (pre-trained, fine-tuned) pairs per layer."""
        run = pair_pass(self.pt, self.ft, resid, positions, self.alphas, past_kvs, key_mask)
        return run.resid, run.kvs

    forward = NativeTransformer.forward
    __call__ = NativeTransformer.forward
    generate = NativeTransformer.generate


@dataclass
class TuCoResult:
    """TuCo per prompt with its cumulative per-layer components (last position, L1 norms)."""

    tuco: Float[Tensor, "prompt"]
    ptc: Float[Tensor, "prompt layer"]  # ||sum_{s<=l} PTC_s[last]||_1
    ftc: Float[Tensor, "prompt layer"]  # ||sum_{s<=l} FTC_s[last]||_1
    output_co: Float[Tensor, "prompt"] | None  # OutputCo, the final-state contrast (None if not computed)

    @property
    def tuco_by_layer(self) -> Float[Tensor, "prompt layer"]:
        """TuCo of the first l+1 blocks: the cumulative curve whose last column is `tuco`."""
        return self.ftc / (self.ptc + self.ftc)

    @classmethod
    def cat(cls, parts: Sequence["TuCoResult"]) -> "TuCoResult":
        """Concatenate results along the prompt axis."""
        oc = [p.output_co for p in parts]
        return cls(torch.cat([p.tuco for p in parts]), torch.cat([p.ptc for p in parts]),
                   torch.cat([p.ftc for p in parts]), None if any(o is None for o in oc) else torch.cat(oc))

    def select(self, index: Tensor) -> "TuCoResult":
        """The prompts at `index`, in that order."""
        oc = None if self.output_co is None else self.output_co[index]
        return TuCoResult(self.tuco[index], self.ptc[index], self.ftc[index], oc)


@torch.no_grad()
def tuco(pt: NativeTransformer, ft: NativeTransformer, tokens: Int[Tensor, "batch pos"],
         attention_mask: Int[Tensor, "batch pos"] | None = None, output_co: bool = True) -> TuCoResult:
    """TuCo of each (left-padded) sequence: two block passes per layer; OutputCo adds one pre-trained forward."""
    check_pair(pt, ft)
    if attention_mask is not None and not bool(attention_mask[:, -1].all()):
        raise InterpError("TuCo reads the last position, but some sequences end in padding",
                          fix="left-pad the batch (real tokens last), or use tuco_texts")
    positions = ft.positions(tokens, attention_mask=attention_mask)
    run = pair_pass(pt, ft, ft.embed(tokens, positions), positions, [1.0] * ft.cfg.n_layers,
                    key_mask=attention_mask)
    ptc, ftc = run.ptc.abs().sum(-1), run.ftc.abs().sum(-1)
    score = ftc[:, -1] / (ptc[:, -1] + ftc[:, -1])
    oc = None
    if output_co:
        x_pt, _ = pt.run_blocks(pt.embed(tokens, positions), positions, key_mask=attention_mask)
        x_pt, x_ft = x_pt[:, -1].float(), run.resid[:, -1].float()
        diff = (x_ft - x_pt).abs().sum(-1)
        oc = diff / (x_pt.abs().sum(-1) + diff)
    return TuCoResult(score, ptc, ftc, oc)


def encode_left_padded(tokenizer: Any, texts: Sequence[str], prepend_bos: bool = False,
                       device: torch.device | str | None = None
                       ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token ids left-padded to one width, and the mask (1 = token), by the data layer (`interp.data.tokens`). No BOS
    unless asked for."""
    ids = [encode(tokenizer, t, prepend_bos) for t in texts]
    empty = [t for t, seq in zip(texts, ids) if not seq]
    if empty:
        raise InterpError(f"{len(empty)} prompt(s) tokenise to nothing, e.g. {empty[0]!r}", fix="remove them")
    return pad(tokenizer, ids, "left", device if device is not None else "cpu")


def check_prompts(tokenizer: Any, prompts: Sequence[str], n_ctx: int, new_tokens: int, prepend_bos: bool,
                  source: str = "prompts") -> None:
    """Refuse, before any compute, a prompt that encodes to no tokens (BOS aside) or that, with the `new_tokens`
    generated after it, does not fit the model's context of `n_ctx` positions (naming the prompt by its number in
    `source`)."""
    check_bos(tokenizer, prepend_bos)
    own = [encode(tokenizer, text, bos=False) for text in prompts]
    check_context([encode(tokenizer, text, prepend_bos) if ids else [] for text, ids in zip(prompts, own)], prompts,
                  n_ctx, new_tokens, source)


def _length_batches(tokenizer: Any, texts: Sequence[str], batch_size: int) -> tuple[list[list[int]], Tensor]:
    """Prompt indices in batches of similar token length (less padding), and the permutation back to input order."""
    lengths = [len(encode(tokenizer, t, bos=False)) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)], torch.argsort(torch.tensor(order))


def tuco_texts(pt: NativeTransformer, ft: NativeTransformer, tokenizer: Any, prompts: Sequence[str],
               batch_size: int = 16, prepend_bos: bool = False, output_co: bool = True, progress: bool = True,
               desc: str = "TuCo", source: str = "prompts") -> TuCoResult:
    """TuCo for each prompt, batched by length; results in the prompts' order. A non-finite value is an
    `InterpError` naming the prompt (its number in `source`), never a number in the results."""
    device = ft.W_E.device
    batches, unsort = _length_batches(tokenizer, prompts, batch_size)
    parts = []
    for batch in progress_bar(batches, desc=desc, unit="batch", disable=not progress):
        tokens, mask = encode_left_padded(tokenizer, [prompts[i] for i in batch], prepend_bos, device)
        parts.append(tuco(pt, ft, tokens, mask, output_co=output_co))
    result = TuCoResult.cat(parts).select(unsort)
    columns = [result.tuco[:, None], result.ptc, result.ftc]
    _check_finite(torch.cat(columns + ([result.output_co[:, None]] if result.output_co is not None else []), 1),
                  prompts, source, "TuCo", "both models' blocks add nothing to its last token, or overflow")
    return result


def _check_finite(values: Float[Tensor, "prompt ..."], prompts: Sequence[str], source: str, what: str,
                  cause: str) -> None:
    """Refuse non-finite `values`, naming the first prompt (by its number in `source`) that has one."""
    bad = (~torch.isfinite(values)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise InterpError(f"{source}: the {what} of prompt {bad[0] + 1} ({prompts[bad[0]][:40]!r}) is NaN or "
                          f"infinite ({cause})", fix="check the checkpoints and that prompt")


@dataclass
class AlphaSweep:
    """Greedy continuations and next-token KL to the fine-tuned model, for each alpha."""

    alphas: list[list[float]]  # per sweep point, one value per layer
    continuations: list[list[str]]  # [alpha][prompt]
    kl: Float[Tensor, "alpha prompt"]  # KL(fine-tuned || scaled) of the next-token distribution after each prompt


@torch.no_grad()
def alpha_sweep(pt: NativeTransformer, ft: NativeTransformer, tokenizer: Any, prompts: Sequence[str],
                alphas: Sequence[Alpha], max_new_tokens: int = 16, batch_size: int = 16, prepend_bos: bool = False,
                progress: bool = True, source: str = "prompts") -> AlphaSweep:
    """Run every prompt through the FTC-scaled model at each alpha: greedy continuation and next-token KL.
    A non-finite KL (the scaled model overflowed) is an `InterpError` naming the alpha and the prompt."""
    device, eos = ft.W_E.device, tokenizer.eos_token_id
    scaled = [ScaledPair(pt, ft, alpha) for alpha in alphas]
    batches, unsort = _length_batches(tokenizer, prompts, batch_size)
    texts: list[list[str]] = [[] for _ in alphas]
    kls: list[list[Tensor]] = [[] for _ in alphas]
    for batch in progress_bar(batches, desc="alpha sweep", unit="batch", disable=not progress):
        tokens, mask = encode_left_padded(tokenizer, [prompts[i] for i in batch], prepend_bos, device)
        ref = torch.log_softmax(ft(tokens, mask)[:, -1].float(), -1)
        for i, model in enumerate(scaled):
            new = torch.log_softmax(model(tokens, mask)[:, -1].float(), -1)
            kls[i].append((ref.exp() * (ref - new)).sum(-1))
            generated = model.generate(tokens, max_new_tokens, attention_mask=mask, eos_token_id=eos)
            texts[i] += [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in generated]
    continuations = [[t[i] for i in unsort.tolist()] for t in texts]
    kl = torch.stack([torch.cat(k)[unsort] for k in kls])
    for model, row in zip(scaled, kl):
        _check_finite(row[:, None], prompts, source, f"next-token KL at alpha {model.alphas}", "the scaled model "
                      "overflows at this alpha")
    return AlphaSweep([m.alphas for m in scaled], continuations, kl)


def auc(positive: Float[Tensor, "n"], negative: Float[Tensor, "m"]) -> float:
    """P(a `positive` score > a `negative` one), ties counting half: the Mann-Whitney U statistic over n*m."""
    from scipy.stats import mannwhitneyu

    a, b = positive.double().cpu().numpy(), negative.double().cpu().numpy()
    return float(mannwhitneyu(a, b).statistic) / (len(a) * len(b))
