"""Exact activation patching across checkpoints: sites, metrics, the batched engine, cross-model patching."""

from patching import metrics
from patching.engine import Patcher, PatchResult, activation_patch
from patching.sites import DEFAULT_SITES, SITES

__all__ = ["activation_patch", "PatchResult", "Patcher", "metrics", "SITES", "DEFAULT_SITES"]
