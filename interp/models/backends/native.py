"""The `native` backend: interp's own explicit torch implementation (`NativeTransformer`), the fastest."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.models.convert import load_hf_causal_lm
from interp.models.hooked import HookedModel, HookFn, ModelSummary
from interp.models.native import NativeTransformer


def summary_of(nt: NativeTransformer, n_params: int) -> ModelSummary:
    """`ModelSummary` from a converted model's config."""
    c = nt.cfg
    return ModelSummary(architecture=c.architecture, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                        d_model=c.d_model, d_head=c.d_head, d_mlp=c.d_mlp, d_vocab=c.d_vocab, n_ctx=c.n_ctx,
                        n_params=n_params)


class NativeModel(HookedModel):
    """`HookedModel` over `NativeTransformer`: hooks are plain function calls, no framework in between."""

    backend = "native"

    @classmethod
    def from_dir(cls, path: Path, device: torch.device, dtype: torch.dtype, step: int | None,
                 tokenizer: object | None = None) -> "NativeModel":
        from transformers import AutoTokenizer

        hf = load_hf_causal_lm(path, dtype=dtype)
        n_params = sum(p.numel() for p in hf.parameters())
        nt = NativeTransformer.from_hf(hf, device=device)
        tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = cls(path, step, tok, summary_of(nt, n_params), device, dtype)
        model._native = nt
        return model

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.native()(tokens.to(self.device))

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        with self.native().hooks(fwd_hooks):
            yield
