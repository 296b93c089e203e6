"""The Prefect tasks of a reconstruction run: coarse units that pass paths, not arrays.

Retries are for transient failures only: an invalid input or recipe fails at once with its
message, because retrying it would only repeat the same error three times, slower.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from inversa.data.errors import InvalidMeasurement
from inversa.data.store import ResultStore, axis_words
from inversa.tasks.calibration import CALIBRATION_FILE, calibrate
from inversa.tasks.field_run import ensure_fit
from inversa.tasks.gpu import gpu_slot
from inversa.tasks.plan import Plan, create_store, make_plan
from inversa.tasks.region import TransientError, reconstruct_region
from inversa.tasks.report import publish_report, summarize

PERMANENT = (InvalidMeasurement, ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError)


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


plan_task = task(make_plan, name="plan", cache_policy=NO_CACHE)


@task(name="create-store", cache_policy=NO_CACHE)
def create_store_task(recipe: dict[str, Any], recipe_digest: str, plan: Plan, overwrite: bool) -> str:
    return str(create_store(recipe, recipe_digest, plan, overwrite).path)


@task(name="prepare-store", cache_policy=NO_CACHE)
def prepare_store_task(recipe: dict[str, Any], recipe_digest: str, overwrite: bool) -> dict[str, Any]:
    """Validate one input, plan it and create (or reopen) its store: the batch's per-dataset check.

    Run once per dataset, so an unreadable or invalid input fails only its own task, before any
    region of any dataset is computed.
    """
    plan = make_plan(recipe)
    store = create_store(recipe, recipe_digest, plan, overwrite)
    if getattr(plan, "global_fit", False) and store.pending_regions():
        ensure_fit(str(store.path), recipe)  # a field's one-off fit, before any of its regions
    return {
        "store": str(store.path),
        "pending": store.pending_regions(),
        "total": len(store.regions),
        "method": plan.method,
        "n_slices": plan.n_slices,
    }


def retrying_task(fn, name: str):
    """A task that retries twice with backoff, on transient errors only."""
    return task(fn, name=name, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
                retry_condition_fn=retry_on_transient)


region_task = retrying_task(reconstruct_region, "reconstruct-region")


def reconstruct_regions(store_path: str, indices: list[int], recipe: dict[str, Any]) -> dict[str, Any]:
    """Reconstruct several regions of one store in order: one work unit (tasks/work_units.py).

    Each region is written and recorded before the next starts, so a crash loses at most the
    region in flight. Regions already recorded are skipped, which is what makes a retry of the
    unit (after a transient error) resume rather than redo. The first failing region stops the
    unit with ``RegionFailed``, naming it and the regions recorded before it.
    """
    logger = get_run_logger()
    store = ResultStore.open(store_path)
    done_before = store.done_regions()
    units = axis_words(store.layout.leading_dim)[1]
    records, done = [], []
    started = time.perf_counter()
    for position, index in enumerate(indices, 1):
        if index in done_before:
            done.append(index)
            continue
        try:
            with gpu_slot(recipe):  # one slot of the `inversa-gpu` limit per GPU region (tasks/gpu.py)
                record = reconstruct_region(store_path, index, recipe)
        except Exception as exc:
            start, stop = store.regions[index] if 0 <= index < len(store.regions) else (index, index + 1)
            raise RegionFailed(
                f"region {index} ({units} {start}-{stop - 1}) of {store_path} failed: {exc}", store_path, index, done,
                transient=is_transient(exc),
            ) from exc
        records.append(record)
        done.append(index)
        logger.info("region %d (%s %d-%d) done in %.3f s; %d/%d of this unit",
                    index, units, record["start"], record["stop"] - 1, record["seconds"], position, len(indices))
    return {
        "store": store_path,
        "regions": list(indices),
        "reconstructed": [r["index"] for r in records],
        "already_done": sorted(set(indices) & done_before),
        "seconds": round(time.perf_counter() - started, 4),
    }


reconstruct_regions_task = retrying_task(reconstruct_regions, "reconstruct-regions")
calibrate_task = retrying_task(calibrate, "calibrate")
fit_field_task = retrying_task(ensure_fit, "fit-field")


def calibration_summary(store: ResultStore) -> dict[str, Any]:
    """The calibration's numbers for the run summary (nothing when the run was not calibrated)."""
    record = store.read_meta_json(CALIBRATION_FILE)
    if record is None:
        return {}
    return {
        "interval_scale": record["scale"],
        "calibration_pairs": record["pairs"],
        "calibration_coverage_before": record["coverage_before"],
        "calibration_coverage_after": record["coverage_after"],
    }


@task(name="report", cache_policy=NO_CACHE)
def report_task(store_path: str, title: str, key: str) -> dict[str, Any]:
    store = ResultStore.open(store_path)
    summary = {**summarize(store), **calibration_summary(store)}
    store.write_summary(summary)
    publish_report(store, summary, title=title, key=key)
    return summary
