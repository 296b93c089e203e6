"""The region loop shared by the `reconstruct` and `batch` flows.

Both flows hand over the stores to fill (one `StoreJob` each); this groups their pending regions
into coarse work units (tasks/core/work_units.py), submits one `reconstruct-regions` task per
unit, keeps one progress artifact (region tasks in this process move it within their regions;
finished units move it in any case), and collects failures per dataset instead of stopping at
the first, so a failing dataset never stops the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run

from inversa.data.store import axis_words
from inversa.tasks.core.interrupts import clear_stop, request_stop
from inversa.tasks.core.recipe import RecipeBase
from inversa.tasks.core.work_units import WorkUnit, work_units
from inversa.tasks.gpu import gpu_annotations
from inversa.tasks.pipeline import RegionFailed, reconstruct_regions_task
from inversa.tasks.report import ProgressArtifact, live_progress

DEFAULT_WORKERS = 2


@dataclass
class StoreJob:
    """One store to fill: its pending regions and what a region task needs."""

    dataset: str
    store_path: str
    recipe: RecipeBase
    pending: list[int]
    regions: list[tuple[int, int]]  # (start, stop) of every region of the store, for task names
    tags: frozenset[str] = frozenset()
    axis: str = "slice"  # the store's region axis (data.store.LEADING_DIMS), for names and messages
    prepare: str | None = None  # the kind's one-off step before the regions (Plan.prepare), if any


@dataclass
class RegionFailure:
    """A unit stopped at region `index`; `not_reached` are its regions after that one."""

    index: int
    error: BaseException
    not_reached: tuple[int, ...] = ()


@dataclass
class StoreOutcome:
    dataset: str
    failures: list[RegionFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def not_reconstructed(self) -> int:
        return sum(1 + len(f.not_reached) for f in self.failures)

    def message(self, job: StoreJob) -> str:
        """One line for the user: how much is missing, the first failing region and why, what to do."""
        first = min(self.failures, key=lambda f: f.index)
        cause = first.error.__cause__ if isinstance(first.error, RegionFailed) and first.error.__cause__ else first.error
        start, stop = job.regions[first.index]
        one, many = axis_words(job.axis)
        where = f"{one} {start}" if stop - start == 1 else f"{many} {start}-{stop - 1}"
        return (
            f"{self.not_reconstructed} of {len(job.regions)} regions of {self.dataset} failed or were not reached "
            f"(first: region {first.index}, {where}: {type(cause).__name__}: {cause}); "
            f"the other regions are stored in {job.store_path}, rerun to resume"
        )


def worker_count() -> int:
    """Workers of the running flow's task runner: threads, or the threads of a Dask cluster."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    threads = getattr(runner, "_max_workers", None)
    if isinstance(threads, int) and 0 < threads < 4096:
        return threads
    if type(runner).__module__.startswith("prefect_dask") or hasattr(runner, "_client"):
        try:  # `client` connects on first use (before the first submit `_client` is still None)
            threads = sum(runner.client.nthreads().values())
            if threads > 0:  # an adaptive cluster may have no workers yet: fall back below
                return threads
        except Exception:  # noqa: BLE001 - a cluster that cannot say falls back to the default
            pass
    return max(1, min(os.cpu_count() or DEFAULT_WORKERS, 64))


def unit_name(job: StoreJob, unit: WorkUnit) -> str:
    """A task run name that says which slices (time steps, grid rows) it covers, as the UI shows it."""
    first, last = job.regions[unit.regions[0]][0], job.regions[unit.regions[-1]][1] - 1
    contiguous = list(unit.regions) == list(range(unit.regions[0], unit.regions[-1] + 1))
    one, many = axis_words(job.axis)
    if first == last:
        return f"{job.dataset} {one} {first}"
    if contiguous:
        return f"{job.dataset} {many} {first}-{last}"
    return f"{job.dataset} {len(unit.regions)} regions in {many} {first}-{last}"


def reconstruct_stores(
    jobs: list[StoreJob],
    progress_key: str,
    description: str,
    hook: Callable[[float, int], None] | None = None,
    workers: int | None = None,
    max_units: int | None = None,
) -> dict[str, StoreOutcome]:
    """Reconstruct the pending regions of every job; returns each dataset's outcome.

    The progress artifact (and `hook(done, total)`, for a terminal bar) counts regions of all
    jobs, those finished before this call included; it moves within regions while their tasks
    run in this process, and as each unit finishes in any case.
    """
    logger = get_run_logger()
    by_dataset = {job.dataset: job for job in jobs}
    if len(by_dataset) != len(jobs):
        raise ValueError(f"reconstruct_stores: dataset names must be unique, got {[j.dataset for j in jobs]}")
    workers = workers or worker_count()
    units = work_units([(job.dataset, i) for job in jobs for i in job.pending], workers, max_units=max_units)
    total = sum(len(job.regions) for job in jobs)
    done = total - sum(len(job.pending) for job in jobs)
    if units:
        logger.info("%d pending regions of %d dataset(s) in %d task runs for %d worker(s)",
                    total - done, len(jobs), len(units), workers)
    bar = ProgressArtifact(progress_key, total, done, description=description, hook=hook)
    if hook:
        hook(done, total)
    outcomes = {job.dataset: StoreOutcome(job.dataset) for job in jobs}

    clear_stop()
    try:
        with live_progress(flow_run.id, bar):
            futures = {}
            for unit in units:
                job = by_dataset[unit.dataset]
                task = reconstruct_regions_task.with_options(task_run_name=unit_name(job, unit), tags=set(job.tags))
                with gpu_annotations(job.recipe):  # on Dask, GPU units go to workers with a free GPU
                    futures[task.submit(job.store_path, list(unit.regions), job.recipe)] = unit
            for future in as_completed(list(futures)):
                unit = futures[future]
                job = by_dataset[unit.dataset]
                try:
                    future.result()
                    finished = len(unit.regions)
                except Exception as exc:  # noqa: BLE001 - collect them all; the caller decides
                    failure = _failure(unit, exc)
                    outcomes[unit.dataset].failures.append(failure)
                    finished = unit.regions.index(failure.index)
                    logger.error("%s: region %d failed: %s", unit.dataset, failure.index, exc)
                for index in unit.regions[:finished]:  # a task in another process could not say so itself
                    bar.complete((job.store_path, index))
    except BaseException as exc:
        if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: the threads stop within a step, not a unit
            request_stop()
        raise
    finally:
        bar.close()
    return outcomes


def _failure(unit: WorkUnit, exc: BaseException) -> RegionFailure:
    """Which region of the unit failed: named by the task, else (a crashed task) its first."""
    index = exc.index if isinstance(exc, RegionFailed) and exc.index in unit.regions else unit.regions[0]
    position = unit.regions.index(index)
    return RegionFailure(index=index, error=exc, not_reached=unit.regions[position + 1:])
