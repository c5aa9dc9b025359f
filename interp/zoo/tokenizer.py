"""The zoo's word-level tokenizer, trained locally with `tokenizers` on every word the world can produce.

Every entity, object and number is one token, so a fact's answer is a single next token. The tokenizer adds no BOS
by itself (as `HookedModel.to_tokens` expects); the zoo's measurements prepend `<|bos|>` explicitly.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from interp.zoo.corpus import every_text

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIALS = (BOS, EOS, PAD, UNK)


def train_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the world's vocabulary; special tokens take ids 0-3, then words by frequency."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Join words with spaces, then glue punctuation back: "Paris ." -> "Paris.", "User :" -> "User:".
    tok.decoder = decoders.Sequence([decoders.WordPiece(prefix="##", cleanup=True), decoders.Replace(" :", ":")])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIALS), min_frequency=1, show_progress=False)
    tok.train_from_iterator(every_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK)
