"""The CUDA path: Triton kernels on CUDA tensors, the patching engine on a GPU, `interp.load(..., device="cuda")`.

Runs only where CUDA is available; everything is skipped elsewhere. tests/conftest.py defaults TRITON_INTERPRET to 1
(the CPU interpreter), so export TRITON_INTERPRET=0 before pytest to launch the compiled kernels
(`benchmarks/gpu_check.sh` does); under the interpreter the Triton tests here are skipped, the rest still run.

Tolerances. TF32 is switched off for every test (`fp32_matmuls`), so CUDA matmuls are true fp32 and CUDA, CPU,
cuBLAS and Triton results differ only by summation order. Copies (`build_variants`) are compared bit for bit. Small
reductions reuse the CPU tests' tolerances: `readout` 2e-5 (tests/test_kernels.py), patching sweeps and logits 1e-4
absolute on metrics and logits of order 1-10 (tests/test_patching.py's TOL, tests/test_loading.py's ATOL), i.e.
about 1e-5 relative, far above fp32 reordering noise (~1e-6 here) and far below any real error (a wrong patch or
a wrong weight moves them by 1e-2 or more). Large `readout` rows get a bound scaled by the sum of absolute terms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Reused, not copied: the CPU tests' helpers (tests/ is on sys.path: rootdir conftest, no __init__.py).
import test_kernels as cpu_kernels  # noqa: E402
import test_loading as cpu_loading  # noqa: E402
import test_patching as cpu_patching  # noqa: E402
from test_patching import gpt2_two_heads  # noqa: E402,F401  (a fixture: a tiny GPT-2 with 2 heads)

from interp.models.native import NativeTransformer  # noqa: E402
from interp.testing import ARCHITECTURES  # noqa: E402
from patching import Patcher, kernels  # noqa: E402
from patching.variants import build_variants as build_variants_torch  # noqa: E402
from patching.variants import readout as readout_torch  # noqa: E402

compiled_triton = pytest.mark.skipif(
    torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1",
    reason="TRITON_INTERPRET=1 runs Triton's CPU interpreter: export TRITON_INTERPRET=0 to test the compiled kernels")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def fp32_matmuls():
    """True fp32 matmuls (no TF32) for the test, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def on_cuda(kernel: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`kernel` run on CUDA copies of its tensor arguments, its output brought back to the CPU."""

    def run(*args: object) -> torch.Tensor:
        out = kernel(*(a.to(CUDA) if isinstance(a, torch.Tensor) else a for a in args))
        assert out.device.type == "cuda"
        return out.cpu()

    return run


# --- the kernels ------------------------------------------------------------------------------------------------
# tests/test_kernels.py's own tests, with the kernels launched on CUDA and the torch twins on the CPU, plus
# engine-sized shapes: GPT-2-small residual slots (width 768), head slots (12 heads x 32 positions, d_head 64), a
# width that is not a power of two and a Llama-sized width.
KERNEL_SHAPES = [(2, 6, 8), (3, 10, 24), (1, 5, 64), (8, 32, 768), (8, 12 * 32, 64), (4, 17, 200), (2, 9, 4096)]


@compiled_triton
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_build_variants_kernel_on_cuda(shape: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "build_variants", on_cuda(kernels.build_variants))
    cpu_kernels.test_build_variants_equals_torch_exactly(shape)


@compiled_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_build_variants_kernel_is_an_exact_copy_in_every_dtype(dtype: torch.dtype) -> None:
    g = torch.Generator(device=CUDA).manual_seed(0)
    base, source = (torch.randn(8, 32, 768, generator=g, device=CUDA).to(dtype) for _ in range(2))
    mask = torch.rand(40, 32, generator=g, device=CUDA) > 0.5
    assert torch.equal(kernels.build_variants(base, source, mask), build_variants_torch(base, source, mask))


@compiled_triton
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("n, d_model, k", [(5, 24, 2), (33, 64, 3)])
def test_readout_kernel_on_cuda(kind: str, n: int, d_model: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "readout", on_cuda(kernels.readout))
    cpu_kernels.test_readout_equals_torch(kind, n, d_model, k)


@compiled_triton
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("n, d_model, k", [(8 * 384, 768, 2), (1000, 2048, 5), (37, 4096, 16)])
def test_readout_kernel_at_model_sizes(kind: str, n: int, d_model: int, k: int) -> None:
    """Against the torch twin on CUDA. A d_model-long fp32 dot product reordered differs by a few ulps of the sum of
    its absolute terms (worst case d_model ulps, about sqrt(d_model) typically): bound 2e-5 x that sum, per row."""
    g = torch.Generator(device=CUDA).manual_seed(n + d_model)
    x = torch.randn(n, d_model, generator=g, device=CUDA) * 3 + 1
    w, b = (torch.randn(d_model, generator=g, device=CUDA) for _ in range(2))
    bias = b if kind == "layernorm" else None
    W_U, b_U = torch.randn(d_model, k, generator=g, device=CUDA), torch.randn(k, generator=g, device=CUDA)
    ours = kernels.readout(x, w, bias, 1e-5, kind, W_U, b_U)
    ref = readout_torch(x, w, bias, 1e-5, kind, W_U, b_U)
    normed = readout_torch(x, w, bias, 1e-5, kind, torch.eye(d_model, device=CUDA), torch.zeros(d_model, device=CUDA))
    scale = normed.abs() @ W_U.abs() + b_U.abs()
    assert ours.shape == ref.shape == (n, k) and ours.dtype == torch.float32
    assert ((ours - ref).abs() <= 2e-5 * scale).all(), float(((ours - ref).abs() / scale).max())


# --- the engine ---------------------------------------------------------------------------------------------------
BACKENDS = ["torch", pytest.param("triton", marks=compiled_triton)]
ENGINE_SITES = ("resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "z_by_pos", "k_by_pos", "v", "pattern")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_engine_on_cuda_equals_cpu(arch: str, backend: str, tiny_dir: Callable[[str], Path]) -> None:
    """Same sweep, same variants run and skipped, on the GPU (either backend) as with the CPU engine."""
    path = tiny_dir(arch)
    cpu, gpu = NativeTransformer.from_pretrained(path), NativeTransformer.from_pretrained(path, device="cuda")
    clean, corrupted = cpu_patching.prompts(n_pos=7)
    metric = cpu_patching.logit_diff()
    sites = [s for s in ENGINE_SITES if not (s == "resid_mid" and cpu.cfg.parallel_attn_mlp)]
    ref = Patcher(cpu, clean, corrupted, metric, sites)
    ours = Patcher(gpu, clean, corrupted, metric, sites, backend=backend)
    assert ours.backend.name == backend and ours.device.type == "cuda"
    for site in sites:
        want, got = ref.sweep(site), ours.sweep(site)
        torch.testing.assert_close(got.raw, want.raw, atol=cpu_patching.TOL, rtol=0, msg=site)
        assert (got.n_run, got.n_skipped) == (want.n_run, want.n_skipped), site
        assert got.clean_metric == pytest.approx(want.clean_metric, abs=cpu_patching.TOL)
        assert got.corrupted_metric == pytest.approx(want.corrupted_metric, abs=cpu_patching.TOL)
    assert (want.raw - want.corrupted_metric).abs().max() > 1e-3  # the sweeps measure something


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_engine_on_cuda_equals_transformer_lens(arch: str, backend: str, tiny_dir: Callable[[str], Path],
                                                gpt2_two_heads: Path) -> None:
    """tests/test_patching.py's comparison with `transformer_lens.patching`, with the bridge and the engine on CUDA:
    every site on GPT-2 (learned positions, biases), the grouped-query head sites on Llama."""
    from transformer_lens.model_bridge import TransformerBridge

    path = gpt2_two_heads if arch == "gpt2" else tiny_dir(arch)
    tl = TransformerBridge.boot_transformers(str(path), device="cuda")
    nt = NativeTransformer.from_pretrained(path, device="cuda")
    clean, corrupted = (t.to(CUDA) for t in cpu_patching.prompts())
    metric = cpu_patching.logit_diff()
    _, clean_cache = tl.run_with_cache(clean)
    sites = [*cpu_patching.TL_SWEEPS, "resid_mid"] if arch == "gpt2" else list(cpu_patching.GQA_SITES)
    patcher = Patcher(nt, clean, corrupted, metric, sites, backend=backend)
    for site in sites:
        ours = patcher.sweep(site)
        expected = (cpu_patching.tl_resid_mid(tl, corrupted, clean_cache, metric, nt.cfg.n_layers)
                    if site == "resid_mid" else cpu_patching.tl_sweep(site, tl, corrupted, clean_cache, metric))
        assert ours.raw.shape == expected.shape, site
        torch.testing.assert_close(ours.raw, expected.float().cpu(), atol=cpu_patching.TOL, rtol=0, msg=site)
        assert ours.n_run > 0, site


# --- loading ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["native", "transformer_lens", "nnsight"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_load_on_cuda_logits_equal_hugging_face(arch: str, backend: str, tiny_dir: Callable[[str], Path]) -> None:
    """`interp.load(..., device="cuda")` against Hugging Face's eager model on CUDA (tests/test_loading.py's ATOL)."""
    if backend == "nnsight":
        pytest.importorskip("nnsight", reason="nnsight is not installed here (optional backend)")
    import interp
    from transformers import AutoModelForCausalLM

    path = tiny_dir(arch)
    reference = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").to(CUDA).eval()
    model = interp.load(path, backend=backend, device="cuda")
    with torch.no_grad():
        expected = reference(cpu_loading.TOKENS.to(CUDA)).logits
        got = model(cpu_loading.TOKENS)  # CPU tokens, as from a user: the model moves them
    assert got.device.type == "cuda"
    assert got.shape == (2, cpu_loading.TOKENS.shape[1], 384)
    torch.testing.assert_close(got, expected, atol=cpu_loading.ATOL, rtol=0)
