"""Where a sweep's independent units run: one after another in this process (the default), on `--workers N` local
processes, or as Ray tasks (`--ray` starts a local instance, `--ray ADDRESS` or `RAY_ADDRESS` joins a cluster).

A unit is one checkpoint (or model pair, or condition) of a sweep: a top-level function and its arguments, so that
any executor can ship it. Workers only compute and return their tensors; the driver alone writes each finished unit's
partial file, atomically, so two workers never write the same file, an interrupted sweep resumes from the partials
whichever executor ran it, and the results are the same bytes whichever did. A worker that dies mid-unit (killed,
out of memory) is replaced and its unit run again, up to `RETRIES` times.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from interp.errors import InterpError, warn

RETRIES = 3  # runs of a unit whose worker died, after the first
LOCAL = "local"  # `--ray` alone: start a Ray instance on this machine
KEY = "key"  # partial files' metadata entry: what the unit's numbers depend on

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Executor:
    """How a sweep's units run: `workers` local processes, or Ray tasks at `ray` (LOCAL or an address), each with
    `cpus_per_task` cores and `gpus_per_task` GPUs; one worker and no Ray is this process.

    A CPU's results can differ in the last bits between torch thread counts (its matrix products split sums by
    thread), never between executors at one thread count: `cpus_per_task=1` here gives the bytes workers give."""

    workers: int = 1
    ray: str | None = None
    gpus_per_task: float = 0.0
    cpus_per_task: float | None = None  # None: 1 per worker or task; torch's own thread count in this process

    @property
    def kind(self) -> str:
        """sequential, processes or ray."""
        return "ray" if self.ray is not None else "processes" if self.workers > 1 else "sequential"

    def checked(self) -> "Executor":
        """These options, refused in one line when they cannot work (before anything is loaded)."""
        from interp.options import check_range

        check_range("--workers", self.workers, low=1)
        check_range("--gpus-per-task", self.gpus_per_task, low=0)
        check_range("--cpus-per-task", self.cpus_per_task, low=0.01)
        if self.ray is not None and self.workers > 1:
            raise InterpError("--workers and --ray both choose where checkpoints run",
                              fix="pass --ray (Ray places the tasks) or --workers N, not both")
        if self.gpus_per_task and self.ray is None:
            raise InterpError("--gpus-per-task places Ray tasks on GPUs, but --ray is not given",
                              fix="add --ray (or --ray ADDRESS), or drop --gpus-per-task")
        if self.ray is not None:
            _import_ray()
        return self

    def device(self, requested: str) -> str | None:
        """The device a worker runs on when Ray gives each task its GPUs ('cuda': Ray sets CUDA_VISIBLE_DEVICES),
        else None (the sweep's own device, resolved on this machine)."""
        if not self.gpus_per_task:
            return None
        if requested not in ("auto", "cuda"):
            raise InterpError(f"--device {requested} with --gpus-per-task: Ray gives each task its own GPU",
                              fix="pass --device auto (or cuda) with --gpus-per-task")
        return "cuda"

    @property
    def threads(self) -> int:
        """torch threads of each worker or task."""
        return max(1, int(self.cpus_per_task or 1))

    @contextmanager
    def opened(self) -> Iterator[None]:
        """Ready to run: for Ray, connected (started here if need be, shut down on leaving) and able to place the
        tasks, refused in one line if not; for the others, nothing to do."""
        if self.ray is None:
            yield
            return
        ray = _import_ray()
        started = connect(self.ray)
        try:
            check_resources(ray, self)
            yield
        finally:
            if started:
                ray.shutdown()

    def results(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], desc: str, unit: str = "ckpt"
                ) -> list[Any]:
        """`fn(*call)` for every call, in order, with one progress bar on this process as they finish (for units
        that keep their own files; `run_units` keeps a sweep's partials)."""
        from interp.progress import progress

        with self.opened():
            done = dict(progress(self.map(fn, calls), desc=desc, unit=unit, total=len(calls),
                                 disable=len(calls) < 2))
        return [done[i] for i in range(len(calls))]

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        """(index, `fn(*calls[index])`) for every call, in the order they finish; a unit's `InterpError` is raised
        here as itself."""
        if not calls:
            return iter(())
        if self.kind == "sequential":
            return _here(fn, calls, self.cpus_per_task)
        jobs = [(fn, args, self.threads) for args in calls]
        return _on_ray(jobs, self) if self.kind == "ray" else _on_processes(jobs, self.workers)


SEQUENTIAL = Executor()


@dataclass(frozen=True)
class Unit:
    """One independent piece of a sweep: `fn(*args)` gives its tensors, kept as `name`.safetensors while `key`
    (what its numbers depend on) is unchanged."""

    name: str
    key: str
    fn: Callable[..., dict[str, Tensor]]
    args: tuple[Any, ...]


def run_units(units: Sequence[Unit], partial_dir: Path, executor: Executor, desc: str, unit: str = "ckpt",
              claim: Callable[[], None] | None = None) -> list[dict[str, Tensor]]:
    """Every unit's tensors, in order: read from `partial_dir` where a finished unit's key matches, computed by
    `executor` otherwise and saved there atomically by this process as each finishes (one progress bar). `claim`
    runs once before the first partial is written (a sweep refused in its first unit leaves nothing behind)."""
    from interp.progress import progress
    from interp.results import atomic_save_tensors

    done = {i: found for i, u in enumerate(units) if (found := read_partial(partial_dir / f"{u.name}.safetensors",
                                                                              u.key)) is not None}
    todo = [i for i in range(len(units)) if i not in done]
    unclaimed = claim is not None
    finished = executor.map(_unit_tensors, [(units[i].fn, units[i].args) for i in todo])
    for j, tensors in progress(finished, desc=desc, unit=unit, total=len(units), initial=len(done)):
        u = units[todo[j]]
        if unclaimed:
            claim()
            unclaimed = False
        atomic_save_tensors(partial_dir / f"{u.name}.safetensors", tensors, {KEY: u.key})
        done[todo[j]] = tensors
    return [done[i] for i in range(len(units))]


def read_partial(path: Path, key: str) -> dict[str, Tensor] | None:
    """A finished unit's tensors when made from exactly these inputs; None (compute again) otherwise."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get(KEY) != key:
                return None
            return {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception:  # a damaged partial is computed again, not trusted (safetensors raises several types)
        return None


def _unit_tensors(fn: Callable[..., dict[str, Tensor]], args: tuple[Any, ...]) -> dict[str, Tensor]:
    """`fn(*args)` with the tensors on the CPU (they travel back to the driver)."""
    return {name: value.detach().cpu() for name, value in fn(*args).items()}


def _here(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], cpus: float | None
          ) -> Iterator[tuple[int, Any]]:
    """Run the calls in this process, on `cpus` torch threads if given (torch's own count restored after)."""
    import torch

    before = torch.get_num_threads()
    if cpus is not None:
        torch.set_num_threads(max(1, int(cpus)))
    try:
        for i, args in enumerate(calls):
            yield i, fn(*args)
    finally:
        torch.set_num_threads(before)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], threads: int) -> tuple[str, Any]:
    """In a worker: ('ok', fn(*args)) on `threads` torch threads with no progress bars of its own, or ('refused',
    (message, fix)) for an `InterpError` (re-raised on the driver as itself)."""
    import torch

    from interp.progress import QUIET

    os.environ[QUIET] = "1"
    torch.set_num_threads(threads)
    try:
        return "ok", fn(*args)
    except InterpError as err:
        return "refused", (err.message, err.fix)


def _unwrap(outcome: tuple[str, Any]) -> Any:
    """A worker's result, or its `InterpError` raised here."""
    status, value = outcome
    if status == "refused":
        raise InterpError(*value)
    return value


def _on_processes(jobs: list[tuple[Any, ...]], workers: int) -> Iterator[tuple[int, Any]]:
    """Run jobs on `workers` spawned processes; when one dies the pool is replaced and the unfinished jobs run
    again, up to RETRIES times."""
    import multiprocessing

    pending = dict(enumerate(jobs))
    for attempt in range(RETRIES + 1):
        pool = ProcessPoolExecutor(min(workers, len(pending)), mp_context=multiprocessing.get_context("spawn"))
        futures: dict[Future[Any], int] = {pool.submit(_call, *job): i for i, job in pending.items()}
        try:
            broken = yield from _drain(futures, pending)
        finally:  # jobs not started are dropped; running ones finish first (a stop mid-sweep leaves no orphans)
            pool.shutdown(wait=True, cancel_futures=True)
        if not broken:
            return
        if attempt < RETRIES:
            warn(f"a worker process died; running its {len(pending)} unfinished checkpoint(s) again")
    raise InterpError(f"worker processes died {RETRIES + 1} times running this sweep",
                      fix="check free memory (the OS kills a worker that runs out); use fewer --workers")


def _drain(futures: dict[Future[Any], int], pending: dict[int, Any]) -> Iterator[tuple[int, Any]]:
    """Yield each finished future's (index, result), removing it from `pending`; returns whether the pool broke."""
    broken = False
    waiting = set(futures)
    while waiting:
        ready, waiting = wait(waiting, return_when=FIRST_COMPLETED)
        for future in ready:
            try:
                outcome = future.result()
            except BrokenProcessPool:
                broken = True
                continue
            index = futures[future]
            del pending[index]
            yield index, _unwrap(outcome)
    return broken


def is_ray_address(text: str) -> bool:
    """Whether `text` reads as a Ray address (`auto`, `local`, `ray://host:port`, `host:port`), not a path or an
    option."""
    return bool(re.fullmatch(r"auto|local|ray://\S+|[\w.-]+:\d+", text))


def _import_ray() -> Any:
    """The ray module, or an error saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise InterpError("--ray needs Ray, which is not installed", fix="pip install 'interp[ray]'") from err
    return ray


def connect(address: str) -> bool:
    """Join the Ray instance this process already has, the cluster at `address` (or RAY_ADDRESS with LOCAL), or
    start one on this machine on the loopback (dashboard and usage statistics off). True when this call started or
    joined it (the caller then shuts it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    options: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
    try:
        if address != LOCAL or os.environ.get("RAY_ADDRESS"):
            ray.init(address=None if address == LOCAL else address, **options)
        else:
            ray.init(_node_ip_address="127.0.0.1", **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise InterpError(f"cannot reach a Ray cluster at {address if address != LOCAL else os.environ['RAY_ADDRESS']}"
                          f" ({' '.join(str(err).split())[:200]})",
                          fix="start it (`ray start --head`) or pass its address, e.g. --ray 10.0.0.1:6379") from err
    return True


def check_resources(ray: Any, executor: Executor) -> None:
    """Refuse tasks the cluster can never place (they would wait forever): more GPUs or cores than it has."""
    have = ray.cluster_resources()
    for name, need, flag in (("GPU", executor.gpus_per_task, "--gpus-per-task"),
                             ("CPU", executor.cpus_per_task or 1, "--cpus-per-task")):
        if need > have.get(name, 0):
            raise InterpError(f"{flag} {need:g}, but the Ray cluster has {have.get(name, 0):g} {name}s in all",
                              fix=f"lower {flag}, or add nodes with {name}s to the cluster")


def _on_ray(jobs: list[tuple[Any, ...]], executor: Executor) -> Iterator[tuple[int, Any]]:
    """Run jobs as Ray tasks (retried up to RETRIES times when their worker dies); unfinished tasks are cancelled
    if the sweep stops early."""
    ray = _import_ray()
    refs: dict[Any, int] = {}
    with executor.opened():
        task = ray.remote(_call).options(num_cpus=executor.cpus_per_task or 1, num_gpus=executor.gpus_per_task,
                                         max_retries=RETRIES, retry_exceptions=False)
        refs = {task.remote(*job): i for i, job in enumerate(jobs)}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                index = refs.pop(ready[0])
                yield index, _unwrap(_ray_result(ray, ready[0]))
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)


def _ray_result(ray: Any, ref: Any) -> Any:
    """A finished task's outcome; a worker that died on every try is an `InterpError`."""
    try:
        return ray.get(ref)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as err:
        raise InterpError(f"a Ray worker died {RETRIES + 1} times running one checkpoint ({type(err).__name__})",
                          fix="check the workers' memory (per task: --cpus-per-task, --gpus-per-task) and the "
                              "cluster's logs") from err
