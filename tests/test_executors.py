"""Sweeps on an executor (interp.executors): one process, `--workers N` local processes, or Ray tasks (a real local
Ray instance, `ray_local`). Whichever ran it, a sweep writes the same bytes; a worker killed mid-checkpoint is
replaced and its checkpoint run again; a refusal inside a worker reaches the user as one line."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
import torch

from clitools import assert_user_error, run
from interp.analyses.patch import Spec
from interp.analyses.patch import run as run_patch
from interp.cli import ray_alone
from interp.errors import InterpError
from interp.executors import Executor, is_ray_address
from interp.loading import verify_checkpoint
from interp.testing import tiny_checkpoint

LINES = [
    {"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"},
    {"clean": "my friend likes the moon", "corrupted": "my friend likes a moon", "answer": ".", "wrong": " the"},
]
STEPS = (100, 200, 300, 400, 500, 600)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run of six tiny checkpoints and a patching task."""
    root = tmp_path_factory.mktemp("run")
    for seed, step in enumerate(STEPS):
        tiny_checkpoint("llama", root / f"step_{step:06d}", seed=seed)
    task = root.parent / "task.jsonl"
    task.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return root, task


@pytest.fixture(scope="module")
def sequential(sweep_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The oracle: results.safetensors of the sweep in one process, on one torch thread as each worker is (a CPU's
    sums can differ in the last bits between thread counts)."""
    root, task = sweep_run
    out = tmp_path_factory.mktemp("sequential") / "out"
    run_patch(Spec(run=root, task=task, out=out, sites="resid_pre,z", device="cpu", cpus_per_task=1))
    return (out / "results.safetensors").read_bytes()


def _patch_argv(sweep_run: tuple[Path, Path], out: Path, *extra: str) -> list[Any]:
    root, task = sweep_run
    return ["patch", root, "--task", task, "--out", out, "--sites", "resid_pre,z", "--device", "cpu", *extra]


@pytest.mark.parametrize("where", [("--workers", "2"), ("--ray",)], ids=["workers", "ray"])
def test_every_executor_writes_the_bytes_of_the_sequential_sweep(where: tuple[str, ...], sweep_run, sequential,
                                                                  ray_local, tmp_path: Path, capsys) -> None:
    code, _, err = run(_patch_argv(sweep_run, tmp_path / "out", *where), capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "results.safetensors").read_bytes() == sequential
    assert len(list((tmp_path / "out" / "partial").glob("*.safetensors"))) == len(STEPS)


def _kill_once(find: Callable[[], list[psutil.Process]], killed: list[int], stop: threading.Event) -> None:
    """Kill the first process `find` returns (SIGKILL, as the OS's out-of-memory killer does)."""
    while not stop.is_set() and not killed:
        for proc in find():
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
            return
        time.sleep(0.01)


def _ray_task_workers() -> list[psutil.Process]:
    """Ray worker processes executing a task of interp's executor (Ray titles them `ray::_call`)."""
    return [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith("ray::_call")]


def _pool_workers_after(first_partial: Path) -> Callable[[], list[psutil.Process]]:
    """This process's spawned pool workers, once the sweep has finished a checkpoint (so they are mid-sweep)."""

    def find() -> list[psutil.Process]:
        if not any(first_partial.glob("*.safetensors")):
            return []
        return [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]

    return find


@pytest.mark.parametrize("where", [("--workers", "2"), ("--ray",)], ids=["workers", "ray"])
def test_a_worker_killed_mid_sweep_is_replaced_and_the_sweep_equals_the_sequential_one(
        where: tuple[str, ...], sweep_run, sequential, ray_local, tmp_path: Path, capsys) -> None:
    out, killed, stop = tmp_path / "out", [], threading.Event()
    find = _ray_task_workers if where == ("--ray",) else _pool_workers_after(out / "partial")
    killer = threading.Thread(target=_kill_once, args=(find, killed, stop))
    killer.start()
    try:
        code, _, err = run(_patch_argv(sweep_run, out, *where), capsys)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was found to kill"
    assert code == 0, err
    assert (out / "results.safetensors").read_bytes() == sequential
    if where != ("--ray",):
        assert "a worker process died" in err


def test_an_interrupted_sweep_resumes_on_another_executor(sweep_run, sequential, ray_local, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "out"
    assert run(_patch_argv(sweep_run, out, "--workers", "2"), capsys)[0] == 0
    first = sorted((out / "partial").glob("*.safetensors"))
    for partial in first[3:]:
        partial.unlink()  # as if stopped after three checkpoints
    (out / "results.safetensors").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in first[:3]}
    assert run(_patch_argv(sweep_run, out, "--ray"), capsys)[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in first[:3]} == stamps  # reused, not rewritten
    assert (out / "results.safetensors").read_bytes() == sequential


@pytest.mark.parametrize("executor", [Executor(workers=2), Executor(ray="local")], ids=["workers", "ray"])
def test_a_refusal_in_a_worker_is_the_same_error_on_the_driver(executor: Executor, ray_local, tmp_path: Path
                                                               ) -> None:
    assert sorted(executor.map(math.sqrt, [(4.0,), (9.0,)])) == [(0, 2.0), (1, 3.0)]
    with pytest.raises(InterpError, match="does not exist") as refused:
        list(executor.map(verify_checkpoint, [(tmp_path / "gone",)]))
    assert refused.value.fix and "typo" in refused.value.fix


@pytest.mark.parametrize("executor", [Executor(cpus_per_task=1), Executor(workers=2, cpus_per_task=2),
                                      Executor(ray="local", cpus_per_task=2)], ids=["here", "workers", "ray"])
def test_units_run_on_the_torch_threads_asked_for(executor: Executor, ray_local) -> None:
    before = torch.get_num_threads()
    assert list(executor.map(torch.get_num_threads, [()])) == [(0, int(executor.cpus_per_task))]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("argv", "message"), [
    (("--workers", "0"), "--workers"),
    (("--workers", "2", "--ray"), "not both"),
    (("--gpus-per-task", "1"), "--ray is not given"),
    (("--ray", "--gpus-per-task", "64", "--device", "auto"), "the Ray cluster has 0 GPUs"),
    (("--ray", "--gpus-per-task", "0.5"), "--device auto"),  # _patch_argv asks for --device cpu
])
def test_executor_options_that_cannot_work_are_refused_before_any_compute(argv, message, sweep_run, ray_local,
                                                                          tmp_path: Path, capsys) -> None:
    assert_user_error(run(_patch_argv(sweep_run, tmp_path / "out", *argv), capsys), message)
    assert not (tmp_path / "out" / "partial").exists()


def test_ray_alone_is_a_local_instance_and_an_address_is_kept() -> None:
    assert ray_alone(["patch", "--ray", "RUN"]) == ["patch", "--ray=local", "RUN"]
    assert ray_alone(["patch", "RUN", "--ray"]) == ["patch", "RUN", "--ray=local"]
    assert ray_alone(["patch", "RUN", "--ray", "--workers", "2"])[2] == "--ray=local"
    assert ray_alone(["patch", "RUN", "--ray", "10.0.0.1:6379"]) == ["patch", "RUN", "--ray", "10.0.0.1:6379"]
    assert [is_ray_address(a) for a in ("auto", "ray://head:10001", "head-node:6379", "runs/pythia", "-x")] == [
        True, True, True, False, False]


def test_induction_scores_on_workers_equal_the_sequential_ones(sweep_run, ray_local, tmp_path: Path, capsys) -> None:
    root, _ = sweep_run
    argv = ["induction", "scores", root, "--seq-len", "6", "--batch", "2", "--text", sweep_run[1]]
    for name, where in (("one", ()), ("workers", ("--workers", "2")), ("ray", ("--ray",))):
        code, _, err = run([*argv, "--out", tmp_path / name, *where], capsys)
        assert code == 0, err
    one = (tmp_path / "one" / "results.safetensors").read_bytes()
    assert (tmp_path / "workers" / "results.safetensors").read_bytes() == one
    assert (tmp_path / "ray" / "results.safetensors").read_bytes() == one


def test_a_cached_run_on_workers_holds_the_sequential_activations(sweep_run, ray_local, tmp_path: Path,
                                                                   capsys) -> None:
    from interp.cache import load_activations

    root, _ = sweep_run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sees the ball\nmy friend likes the moon\n")
    hook = "blocks.1.hook_resid_post"
    for name, where in (("one", ()), ("workers", ("--workers", "2")), ("ray", ("--ray",))):
        code, _, err = run(["cache", root, "--prompts", prompts, "--hook", hook, "--out", tmp_path / name, *where],
                           capsys)
        assert code == 0, err
    for step in STEPS:
        one = load_activations(tmp_path / "one" / f"step_{step:06d}", hook)
        assert one.abs().sum() > 0
        for name in ("workers", "ray"):
            assert load_activations(tmp_path / name / f"step_{step:06d}", hook).equal(one)


def test_two_gradient_conditions_on_workers_equal_the_sequential_comparison(sweep_run, tmp_path: Path,
                                                                            capsys) -> None:
    root, _ = sweep_run
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {w}", "response": f"the {w} sees the ball"}) + "\n"
                            for w in ("cat", "dog", "bird")))
    argv = ["gradients", root / "step_000100", "--data", data, "--model-b", root / "step_000200", "--template",
            "plain", "--batch-size", "2"]
    for name, where in (("one", ()), ("workers", ("--workers", "2"))):
        code, _, err = run([*argv, "--out", tmp_path / name, *where], capsys)
        assert code == 0, err
    assert (tmp_path / "workers" / "results.safetensors").read_bytes() == (
        tmp_path / "one" / "results.safetensors").read_bytes()
