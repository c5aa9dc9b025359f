"""Shared test setup: offline Hugging Face, Triton's CPU interpreter, tiny checkpoints built once per session."""

from __future__ import annotations

import os

# Before anything imports transformers or triton.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRITON_INTERPRET", "1")  # a GPU machine runs the real kernels with TRITON_INTERPRET=0
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Before anything imports the library: every jaxtyping annotation (and every other annotation) of the three packages
# is checked at run time by beartype, so a wrongly shaped tensor fails the test that passes it (tests/test_shapes.py
# proves the checks are live). PEP 484's numeric tower is on: an int is a float, as for mypy. INTERP_SHAPE_CHECKS=0
# turns the checks off, to time the suite without them.
# The zoo's own training and measurement code (`interp.zoo`) is left out: it runs thousands of small steps per build,
# and checked it made the suite several minutes slower than the 30 the CI budget allows.
if os.environ.get("INTERP_SHAPE_CHECKS", "1") != "0":
    from pathlib import Path

    import jaxtyping

    _LIBRARY = Path(__file__).resolve().parent.parent / "interp"
    _CHECKED = [f"interp.{p.stem}" for p in sorted(_LIBRARY.iterdir()) if p.name not in ("zoo", "__init__.py")
                and (p.suffix == ".py" or (p / "__init__.py").is_file())]
    jaxtyping.install_import_hook([*_CHECKED, "patching", "probes"],
                                  "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")

from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import pytest  # noqa: E402

from interp.testing import ARCHITECTURES, tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: `tiny_dir("llama")` -> a tiny random checkpoint directory of that architecture (built once)."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = tiny_checkpoint(arch, root / arch)
        return built[arch]

    return get


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_checkpoints(request: pytest.FixtureRequest, tiny_dir: Callable[[str], Path]) -> Path:
    """Parametrised over every supported architecture: one tiny checkpoint directory each (`.name` is the arch)."""
    return tiny_dir(request.param)


@pytest.fixture(scope="session")
def zoo_quick() -> Path:
    """Root of a --quick zoo (small, about a minute to build; cached outside the tree per code hash)."""
    from interp.zoo import ensure_zoo

    return ensure_zoo(quick=True)


@pytest.fixture(scope="session")
def zoo() -> Path:
    """Root of the full zoo (built once, several minutes; cached outside the tree per code hash and seed).
    Tests using it are marked `@pytest.mark.zoo`."""
    from interp.zoo import ensure_zoo

    return ensure_zoo()


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real local Ray instance for the whole test run: 2 CPUs, on the loopback only, dashboard and usage statistics
    off, its files in the run's tmp dir; shut down at the end. Executors find it already started and use it."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
             log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()
