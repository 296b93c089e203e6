"""GPU work on shared machines: a Dask resource to place it, a Prefect slot to meter it.

Two independent guards, because they see different things:

- `gpu_annotations(recipe)` wraps task *submission*. On a Dask runner it asks the scheduler for
  one unit of the worker resource `GPU`, so GPU tasks go only to workers that declare one
  (deploy/dask/slurm.py and dask_cuda.py start workers with `--resources GPU=1`; the local
  cluster of `--workers N` declares one per worker when CUDA is present) and a worker never
  runs two at once. Outside Dask it does nothing.
- `gpu_slot(recipe)` wraps the GPU work *inside* the task. It holds one slot of the Prefect
  global concurrency limit `inversa-gpu`, which bounds GPU tasks across every flow run, runner
  and machine that talks to the same Prefect server. Set it to the number of GPUs:
  `prefect gcl create inversa-gpu --limit 4` (change it later with `prefect gcl update`).
  Without that limit (a fresh server, ephemeral mode) the work runs unthrottled: Prefect answers
  that the limit does not exist and the slot is skipped, with one log line per process.

CPU recipes touch neither Dask nor the Prefect API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError, ObjectNotFound

from inversa.tasks.core.recipe import RecipeBase
from inversa.tasks.kinds import kind_of

GPU_LIMIT = "inversa-gpu"  # the Prefect global concurrency limit GPU tasks take a slot of
GPU_RESOURCE = "GPU"  # the Dask worker resource GPU tasks request one unit of

_logger = logging.getLogger(__name__)
_limits_seen: set[tuple[str, str]] = set()  # (api url, limit) found to exist: not asked again
_missing_reported: set[tuple[str, str]] = set()


def gpu_annotations(recipe: RecipeBase) -> AbstractContextManager:
    """Submit the tasks created inside to Dask workers with a free `GPU` resource.

    A no-op unless the recipe runs on a GPU and the current flow's task runner is Dask. When
    the cluster has workers and none declares a GPU, the request could never be met and the
    tasks would wait forever: then the tasks are submitted without it, with a warning.
    """
    if not kind_of(recipe).uses_gpu(recipe):
        return nullcontext()
    runner = _current_dask_runner()
    if runner is None:
        return nullcontext()
    if not _cluster_declares_gpus(runner):
        _run_logger().warning(
            "recipe %r runs on a GPU but no Dask worker declares a %r resource; submitting without it "
            "(start workers with --resources %s=1 to place GPU tasks)",
            recipe.name, GPU_RESOURCE, GPU_RESOURCE,
        )
        return nullcontext()
    import dask  # only a Dask runner gets here; thread-runner flows never import it

    return dask.annotate(resources={GPU_RESOURCE: 1})


def _current_dask_runner():
    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    if runner is None:
        return None
    # By name, so thread-runner flows never import distributed.
    is_dask = any(cls.__module__.startswith("prefect_dask") for cls in type(runner).__mro__)
    return runner if is_dask else None


def _cluster_declares_gpus(runner) -> bool:
    workers = runner.client.scheduler_info(n_workers=-1).get("workers", {})
    if not workers:
        return True  # an adaptive cluster with no workers yet: its workers come from a spec that declares them
    return any(float((w.get("resources") or {}).get(GPU_RESOURCE, 0)) >= 1 for w in workers.values())


@contextmanager
def gpu_slot(recipe: RecipeBase, limit: str = GPU_LIMIT, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold one slot of the Prefect concurrency limit `limit` while the GPU work runs.

    Waits for a free slot (forever, or `timeout_seconds` then `TimeoutError`). The slot is a
    lease that Prefect renews while held, so a worker killed mid-task frees it when the lease
    runs out instead of leaking it.
    """
    if not kind_of(recipe).uses_gpu(recipe) or not _limit_exists(limit):
        yield
        return
    with concurrency(limit, occupy=1, timeout_seconds=timeout_seconds, strict=False):
        yield


def _limit_exists(limit: str) -> bool:
    """Ask the API once per process whether the limit exists (again each time while it does not)."""
    with get_client(sync_client=True) as client:
        key = (str(client.api_url), limit)
        if key in _limits_seen:
            return True
        try:
            client.read_global_concurrency_limit_by_name(limit)
        except ObjectNotFound:
            if key not in _missing_reported:
                _missing_reported.add(key)
                _run_logger().info(
                    "no Prefect concurrency limit %r: GPU tasks run without a slot "
                    "(set one per GPU: prefect gcl create %s --limit N)", limit, limit,
                )
            return False
    _limits_seen.add(key)
    return True


def _run_logger():
    try:
        return get_run_logger()
    except MissingContextError:
        return _logger
