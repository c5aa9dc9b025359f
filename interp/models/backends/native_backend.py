"""The `native` backend: interp's own explicit torch implementation (`NativeTransformer`), the fastest."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.models.convert import load_hf_causal_lm
from interp.models.hf import summarise
from interp.models.hooked import HookedModel, HookFn
from interp.models.native import NativeTransformer


class NativeModel(HookedModel):
    """`HookedModel` over `NativeTransformer`: hooks are plain function calls, no framework in between."""

    backend = "native"

    @classmethod
    def from_dir(cls, path: Path, device: torch.device, dtype: torch.dtype, step: int | None,
                 tokenizer: object | None = None) -> "NativeModel":
        from transformers import AutoTokenizer

        from interp.loading import resolve_backend

        resolve_backend(Path(path), "native")  # a family without a spec is refused before the weights are read
        hf = load_hf_causal_lm(path, dtype=dtype)
        summary = summarise(hf)
        nt = NativeTransformer.from_hf(hf, device=device)
        tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = cls(path, step, tok, summary, device, dtype)
        model._native = nt
        return model

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.native()(tokens.to(self.device))

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        with self.native().hooks(fwd_hooks):
            yield

    def list_hooks(self) -> dict[str, int]:
        """Hook names with functions attached now, and how many each (what an intervention is changing)."""
        return self.native().list_hooks()
