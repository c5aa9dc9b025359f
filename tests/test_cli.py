"""The `interp` command: help, `info`, `cache`, one-line errors with exit status 2, `--debug`, and packaging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Callable

import pytest
import torch

from clitools import assert_user_error, run
from interp.checkpoints import weights_sha256
from interp.cli import main
from interp.errors import InterpError

REPO = Path(__file__).resolve().parents[1]
INTERP = Path(sys.executable).parent / "interp"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("the cat sees the moon.\na dog\n\n1 2 3 4 5\n")
    return path


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Callable[[str], Path]) -> dict[str, Path]:
    """Directories a user might point at by mistake."""
    root = tmp_path_factory.mktemp("broken")
    (root / "empty").mkdir()
    unknown = shutil.copytree(tiny_dir("gpt2"), root / "unknown_arch")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps(config | {"model_type": "mamba",
                                                              "architectures": ["MambaForCausalLM"]}))
    corrupt = shutil.copytree(tiny_dir("gpt2"), root / "corrupt")
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return {"missing": root / "nope", "empty": root / "empty", "unknown": unknown, "corrupt": corrupt}


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"), ("empty", "not a checkpoint"), ("unknown", "'mamba'"), ("corrupt", "damaged"),
])
@pytest.mark.parametrize("command", ["info", "cache"])
def test_bad_paths_print_one_line_and_exit_2(broken: dict[str, Path], prompts_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], case: str, needle: str,
                                             command: str) -> None:
    path = str(broken[case])
    argv = [command, path] + (["-p", str(prompts_file), "--hook", HOOK, "-o", str(tmp_path)] if command == "cache"
                              else [])
    assert_user_error(run(argv, capsys), needle, path)


def test_mismatched_checkpoints_of_a_run_name_both(tiny_dir: Callable[[str], Path], prompts_file: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from interp.testing import tiny_checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir("gpt2"), run_dir / "step_10")
    tiny_checkpoint("gpt2", run_dir / "step_20", num_hidden_layers=3)
    result = run(["cache", str(run_dir), "-p", str(prompts_file), "--hook", HOOK, "-o", str(tmp_path / "out")],
                 capsys)
    assert_user_error(result, str(run_dir / "step_10"), str(run_dir / "step_20"), "n_layers 2 but")
    assert not (tmp_path / "out").exists()  # refused before anything was computed


@pytest.mark.parametrize("argv, needle", [
    (["info"], "Missing argument"),
    (["info", "x", "--bogus"], "No such option: --bogus"),
    (["frobnicate"], "No such command"),
    (["cache", ".", "--hook", HOOK, "-o", "out"], "Missing option '--prompts'"),
])
def test_usage_errors_are_one_line_too(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert_user_error(run(argv, capsys), needle, "--help")


@pytest.mark.parametrize("options, needle", [
    (["--positions", "0,x"], "cannot read positions"),
    (["--positions", "0,40"], "do not fit prompt 0"),
    (["--hook", "blocks.9.hook_resid_post"], "no hook named"),
    (["--dtype", "float8"], "unknown dtype"),
])
def test_bad_cache_requests_exit_2(tiny_dir: Callable[[str], Path], prompts_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str], options: list[str], needle: str) -> None:
    argv = ["cache", str(tiny_dir("gpt2")), "-p", str(prompts_file), "--hook", HOOK, "-o", str(tmp_path), *options]
    assert_user_error(run(argv, capsys), needle, after_progress=True)


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in [["--debug", "info", str(tmp_path / "nope")], ["info", str(tmp_path / "nope"), "--debug"]]:
        with pytest.raises(InterpError, match="does not exist"):
            main(argv)
    assert_user_error(run(["info", str(tmp_path / "nope")], capsys), "does not exist")  # the flag does not stick
    done = subprocess.run([str(INTERP), "--debug", "info", str(tmp_path / "nope")], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert "interp.errors.InterpError" in done.stderr and "does not exist" in done.stderr


def test_info_reports_sizes_and_steps(tiny_dir: Callable[[str], Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Against the Hugging Face model itself: parameter count and config sizes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from interp.testing import tiny_checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir("llama"), run_dir / "checkpoint-300")
    tiny_checkpoint("llama", run_dir / "checkpoint-40", seed=1)
    wide = shutil.copytree(tiny_dir("llama"), run_dir / "checkpoint-7000")
    config = AutoConfig.from_pretrained(str(wide), local_files_only=True)
    config.intermediate_size = 96
    AutoModelForCausalLM.from_config(config).save_pretrained(wide)  # same tokenizer, wider MLP
    code, out, _ = run(["info", str(run_dir)], capsys)
    assert code == 0
    hf = AutoModelForCausalLM.from_pretrained(str(run_dir / "checkpoint-40"), local_files_only=True)
    cfg = hf.config
    fields = dict(line.split(None, 1) for line in out.splitlines()[:10])
    assert fields["architecture"] == "LlamaForCausalLM"
    assert fields["parameters"] == f"{sum(p.numel() for p in hf.parameters()):,}"
    assert fields["layers"] == str(cfg.num_hidden_layers)
    assert fields["heads"] == f"{cfg.num_attention_heads} ({cfg.num_key_value_heads} key/value heads)"
    assert fields["d_model"] == str(cfg.hidden_size) and fields["d_head"] == str(cfg.head_dim)
    assert fields["d_mlp"] == str(cfg.intermediate_size) and fields["vocab"] == str(cfg.vocab_size)
    lines = out.splitlines()
    assert ["native", "yes", "Llama", "spec"] in [line.split() for line in lines]  # the support section
    start = [line.split() for line in lines].index(["step", "sha256", "directory"])
    table = [line.split() for line in lines[start:] if line.startswith("  ")]
    sha = {n: weights_sha256(run_dir / f"checkpoint-{n}")[:12] for n in (40, 300, 7000)}
    assert table[1:] == [["40", sha[40], "checkpoint-40"], ["300", sha[300], "checkpoint-300"],
                         ["7000", sha[7000], "checkpoint-7000", "differs:", "d_mlp", "96"]]
    assert "identical weights" not in out
    assert "3 checkpoints (sizes above are from checkpoint-40)" in out


def test_info_on_one_checkpoint(tiny_dir: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["info", str(tiny_dir("gpt_neox"))], capsys)
    assert code == 0 and "GPTNeoXForCausalLM" in out
    sha = weights_sha256(tiny_dir("gpt_neox"))[:12]
    assert out.splitlines()[-1].split() == ["?", sha, str(tiny_dir("gpt_neox").resolve())]


def test_cache_command_writes_then_reuses(tiny_dir: Callable[[str], Path], prompts_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cache import open_cache

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir("gpt2"), run_dir / "step_5")
    argv = ["cache", str(run_dir), "-p", str(prompts_file), "--hook", HOOK, "--hook", "blocks.1.attn.hook_z",
            "-o", str(tmp_path / "out"), "--positions", "0,-1", "--dtype", "float16", "--batch-size", "2"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["written", "written"]
    handle = open_cache(tmp_path / "out" / "step_000005")
    assert handle.hooks == ("blocks.0.hook_resid_post", "blocks.1.attn.hook_z")
    meta = handle.meta(HOOK)
    assert meta["positions"] == [0, -1] and meta["dtype"] == "float16" and meta["step"] == 5
    assert meta["n_prompts"] == 3  # the blank line is not a prompt
    assert handle.load("blocks.1.attn.hook_z").shape == (3, 2, 4, 16)
    assert handle.load(HOOK).dtype == torch.float16
    code, out, _ = run(argv, capsys)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["reused", "reused"]


# --- packaging ------------------------------------------------------------------------------------------------------
def test_console_script_help() -> None:
    assert metadata.entry_points(group="console_scripts", name="interp")[0].value == "interp.cli:main"
    for argv in [[str(INTERP), "--help"], [str(INTERP)], [sys.executable, "-m", "interp.cli", "--help"]]:
        done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "info" in done.stdout and "cache" in done.stdout and "Usage" in done.stdout


def test_help_does_not_import_torch() -> None:
    """Commands import heavy libraries inside their functions, so `interp --help` stays instant."""
    code = "import sys, interp.cli; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.slow
def test_wheel_ships_every_module(tmp_path: Path) -> None:
    """A wheel built from the source holds every Python module (a package without __init__.py would be dropped)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    packages = ["interp", "probes", "patching"]
    for package in packages:
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("interp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(src)) for package in packages for p in (src / package).rglob("*.py")}
    assert expected - names == set()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "interp = interp.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_sweep_commands_list_the_executor_options_last() -> None:
    """Every Spec that inherits the executor options lists its positional first and the four options last."""
    import dataclasses

    from interp.analyses import analyses
    from interp.analyses.unit import Arg, ExecutorSpec, cli_form

    tail = [f.name for f in dataclasses.fields(ExecutorSpec)]
    sweeps = [u for u in analyses().values() if issubclass(u.spec, ExecutorSpec)]
    assert len(sweeps) == 5
    for unit in sweeps:
        names = [f.name for f in unit.fields()]
        assert names[-4:] == tail
        assert isinstance(cli_form(unit.spec, names[0])[1], Arg)
