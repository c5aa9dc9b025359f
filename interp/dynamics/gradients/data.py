"""(instruction, response) data for the layer-gradient analysis: JSONL reading, prompt templates, tokenisation.

The prompt/response boundary is exact: the prompt and the response are tokenised separately and their token ids
concatenated, so the response tokens are known without re-encoding a character prefix. (Li et al.'s reference code
tokenises the joined text and finds the boundary with `len(tok.encode(text[:text.rfind(output)]))`, which can be off
by one token where a merge crosses the boundary; the two agree whenever the tokenizer splits at the boundary.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from interp.data.jsonl import numbered_records, read_records
from interp.data.tokens import encode, with_bos
from interp.errors import InterpError

Template = Literal["auto", "plain", "chat"]
TEMPLATES: tuple[str, ...] = ("auto", "plain", "chat")
SOURCE_CHAT = "source-chat"  # what `auto` resolves to for a data source's chat-tuned checkpoint
# Li et al. give instruct models this system message (and none for Gemma, whose template rejects a system role).
SYSTEM_PROMPT = "You are a helpful assistant."
PAIR_FIELDS = ("instruction", "response")
PAIR_EXAMPLE = '{"instruction": "2+3=", "response": "5"}'


@dataclass(frozen=True)
class Encoded:
    """One sample's token ids; the first `n_prompt` are the prompt (no loss), the rest the response. `source`
    (`file:line`) names the sample in errors."""

    ids: tuple[int, ...]
    n_prompt: int
    source: str = ""

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.n_prompt


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Read a JSONL file of {"instruction": str, "response": str} objects, one per line (blank lines skipped)."""
    rows = read_records(path, PAIR_FIELDS, PAIR_EXAMPLE)
    return [(row["instruction"], row["response"]) for row in rows]


def sample_sources(path: str | Path) -> list[str]:
    """`file:line` of each pair `read_pairs` returns, to name a sample in errors."""
    return [f"{path}:{number}" for number, _ in numbered_records(path, PAIR_FIELDS, PAIR_EXAMPLE)]


def write_pairs(pairs: list[tuple[str, str]], path: str | Path) -> Path:
    """Write (instruction, response) pairs as the JSONL file `read_pairs` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"instruction": i, "response": r}) for i, r in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path


def resolve_template(template: Template, model_dir: str | Path, tokenizer: Any) -> str:
    """`auto` -> "source-chat" for a chat checkpoint of a registered data source (`interp.data.sources`: the zoo's
    chat run, say), "chat" if the tokenizer has a chat template, else "plain"."""
    if template not in TEMPLATES:
        raise InterpError(f"unknown template {template!r}", fix=f"use one of {', '.join(TEMPLATES)}")
    if template == "plain":
        return "plain"
    if source_chat_template(model_dir) is not None:
        return SOURCE_CHAT
    if getattr(tokenizer, "chat_template", None):
        return "chat"
    if template == "chat":
        raise InterpError(f"{model_dir} has no chat template", fix="use --template plain (or auto)")
    return "plain"


def source_chat_template(model_dir: str | Path) -> str | None:
    """The chat template (a format string with {instruction}) of the data source that chat-tuned `model_dir`, or
    None when no registered source trained it or it is not one of its chat-tuned checkpoints."""
    from interp.data.sources import source_of

    source = source_of(model_dir)
    return source.chat_template if source is not None and source.chat(Path(model_dir)) else None


def encode_pair(tokenizer: Any, instruction: str, response: str, template: str, prepend_bos: bool = False,
                chat_format: str | None = None) -> Encoded:
    """Token ids of prompt + response, with the prompt formatted by the resolved `template`.

    plain: `instruction + "\\n"` with the tokenizer's usual special tokens (BOS where it adds one), as Li et al.'s
    base models. chat: the tokenizer's chat template (system message `SYSTEM_PROMPT`, dropped if the template
    rejects it, then the user turn, generation prompt on). source-chat: `chat_format.format(instruction=...)`, the
    chat template of the data source that trained the checkpoint (`source_chat_template`). `prepend_bos` puts the
    tokenizer's BOS token first unless the prompt starts with it already (the BOS policy of `interp.data.tokens`:
    a tokenizer without one is refused).
    """
    if template == "plain":
        prompt_ids = list(tokenizer(instruction + "\n")["input_ids"])
        prompt_ids = with_bos(tokenizer, prompt_ids) if prepend_bos else prompt_ids
    else:
        prompt_ids = encode(tokenizer, _chat_text(tokenizer, instruction, template, chat_format), prepend_bos)
    response_ids = encode(tokenizer, response, bos=False)
    return Encoded(tuple(prompt_ids) + tuple(response_ids), len(prompt_ids))


def encode_pairs(tokenizer: Any, pairs: list[tuple[str, str]], template: str, max_length: int,
                 prepend_bos: bool = False, sources: list[str] | None = None, chat_format: str | None = None
                 ) -> list[Encoded]:
    """Encode every pair and truncate to `max_length` tokens (Li et al. use 1024); `sources` name the samples."""
    sources = sources or [f"sample {i}" for i in range(len(pairs))]
    encoded = (encode_pair(tokenizer, instruction, response, template, prepend_bos, chat_format)
               for instruction, response in pairs)
    return [Encoded(e.ids[:max_length], min(e.n_prompt, max_length), source) for e, source in zip(encoded, sources)]


def check_samples(samples: list[Encoded], n_ctx: int, max_length: int) -> None:
    """Refuse, naming the line, a sample longer than the model's context or left with no response token to take the
    loss on (an empty response, or one truncated away by `max_length`): both would give wrong or NaN numbers."""
    for s in samples:
        if len(s.ids) > n_ctx:
            raise InterpError(f"{s.source}: the sample is {len(s.ids)} tokens, longer than the model's context of "
                              f"{n_ctx}", fix=f"pass --max-length {n_ctx} (or less) to truncate the samples")
        if s.n_response < 1 or len(s.ids) < 2:
            raise InterpError(f"{s.source}: no response token is left to take the loss on (prompt {s.n_prompt} "
                              f"tokens, --max-length {max_length})",
                              fix="give that line a non-empty response, shorten its instruction or raise --max-length")


def _chat_text(tokenizer: Any, instruction: str, template: str, chat_format: str | None) -> str:
    if template == SOURCE_CHAT:
        if chat_format is None:
            raise ValueError(f"the {SOURCE_CHAT} template needs the source's chat_format")
        return chat_format.format(instruction=instruction)
    from jinja2 import TemplateError

    user = {"role": "user", "content": instruction}
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT}, user],
                                             add_generation_prompt=True, tokenize=False)
    except TemplateError:  # templates such as Gemma's raise on a system turn; Li et al. omit it there
        return tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
