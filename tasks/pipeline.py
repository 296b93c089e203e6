"""The Prefect tasks of a reconstruction run: coarse units that pass paths, not arrays.

Retries are for transient failures only: an invalid input or recipe fails at once with its
message, because retrying it would only repeat the same error three times, slower.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from data.errors import InvalidMeasurement
from data.store import ResultStore
from tasks.calibration import CALIBRATION_FILE, calibrate
from tasks.plan import Plan, create_store, make_plan
from tasks.region import TransientError, reconstruct_region
from tasks.report import publish_report, summarize

PERMANENT = (InvalidMeasurement, ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError)


def is_transient(exc: BaseException) -> bool:
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


def retrying_task(fn, name: str):
    """A task that retries twice with backoff, on transient errors only."""
    return task(fn, name=name, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
                retry_condition_fn=retry_on_transient)


region_task = retrying_task(reconstruct_region, "reconstruct-region")
calibrate_task = retrying_task(calibrate, "calibrate")


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
