"""Tiny offline test fixtures: a locally trained tokenizer, random-initialised checkpoints of each architecture, and
the Hugging Face hub cache as huggingface_hub lays it out.

Everything here runs without a network: the tokenizer is trained on a built-in text, and models are built from a
config and saved with `save_pretrained`, so the directories look exactly like real Hugging Face checkpoints.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedTokenizerFast

from interp.models.arch import FAMILIES, specs
from interp.models.hf import pin_eager_attention

ARCHITECTURES: tuple[str, ...] = FAMILIES

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

_SUBJECTS = ("the cat", "a dog", "my friend", "the teacher", "one bird", "the old man", "a child", "the river")
_VERBS = ("sees", "likes", "follows", "finds", "carries", "remembers", "paints", "calls")
_OBJECTS = ("the ball", "a red house", "the moon", "some bread", "the green tree", "a small boat", "the door")
_EXTRA = (
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "1 2 3 4 5 6 7 8 9 10 11 12. A B C D E F G. Monday Tuesday Wednesday Thursday Friday.",
    "def add(a, b):\n    return a + b\n",
)


def _corpus() -> list[str]:
    """A deterministic little text: every subject-verb-object sentence plus a few varied lines."""
    lines = [f"{s} {v} {o}." for s in _SUBJECTS for v in _VERBS for o in _OBJECTS]
    return lines + list(_EXTRA)


def train_tiny_tokenizer(vocab_size: int = 384, kind: str = "bpe") -> PreTrainedTokenizerFast:
    """A byte-level BPE (or word-level) tokenizer trained offline, with BOS/EOS/PAD special tokens at ids 0-2."""
    specials = [BOS, EOS, PAD]
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="")  # joins words with spaces
        specials.append("<|unk|>")
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; use 'bpe' or 'word'")
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token="<|unk|>" if kind == "word" else None)


def _config(arch: str, vocab_size: int, special_ids: dict[str, int], **overrides: Any) -> PreTrainedConfig:
    """The family's tiny test config (2 layers, d_model 64, its quirks switched on: GQA, partial rotary, biases,
    sliding windows shorter than test prompts, soft-capping); `overrides` replace any of these settings."""
    import transformers

    spec = specs().get(arch)
    if spec is None:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    class_name, defaults = spec.tiny
    config_class: type[PreTrainedConfig] = getattr(transformers, class_name)
    return config_class(**{**defaults, "vocab_size": vocab_size, **special_ids, **overrides})


@torch.no_grad()
def _randomise(model: torch.nn.Module, arch: str, generator: torch.Generator, std: float = 0.15) -> None:
    """Non-trivial random weights: matrices N(0, std), biases N(0, 0.1), norm scales 1 + N(0, 0.1).

    Gemma's RMSNorm multiplies by (1 + weight), so its scales are drawn around the spec's `norm_center` (0).
    """
    center = specs()[arch].norm_center
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if param.ndim >= 2:
            param.copy_(noise * std)
        elif ("norm" in name or ".ln" in name or name.startswith("ln")) and name.endswith("weight"):
            param.copy_(noise * 0.1 + center)
        else:
            param.copy_(noise * 0.1)


def tiny_checkpoint(arch: str, out_dir: Path, seed: int = 0, **overrides: Any) -> Path:
    """Save a tiny random causal LM of `arch` plus its tokenizer to `out_dir` (a Hugging Face checkpoint directory).

    `overrides` go to the Hugging Face config (e.g. `num_hidden_layers=3`).
    """
    out_dir = Path(out_dir)
    tokenizer = train_tiny_tokenizer()
    special_ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = _config(arch, overrides.pop("vocab_size", len(tokenizer)), special_ids, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    _randomise(model, arch, torch.Generator().manual_seed(seed))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    pin_eager_attention(out_dir / "config.json")
    return out_dir


def write_hub_cache(cache: Path, repo_id: str, revision: str, source: Path, commit: str | None = None) -> Path:
    """Put checkpoint `source` in `cache` at `revision` as `hf_hub_download` lays it out; its snapshot directory.

    `models--org--name/blobs/<sha256>` holds each file's bytes once, `snapshots/<commit>/<file>` is a relative
    symlink to its blob, and `refs/<revision>` holds the commit hash (no newline).
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():  # a second ref to a cached commit adds only the ref
            link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot
