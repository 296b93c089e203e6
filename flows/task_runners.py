"""Where a run's tasks execute: a thread pool, a local Dask cluster, or a Dask cluster elsewhere.

Where a run executes never changes its numbers (every region seeds its own generators), so the
choice lives apart from what the recipe computes: in the recipe's optional `runner` block, which
the recipe digest leaves out, and on the command line, which wins over the recipe.

Two things a plain `prefect_dask.DaskTaskRunner` does not do for us:

- Prefect API for the workers. In ephemeral mode (no `PREFECT_API_URL`) each Dask worker
  process that runs a task would start its own temporary Prefect server (seconds each, one
  more process per worker). `WorkerApiDaskTaskRunner` starts the flow process's temporary server
  up front and hands its address to the workers through the settings Prefect serialises with
  every task, so logs, task states and artifacts from all workers land in one place
  (flows/dask_runner.py).
- Threads per worker. Dask starts worker processes with `OMP_NUM_THREADS=1`; torch then uses
  one intra-op thread. `threads_per_worker` sets the OMP/MKL/OpenBLAS thread counts of the
  worker processes inversa starts, and Dask runs one task at a time in each of them, so
  `workers x threads_per_worker` should match the cores.

A cluster spec (`cluster`) is a Python function that returns a `distributed` cluster object:
`make_cluster(workers: int | None, threads_per_worker: int) -> Cluster`. Give the name of a
shipped spec (`local`, `slurm`, `dask-cuda`: deploy/dask/NAME.py), a path to a `.py` file
(`path/spec.py` or `path/spec.py:function`), or an importable `package.module:function`.
The runner enters the cluster as a context manager and closes it when the flow ends.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from inversa.resources import dask_specs_dir
from inversa.tasks.core.runner import DEFAULT_THREADS, RunnerError, RunnerOptions

DEPLOY_DASK_DIR = dask_specs_dir()
SPEC_FUNCTION = "make_cluster"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def make_task_runner(options: RunnerOptions):
    """The Prefect task runner the options describe (nothing starts until the flow enters it)."""
    if options.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=options.workers or DEFAULT_THREADS)
    from inversa.flows.dask_runner import WorkerApiDaskTaskRunner  # distributed loads only when asked for

    if options.address:
        return WorkerApiDaskTaskRunner(address=options.address)
    threads = options.threads_per_worker or 1
    if options.cluster:
        factory = load_cluster_spec(options.cluster)
        return WorkerApiDaskTaskRunner(
            cluster_class=factory, cluster_kwargs={"workers": options.workers, "threads_per_worker": threads}
        )
    if visible_gpus():
        return WorkerApiDaskTaskRunner(cluster_class=local_gpu_cluster,
                                       cluster_kwargs={"workers": options.workers, "threads_per_worker": threads})
    return WorkerApiDaskTaskRunner(cluster_kwargs=local_cluster_kwargs(options.workers, threads))


def local_cluster_kwargs(workers: int | None, threads_per_worker: int) -> dict[str, Any]:
    """A `distributed.LocalCluster` of worker processes that each run one task with N torch threads.

    Processes, not threads: torch releases the GIL in its kernels but the samplers' Python
    loops do not. On a machine with GPUs `make_task_runner` uses `local_gpu_cluster` instead, so
    each GPU has one worker of its own.
    """
    n = workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
    return {
        "n_workers": n,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",  # a free port (the log prints the link): runs side by side never clash
        "env": {name: str(threads_per_worker) for name in THREAD_ENV},
    }


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (none without CUDA)."""
    if not _cuda_available():
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def local_worker_specs(workers: int, threads_per_worker: int, gpus: list[str]) -> dict[str, dict[str, Any]]:
    """One worker process per entry; worker ``i < len(gpus)`` owns GPU ``gpus[i]`` alone.

    Each GPU worker sees only its own device (CUDA_VISIBLE_DEVICES, so inside it the GPU is
    cuda:0) and declares one `GPU` resource, so GPU regions go one at a time to each GPU
    (tasks/gpu.py). Workers beyond the GPU count see no GPU and declare none: they take CPU work.
    Without this every worker of `--workers N` would run on cuda:0 of a multi-GPU host.
    """
    threads = {name: str(threads_per_worker) for name in THREAD_ENV}
    specs = {}
    for i in range(workers):
        own = gpus[i] if i < len(gpus) else ""
        options: dict[str, Any] = {"nthreads": 1, "env": {**threads, "CUDA_VISIBLE_DEVICES": own}}
        if own:
            options["resources"] = {"GPU": 1}
        specs[f"worker-{i}"] = {"options": options}
    return specs


def local_gpu_cluster(workers: int | None = None, threads_per_worker: int = 1, gpus: list[str] | None = None):
    """A local cluster whose workers each own one GPU (and CPU-only workers past the GPU count)."""
    from distributed import Nanny, Scheduler, SpecCluster

    gpus = visible_gpus() if gpus is None else gpus
    n = workers or max(len(gpus), 1)
    specs = local_worker_specs(n, threads_per_worker, gpus)
    for spec in specs.values():
        spec["cls"] = Nanny
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                       name="inversa-local")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def load_cluster_spec(spec: str) -> Callable[..., Any]:
    """The `make_cluster` function a cluster spec names (see the module docstring)."""
    text = spec.strip()
    shipped = DEPLOY_DASK_DIR / f"{text.replace('-', '_')}.py"
    if "/" not in text and ":" not in text and not text.endswith(".py"):
        if not shipped.is_file():
            names = ", ".join(sorted(p.stem.replace("_", "-") for p in DEPLOY_DASK_DIR.glob("*.py") if p.stem != "__init__"))
            raise RunnerError(f"cluster spec {spec!r}: not a shipped spec ({names}), a .py file or module:function")
        return _function_from_file(shipped, SPEC_FUNCTION, spec)
    target, _, function = text.rpartition(":") if ":" in text else (text, "", SPEC_FUNCTION)
    function = function or SPEC_FUNCTION
    if target.endswith(".py") or "/" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise RunnerError(f"cluster spec {spec!r}: no such file {path}")
        return _function_from_file(path, function, spec)
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        raise RunnerError(f"cluster spec {spec!r}: cannot import {target!r}: {exc}") from None
    return _spec_function(module, function, spec)


def _function_from_file(path: Path, function: str, spec: str) -> Callable[..., Any]:
    # Not registered in sys.modules: cloudpickle then ships the function by value to workers
    # (Prefect pickles the flow, runner included, with every task), where the file may not exist.
    module_spec = importlib.util.spec_from_file_location(f"inversa_cluster_spec_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise RunnerError(f"cluster spec {spec!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except ImportError as exc:
        raise RunnerError(f"cluster spec {spec!r} ({path}): {exc}") from None
    return _spec_function(module, function, spec)


def _spec_function(module: Any, function: str, spec: str) -> Callable[..., Any]:
    fn = getattr(module, function, None)
    if not callable(fn):
        raise RunnerError(
            f"cluster spec {spec!r}: expected a function {function}(workers, threads_per_worker) returning a cluster"
        )
    return fn


class LocalCallback:
    """A callback that acts in this process only, and pickles as a no-op.

    Prefect ships the flow function, with the module globals it reads, to every Dask worker
    with each task. A terminal progress callback (a `progress_hook`) holds locks and the
    terminal and means nothing there; wrapped in this, it travels as a harmless stand-in.
    """

    def __init__(self, callback: Callable[..., Any]):
        self.callback = callback

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.callback(*args, **kwargs)

    def __reduce__(self):
        return (LocalCallback, (_ignore,))


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose where tasks run; any command that runs flows can take them."""
    group = parser.add_argument_group("where tasks run (default: the recipe's runner block, else 2 threads)")
    group.add_argument("--threads", type=_positive, metavar="N", help="run N tasks at once in threads")
    group.add_argument("--workers", type=_positive, metavar="N",
                       help="start a local Dask cluster of N worker processes (or scale --dask-cluster to N)")
    group.add_argument("--threads-per-worker", type=_positive, metavar="N",
                       help="torch threads in each Dask worker process inversa starts (default 1)")
    group.add_argument("--dask-address", metavar="ADDR", help="use a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    group.add_argument("--dask-cluster", metavar="SPEC",
                       help="start a cluster from a spec: local, slurm, dask-cuda (deploy/dask/), FILE.py[:func] "
                            "or module:func")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def runner_from(args: argparse.Namespace, recipe_runner: dict[str, Any] | None) -> RunnerOptions:
    """The command line over the recipe's `runner` block.

    Choosing a kind on the command line (`--threads`, or `--workers`/`--dask-cluster`, or
    `--dask-address`) replaces the recipe's choice; only what the recipe says for the same kind
    of cluster carries over (its workers, threads per worker, cluster spec). `--threads-per-worker`
    alone adjusts the recipe's Dask cluster.
    """
    base = RunnerOptions(**(recipe_runner or {}))
    threads = getattr(args, "threads", None)
    workers = getattr(args, "workers", None)
    per_worker = getattr(args, "threads_per_worker", None)
    address = getattr(args, "dask_address", None)
    cluster = getattr(args, "dask_cluster", None)
    started = base.kind == "dask" and base.address is None  # a recipe cluster inversa starts
    if threads is not None:
        clash = [f for f, v in (("--workers", workers), ("--dask-address", address), ("--dask-cluster", cluster),
                                ("--threads-per-worker", per_worker)) if v is not None]
        if clash:
            raise RunnerError(f"--threads runs tasks in threads; it cannot be combined with {clash[0]} (Dask)")
        return RunnerOptions(kind="threads", workers=threads)
    if address is not None:
        clash = [f for f, v in (("--workers", workers), ("--dask-cluster", cluster),
                                ("--threads-per-worker", per_worker)) if v is not None]
        if clash:
            raise RunnerError(f"--dask-address uses a running cluster's workers; it cannot be combined with {clash[0]}")
        return RunnerOptions(kind="dask", address=address)
    if workers is not None or cluster is not None:
        return RunnerOptions(
            kind="dask",
            workers=workers if workers is not None else (base.workers if started else None),
            threads_per_worker=per_worker if per_worker is not None else (base.threads_per_worker if started else None),
            cluster=cluster if cluster is not None else (base.cluster if started else None),
        )
    if per_worker is not None:
        if not started:
            raise RunnerError(
                "--threads-per-worker applies to a Dask cluster inversa starts; add --workers N or --dask-cluster SPEC"
            )
        return RunnerOptions(**{**asdict(base), "threads_per_worker": per_worker})
    return base
