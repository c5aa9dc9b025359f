"""Clamped training (Singh et al. 2024, "What needs to go right for an induction head?").

A small attention-only transformer (a GPT-2 checkpoint whose MLPs are zeroed and frozen) is trained on a synthetic
in-context task through `NativeTransformer`'s forward, with chosen activations replaced during the training forward
pass: gradients flow through the clamped computation, the clamped activation itself is fixed. Clamps:

- `prev:L.H`       head H of layer L attends perfectly to the previous position (position 0 to itself);
- `induction:L.H`  head H of layer L attends uniformly to the tokens after earlier copies of the current token
                   (to BOS when there is none);
- `copy:L.H`       the output logits are the log of head H's attention mass on each token of the context
                   (Singh's perfect copy: the head's scores, scattered onto the attended tokens' logits).

Progress measures are logged every step (`progress.safetensors`) and checkpoints are ordinary Hugging Face GPT-2
directories (`step_NNNNNN/`) with the run's task and clamps in `run.json`, which `interp induction` reads.
Deviation from Singh et al.: the other heads of the clamped layer are not ablated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.dynamics.export import native_to_gpt2
from interp.dynamics.induction import Patterns, run_with_patterns, target_pattern, target_score
from interp.dynamics.icl_tasks import BOS_ID, BurstyTask, RepeatTask
from interp.errors import InterpError
from interp.models.native import HookFn, NativeTransformer
from interp.progress import progress
from interp.results import atomic_save_tensors, atomic_write_json

ClampKind = Literal["prev", "induction", "copy"]
RUN_FILE = "run.json"
PROGRESS_FILE = "progress.safetensors"
_SPEC_FIX = "write clamps as KIND:LAYER.HEAD with KIND one of prev, induction, copy, e.g. --clamp prev:0.1"


@dataclass(frozen=True)
class Clamp:
    """One clamped head: what is fixed, on which layer and head."""

    kind: ClampKind
    layer: int
    head: int

    @classmethod
    def parse(cls, spec: str) -> "Clamp":
        """`prev:0.1` -> Clamp("prev", 0, 1)."""
        try:
            kind, where = spec.split(":")
            layer, head = (int(x) for x in where.split("."))
        except ValueError as err:
            raise InterpError(f"cannot read the clamp {spec!r}", fix=_SPEC_FIX) from err
        if kind not in ("prev", "induction", "copy"):
            raise InterpError(f"unknown clamp kind {kind!r} in {spec!r}", fix=_SPEC_FIX)
        return cls(kind, layer, head)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.layer}.{self.head}"


def perfect_previous_token(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch query key"]:
    """Attention 1 on the previous position; position 0 attends to itself."""
    n = tokens.shape[1]
    pattern = target_pattern(tokens, "previous_token").float()
    pattern[:, 0, 0] = 1.0
    return pattern.expand(tokens.shape[0], n, n)


def perfect_induction(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch query key"]:
    """Uniform attention on the tokens after earlier copies of the query token; position 0 where there is none."""
    pattern = target_pattern(tokens, "induction").float()
    pattern[..., 0] += (pattern.sum(-1) == 0).float()
    return pattern / pattern.sum(-1, keepdim=True)


def copy_logits(pattern: Float[Tensor, "batch query key"], tokens: Int[Tensor, "batch pos"], d_vocab: int
                ) -> Float[Tensor, "batch query d_vocab"]:
    """Logits whose softmax is the head's attention pushed onto the attended tokens (absent tokens ~ -20.7)."""
    onehot = torch.nn.functional.one_hot(tokens, d_vocab).to(pattern.dtype)
    return torch.log((pattern @ onehot).clamp_min(1e-9))


@dataclass(frozen=True)
class ClampSet:
    """The clamps of a run, applied in one forward pass; an empty set is the plain forward."""

    clamps: tuple[Clamp, ...] = ()

    def check(self, n_layers: int, n_heads: int) -> None:
        """Refuse heads the model does not have and more than one copy clamp."""
        for c in self.clamps:
            if not (0 <= c.layer < n_layers and 0 <= c.head < n_heads):
                raise InterpError(f"clamp {c} names a head the model does not have ({n_layers} layers x {n_heads} "
                                  f"heads)", fix=_SPEC_FIX)
        if sum(c.kind == "copy" for c in self.clamps) > 1:
            raise InterpError("at most one copy clamp per run", fix="keep one --clamp copy:L.H")

    def hooks(self, tokens: Int[Tensor, "batch pos"]) -> list[tuple[str, HookFn]]:
        """Pattern-replacing hooks for these tokens."""
        makers = {"prev": perfect_previous_token, "induction": perfect_induction}
        out: list[tuple[str, HookFn]] = []
        for c in self.clamps:
            if c.kind in makers:
                fixed = makers[c.kind](tokens)

                def replace(act: Tensor, name: str, head: int = c.head, fixed: Tensor = fixed) -> Tensor:
                    act = act.clone()
                    act[:, head] = fixed.to(act.dtype)
                    return act

                out.append((f"blocks.{c.layer}.attn.hook_pattern", replace))
        return out

    def forward(self, nt: NativeTransformer, tokens: Int[Tensor, "batch pos"]
                ) -> tuple[Float[Tensor, "batch pos d_vocab"], Patterns]:
        """Logits and patterns of the clamped model (same signature as `run_with_patterns`)."""
        logits, patterns = run_with_patterns(nt, tokens, self.hooks(tokens))
        for c in self.clamps:
            if c.kind == "copy":
                logits = copy_logits(patterns[c.layer][:, c.head], tokens, nt.cfg.d_vocab)
        return logits, patterns

    @property
    def pattern_clamped(self) -> set[tuple[int, int]]:
        """Heads whose attention pattern is fixed (their pattern scores are constant, not learned)."""
        return {(c.layer, c.head) for c in self.clamps if c.kind != "copy"}


