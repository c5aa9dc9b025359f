"""Triton kernels against the plain-torch path, on CPU through Triton's interpreter (TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from patching import kernels
from patching.variants import build_variants as build_variants_torch
from patching.variants import readout as readout_torch

pytestmark = pytest.mark.skipif(not kernels.available(), reason="Triton cannot launch here (no CUDA, no interpreter)")


@pytest.mark.parametrize("shape", [(2, 6, 8), (3, 10, 24), (1, 5, 64)])
def test_build_variants_equals_torch_exactly(shape: tuple[int, int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    base, source = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = torch.rand((7, shape[1]), generator=g) > 0.6
    mask[0] = False  # a variant that patches nothing is the base itself
    out = kernels.build_variants(base, source, mask)
    assert torch.equal(out, build_variants_torch(base, source, mask))
    assert torch.equal(out[0], base)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("n, d_model, k", [(5, 24, 2), (33, 64, 3)])
def test_readout_equals_torch(kind: str, n: int, d_model: int, k: int) -> None:
    g = torch.Generator().manual_seed(n + d_model)
    x = torch.randn(n, d_model, generator=g) * 3
    w, b = torch.randn(d_model, generator=g), torch.randn(d_model, generator=g)
    bias = b if kind == "layernorm" else None
    W_U, b_U = torch.randn(d_model, k, generator=g), torch.randn(k, generator=g)
    ours = kernels.readout(x, w, bias, 1e-5, kind, W_U, b_U)
    ref = readout_torch(x, w, bias, 1e-5, kind, W_U, b_U)
    # Same arithmetic in another summation order: fp32 rounding only.
    assert torch.allclose(ours, ref, atol=2e-5, rtol=1e-6)


@pytest.mark.parametrize("site", ["resid_pre", "z", "mlp_out"])
def test_engine_triton_backend_equals_torch(tiny_dir, site: str) -> None:
    """`--backend triton` through the whole engine gives the torch path's sweep (fp32 rounding only)."""
    from interp.models.native import NativeTransformer
    from patching import activation_patch, metrics

    nt = NativeTransformer.from_pretrained(tiny_dir("llama"))
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(3, 300, (2, 5), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(3, 300, (2,), generator=g)
    metric = metrics.LogitDiff(torch.tensor([5, 6]), torch.tensor([7, 8]))
    ours = activation_patch(nt, clean, corrupted, site=site, metric=metric, backend="triton")
    ref = activation_patch(nt, clean, corrupted, site=site, metric=metric, backend="torch")
    assert ours.raw.shape == ref.raw.shape
    assert torch.allclose(ours.raw, ref.raw, atol=1e-5, rtol=0)
    assert (ref.raw - ref.corrupted_metric).abs().max() > 1e-3  # the sweep measures something


def test_triton_backend_refused_clearly_where_it_cannot_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    from interp.errors import InterpError
    from patching import variants

    monkeypatch.setattr(kernels, "available", lambda: False)
    monkeypatch.setitem(variants._BACKENDS, "triton", kernels._triton_backend)
    with pytest.raises(InterpError, match="CUDA"):
        variants.get_backend("triton")
