"""The Prefect tasks of a reconstruction run: thin wrappers around the problem kind's own code.

Every task takes the typed recipe and passes paths, indices and digests, never arrays, and
reaches the kind only through the registry (inversa.tasks.kinds), so one set of tasks serves
CT, fields and any later kind. Retries are for transient failures only: an invalid input or
recipe fails at once with its message, because retrying it would only repeat the same error
three times, slower.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from inversa.data.errors import InvalidMeasurement
from inversa.data.store import ResultStore, axis_words
from inversa.tasks.core.inputs import check_input_unchanged
from inversa.tasks.core.interrupts import raise_if_stopping
from inversa.tasks.core.kind import Plan
from inversa.tasks.core.recipe import RecipeBase
from inversa.tasks.core.stores import create_store, make_plan
from inversa.tasks.gpu import gpu_slot
from inversa.tasks.kinds import kind_of, kind_of_provenance
from inversa.tasks.report import ProgressArtifact, flow_progress, publish_report

PERMANENT = (InvalidMeasurement, ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError)


class TransientError(RuntimeError):
    """An error worth retrying (I/O hiccup, device busy); anything else fails at once."""


class RegionFailed(RuntimeError):
    """Region ``index`` of a work unit failed; ``done`` lists the unit's regions recorded before it.

    ``transient`` says whether the original error (its ``__cause__``) is worth retrying. Built
    from ``args`` only, so it survives pickling to and from a Dask worker, where ``__cause__``
    does not.
    """

    def __init__(self, message: str, store_path: str, index: int, done: tuple[int, ...] = (),
                 transient: bool = False):
        super().__init__(message, store_path, index, tuple(done), bool(transient))
        self.store_path, self.index, self.done, self.transient = store_path, index, tuple(done), bool(transient)

    def __str__(self) -> str:
        return self.args[0]


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RegionFailed):
        return exc.transient
    if isinstance(exc, PERMANENT):
        return False
    return isinstance(exc, (TransientError, TimeoutError, ConnectionError, OSError)) or type(exc).__name__ == "OutOfMemoryError"


def retry_on_transient(task, task_run, state) -> bool:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 - the state itself may raise its exception
        exc = err
    return isinstance(exc, BaseException) and is_transient(exc)


def retrying_task(fn, name: str):
    """A task that retries twice with backoff, on transient errors only."""
    return task(fn, name=name, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
                retry_condition_fn=retry_on_transient)


plan_task = task(make_plan, name="plan", cache_policy=NO_CACHE)


@task(name="create-store", cache_policy=NO_CACHE)
def create_store_task(recipe: RecipeBase, recipe_digest: str, plan: Plan, overwrite: bool) -> str:
    return str(create_store(recipe, recipe_digest, plan, overwrite).path)


@task(name="prepare-store", cache_policy=NO_CACHE)
def prepare_store_task(recipe: RecipeBase, recipe_digest: str, overwrite: bool) -> dict[str, Any]:
    """Validate one input, plan it and create (or reopen) its store: the batch's per-dataset check.

    Run once per dataset, so an unreadable or invalid input fails only its own task, before any
    region of any dataset is computed.
    """
    plan = make_plan(recipe)
    store = create_store(recipe, recipe_digest, plan, overwrite)
    return {
        "store": str(store.path),
        "pending": store.pending_regions(),
        "total": len(store.regions),
        "method": plan.method,
        "n_slices": plan.n_slices,
        "prepare": plan.prepare,
    }


def prepare_run(store_path: str, recipe: RecipeBase) -> dict[str, Any]:
    """The kind's one-off step before the regions (CT calibration, a field's shared fit)."""
    prepared = kind_of(recipe).prepare(ResultStore.open(store_path), recipe)
    return {"record": prepared.record, "message": prepared.message}


prepare_task = retrying_task(prepare_run, "prepare")


def reconstruct_regions(store_path: str, indices: list[int], recipe: RecipeBase) -> dict[str, Any]:
    """Reconstruct several regions of one store in order: one work unit (tasks/core/work_units.py).

    Each region is written and recorded before the next starts, so a crash loses at most the
    region in flight. Regions already recorded are skipped, which is what makes a retry of the
    unit (after a transient error) resume rather than redo. The first failing region stops the
    unit with ``RegionFailed``, naming it and the regions recorded before it.

    Progress within a region goes to the flow's progress bar when this task runs in the flow's
    process, else to a bar on this task run.
    """
    logger = get_run_logger()
    kind = kind_of(recipe)
    store = ResultStore.open(store_path)
    done_before = store.intact_regions(indices)  # a damaged region is computed again
    units = axis_words(store.layout.leading_dim)[1]
    records, done = [], []
    started = time.perf_counter()
    bar, own_bar = _progress_bar(store_path, indices, done_before)
    recorded = store.provenance.get("input_digest")
    input_unchanged = partial(check_input_unchanged, str(getattr(recipe, "input", None) or "the input"),
                              partial(kind.input_digest, recipe), recorded, store_path)
    store.write_guard = input_unchanged  # and again just before each region's results are written
    try:
        for position, index in enumerate(indices, 1):
            if index in done_before:
                done.append(index)
                continue
            token = (store_path, index)
            def progress(fraction: float, token=token) -> None:
                raise_if_stopping()  # an interrupted run stops here, within one sampler step
                bar.partial(token, fraction)

            try:
                raise_if_stopping()
                input_unchanged()
                with gpu_slot(recipe):  # one slot of the `inversa-gpu` limit per GPU region (tasks/gpu.py)
                    record = kind.reconstruct_region(store, index, recipe, progress)
            except Exception as exc:
                start, stop = store.regions[index] if 0 <= index < len(store.regions) else (index, index + 1)
                raise RegionFailed(
                    f"region {index} ({units} {start}-{stop - 1}) of {store_path} failed: {exc}", store_path, index,
                    done, transient=is_transient(exc),
                ) from exc
            bar.complete(token)
            records.append(record)
            done.append(index)
            logger.info("region %d (%s %d-%d) done in %.3f s; %d/%d of this unit",
                        index, units, record["start"], record["stop"] - 1, record["seconds"], position, len(indices))
    finally:
        if own_bar:
            bar.close()
    return {
        "store": store_path,
        "regions": list(indices),
        "reconstructed": [r["index"] for r in records],
        "already_done": sorted(set(indices) & done_before),
        "seconds": round(time.perf_counter() - started, 4),
    }


def _progress_bar(store_path: str, indices: list[int], done_before: set[int]) -> tuple[ProgressArtifact, bool]:
    """The flow's bar if this process holds it; else a new bar for this unit (and True: close it)."""
    context = TaskRunContext.get()
    flow_run_id = context.task_run.flow_run_id if context is not None else None
    shared = flow_progress(flow_run_id) if flow_run_id is not None else None
    if shared is not None:
        return shared, False
    already = len(set(indices) & done_before)
    return ProgressArtifact(None, len(indices), already, description=f"Regions of this unit of {store_path}"), True


reconstruct_regions_task = retrying_task(reconstruct_regions, "reconstruct-regions")


@task(name="report", cache_policy=NO_CACHE)
def report_task(store_path: str, title: str, key: str) -> dict[str, Any]:
    """Run-level metrics into the store, and the report artifacts into the UI."""
    store = ResultStore.open(store_path)
    summary = kind_of_provenance(store.provenance).summarize(store)
    store.write_summary(summary)
    publish_report(store, summary, title=title, key=key)
    return summary
