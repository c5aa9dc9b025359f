"""The jaxtyping annotations are checked at run time in the test suite (conftest.py installs the import hook).

Each call passes a tensor whose shape contradicts the annotation but that torch would broadcast silently, so without
the checks it returns a (wrong) result and the test fails."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from jaxtyping import TypeCheckError

from interp.models.native import NativeTransformer
from patching.variants import build_variants
from probes.directions import LinearProbe, logistic_probe


def test_patching_variant_mask_must_cover_every_slot() -> None:
    base = torch.zeros(1, 3, 4)
    with pytest.raises(TypeCheckError, match="mask"):
        build_variants(base, base, torch.ones(2, 1, dtype=torch.bool))  # one slot for three


def test_probe_weights_must_match_the_layers() -> None:
    probe = LinearProbe(torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(TypeCheckError, match="acts"):
        probe.score(torch.zeros(1, 5, 4))  # one layer of activations for a two-layer probe


def test_model_padding_mask_must_match_the_batch(tiny_dir: Callable[[str], Path]) -> None:
    nt = NativeTransformer.from_pretrained(tiny_dir("gpt2"))
    tokens = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(TypeCheckError, match="attention_mask"):
        nt.positions(tokens, attention_mask=torch.ones(1, 5, dtype=torch.long))  # one mask row for two prompts


def test_non_tensor_annotations_are_checked_too() -> None:
    """beartype checks every annotation, not only the shapes: a string where a float belongs is refused."""
    with pytest.raises(TypeCheckError, match="l2"):
        logistic_probe(torch.zeros(1, 4, 2), torch.ones(4, dtype=torch.bool), l2="0.1")  # type: ignore[arg-type]