def read_run_clamps(run_dir: Path) -> ClampSet:
    """The clamps recorded in a training run's `run.json` (none for any other run)."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return ClampSet()
    try:
        specs = json.loads(path.read_text(encoding="utf-8")).get("clamps", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise InterpError(f"{path} is not a JSON object ({err})",
                          fix="restore the run.json that `interp induction train` wrote, or pass --no-clamps") from err
    if not isinstance(specs, list) or not all(isinstance(spec, str) for spec in specs):
        raise InterpError(f"{path}: 'clamps' must be a list of KIND:LAYER.HEAD strings", fix=_SPEC_FIX)
    return ClampSet(tuple(Clamp.parse(spec) for spec in specs))


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimiser settings; defaults train in a couple of minutes on two cores."""

    steps: int = 800
    batch: int = 32
    lr: float = 3e-4
    seed: int = 0
    save_every: int = 20
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4


def attention_only_gpt2(d_vocab: int, n_ctx: int, cfg: TrainConfig) -> tuple[Any, NativeTransformer]:
    """A random GPT-2 (the Hugging Face module) and its native twin with MLPs zeroed and frozen."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    hf_cfg = GPT2Config(vocab_size=d_vocab, n_positions=n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                        n_head=cfg.n_heads, n_inner=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=BOS_ID, eos_token_id=BOS_ID, tie_word_embeddings=False)
    hf = GPT2LMHeadModel(hf_cfg).eval()
    nt = NativeTransformer.from_hf(hf).train()
    mlps = [p for block in nt.blocks for p in block.mlp.parameters()]
    with torch.no_grad():
        for p in mlps:
            p.zero_()
    for p in [*mlps, nt.b_U, *(p for block in nt.blocks for p in block.ln2.parameters())]:
        p.requires_grad_(False)
    return hf, nt


def _tokenizer(task: RepeatTask | BurstyTask) -> Any:
    """A word-level tokenizer naming the task's tokens (`<|bos|>`, `t1`.. or `c1`.., `l1`..)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(task, RepeatTask):
        names = [f"t{i}" for i in range(1, task.d_vocab)]
    else:
        names = [f"c{i}" for i in range(1, task.n_classes + 1)] + [f"l{i}" for i in range(1, task.n_labels + 1)]
    tok = Tokenizer(models.WordLevel({"<|bos|>": BOS_ID, **{n: i + 1 for i, n in enumerate(names)}}))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|bos|>")


def progress_measures(logits: Tensor, patterns: Patterns, tokens: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Per-step measures: loss and accuracy on the targets, each head's induction strength (attention from the
    position before a target to the tokens after earlier copies of its token; TILA for the bursty task) and
    previous-token score."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    mask = targets[:, 1:]
    rows = torch.zeros_like(targets)
    rows[:, :-1] = targets[:, 1:]
    pats = patterns.detach().float()
    return {
        "loss": nll[mask].mean(),
        "accuracy": (logp.argmax(-1) == tokens[:, 1:])[mask].float().mean(),
        "induction_strength": target_score(pats, target_pattern(tokens, "induction"), rows),
        "previous_token": target_score(pats, target_pattern(tokens, "previous_token")),
    }


def train(task: RepeatTask | BurstyTask, clamps: Sequence[Clamp], out: str | Path, cfg: TrainConfig = TrainConfig()
          ) -> Path:
    """Train with clamps, writing `out/step_NNNNNN/` checkpoints, `progress.safetensors` and `run.json`."""
    out = Path(out)
    clamp_set = ClampSet(tuple(clamps))
    clamp_set.check(cfg.n_layers, cfg.n_heads)
    hf, nt = attention_only_gpt2(task.d_vocab, task.seq_len, cfg)
    tokenizer = _tokenizer(task)
    opt = torch.optim.Adam([p for p in nt.parameters() if p.requires_grad], lr=cfg.lr)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    atomic_write_json(out / RUN_FILE, {"task": task.describe(), "clamps": [str(c) for c in clamps],
                                       "train": cfg.__dict__, "architecture": "attention-only GPT-2"})
    log: dict[str, list[Tensor]] = {}

    def save(step: int) -> None:
        native_to_gpt2(nt, hf).save_pretrained(out / f"step_{step:06d}")
        tokenizer.save_pretrained(out / f"step_{step:06d}")
        atomic_save_tensors(out / PROGRESS_FILE, {k: torch.stack(v) for k, v in log.items()})

    for step in progress(range(cfg.steps + 1), desc=f"train {task.describe()['task']} {clamp_set.clamps or ''}",
                         unit="step"):
        batch = task.sample(cfg.batch, data_gen)
        logits, patterns = clamp_set.forward(nt, batch.tokens)
        measures = progress_measures(logits, patterns, batch.tokens, batch.targets)
        for name, value in {"step": torch.tensor(step), **measures}.items():
            log.setdefault(name, []).append(value.detach())
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
        if step < cfg.steps:
            opt.zero_grad()
            measures["loss"].backward()
            opt.step()
    return out
