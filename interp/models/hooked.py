"""`HookedModel`: the one wrapper every analysis receives, whatever the backend.

Activations are named with TransformerLens hook names (see docs/DESIGN.md). A hook function is
`fn(activation, name) -> Tensor | None`; returning a tensor replaces the activation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.tokens import BOS_DEFAULT, encode_padded

if TYPE_CHECKING:
    from interp.models.native import NativeTransformer

HookFn = Callable[[Tensor, str], "Tensor | None"]
Names = Sequence[str] | Callable[[str], bool] | None


@dataclass(frozen=True)
class ModelSummary:
    """Architecture facts a researcher asks for first."""

    architecture: str  # Hugging Face class name, e.g. "LlamaForCausalLM"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_params: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class HookedModel(ABC):
    """A causal LM loaded from a checkpoint directory, with TransformerLens-named hooks."""

    backend: str = "abstract"

    def __init__(self, path: Path, step: int | None, tokenizer: Any, summary: ModelSummary, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.path = path
        self.step = step
        self.tokenizer = tokenizer
        self.summary = summary
        self.device = device
        self.dtype = dtype
        self._native: NativeTransformer | None = None

    # --- tokens -----------------------------------------------------------------------------------
    def to_tokens(self, text: str | Sequence[str], bos: bool = BOS_DEFAULT) -> Int[Tensor, "batch pos"]:
        """Tokenise (right-padded when lengths differ) by the one data layer's policy (`interp.data.tokens`): every
        text after the BOS token unless `bos=False`, never doubled; an `InterpError` if the tokenizer has no BOS."""
        texts = [text] if isinstance(text, str) else list(text)
        return encode_padded(self.tokenizer, texts, bos, side="right", device=self.device)[0]

    def to_string(self, tokens: Int[Tensor, "... pos"]) -> str | list[str]:
        """Decode one sequence to a string, or a batch to a list of strings."""
        if tokens.ndim == 1:
            return self.tokenizer.decode(tokens.tolist())
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    def to_str_tokens(self, tokens: Int[Tensor, "pos"]) -> list[str]:
        """One string per token, for axis labels."""
        return [self.tokenizer.decode([t]) for t in tokens.tolist()]

    # --- running ----------------------------------------------------------------------------------
    @abstractmethod
    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits for every position."""

    def __call__(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.forward(tokens)

    @abstractmethod
    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach forward hooks by TransformerLens name for the duration of the block."""

    def run_with_cache(self, tokens: Int[Tensor, "batch pos"], names: Names = None
                       ) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[str, Tensor]]:
        """Logits and the activations of the chosen hooks (all hooks when `names` is None)."""
        wanted = self.resolve_names(names)
        cache: dict[str, Tensor] = {}

        def save(act: Tensor, name: str) -> None:
            cache[name] = act.detach()

        with torch.no_grad(), self.hooks([(n, save) for n in wanted]):
            logits = self.forward(tokens)
        return logits, cache

    def resolve_names(self, names: Names) -> list[str]:
        """Hook names selected by a list, a predicate, or None (all); an unknown name is an `InterpError` naming the
        closest valid one."""
        from interp.models.native import check_hook_names

        available = self.hook_names()
        if names is None:
            return available
        if callable(names):
            return [n for n in available if names(n)]
        check_hook_names(list(names), available)
        return list(names)

    def hook_names(self) -> list[str]:
        """Every hook name this model fires, in forward order (the native model records them from a forward)."""
        return self.native().hook_names()

    @property
    def parallel_attn_mlp(self) -> bool:
        return self.native().cfg.parallel_attn_mlp

    @property
    def learned_positions(self) -> bool:
        return self.native().cfg.positional == "learned"

    def native(self) -> "NativeTransformer":
        """The explicit torch implementation of this checkpoint (converted once, then cached)."""
        if self._native is None:
            from interp.models.native import NativeTransformer

            self._native = NativeTransformer.from_pretrained(self.path, device=self.device, dtype=self.dtype)
        return self._native

    def __repr__(self) -> str:
        s = self.summary
        return (f"{type(self).__name__}({self.path}, step={self.step}, {s.architecture}, layers={s.n_layers}, "
                f"heads={s.n_heads}, d_model={s.d_model}, params={s.n_params:,})")
