"""The `reconstruct` flow: one measurement file in, one uncertainty store out.

Load and validate, plan regions, write the store template, reconstruct the pending regions in
parallel work units (flows/scheduling.py: a task run covers several regions and writes and
records each as it finishes), then metrics and a report, all under the store's lock. A rerun
of the same recipe on the same input finds the store, skips the regions already recorded as
done, and ends with the same store as an uninterrupted run.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from inversa.data.store import ResultStore, axis_words
from inversa.data.store_lock import StoreLock
from inversa.flows.recipe import load_recipe
from inversa.flows.scheduling import StoreJob, reconstruct_stores
from inversa.tasks.measurement import uses_gpu
from inversa.tasks.pipeline import calibrate_task, create_store_task, fit_field_task, plan_task, report_task
from inversa.tasks.plan import dataset_name


# Set by the command line to draw a terminal progress bar: called with (done, total).
progress_hook: Callable[[int, int], None] | None = None


class RegionsFailed(RuntimeError):
    """Some regions failed; the others are written and a rerun resumes from them."""


def _run_name() -> str:
    params = flow_run.parameters or {}
    recipe = params.get("recipe") or {}
    return f"{recipe.get('name', 'recipe')} | {dataset_name(recipe.get('input'))}"


def holding_store_lock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hold the output store's lock for the whole run, from before the store is created to after
    the report: a second run on the same store is refused before it touches anything, and the
    operating system frees the lock if this run dies."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        output = dict(signature.bind(*args, **kwargs).arguments["recipe"] or {}).get("output")
        if not output:
            return fn(*args, **kwargs)  # the flow refuses a missing output with its own message
        with StoreLock(output):
            return fn(*args, **kwargs)

    return locked


@flow(
    name="reconstruct",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
    log_prints=True,
    validate_parameters=False,
)
@holding_store_lock
def reconstruct(recipe: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct every slice of `recipe["input"]` into the store `recipe["output"]`."""
    logger = get_run_logger()
    parsed = load_recipe(dict(recipe))
    if not parsed.output:
        raise ValueError(f"recipe {parsed.name!r}: no output store; give one with --output STORE")
    spec = parsed.model_dump()
    digest = parsed.digest()
    dataset = dataset_name(parsed.input)

    plan = plan_task.with_options(task_run_name=f"plan {dataset}")(spec)
    store_path = create_store_task.with_options(task_run_name=f"store {dataset}")(spec, digest, plan, overwrite)
    store = ResultStore.open(store_path)
    pending = store.pending_regions()
    total = len(store.regions)
    logger.info(
        "%s: %d %s in %d regions, %d already done; method %s; store %s",
        dataset, plan.n_slices, axis_words(store.layout.leading_dim)[1], total, total - len(pending), plan.method, store_path,
    )
    key = f"{parsed.name}-{dataset}"

    # GPU work carries the `gpu` tag, so a tag concurrency limit can give each GPU one task at a time.
    tags = {"gpu"} if uses_gpu(spec) else set()
    if spec.get("calibration") and pending:
        record = calibrate_task.with_options(task_run_name=f"calibrate {dataset}", tags=tags)(store_path, spec)
        logger.info(
            "%s: interval scale %.3g from %d simulated pairs (coverage %.3f -> %.3f on them)",
            dataset, record["scale"], record["pairs"], record["coverage_before"], record["coverage_after"],
        )

    if getattr(plan, "global_fit", False) and pending:
        record = fit_field_task.with_options(task_run_name=f"fit {dataset}", tags=tags)(store_path, spec)
        logger.info("%s: %s fitted once for all regions in %.1f s", dataset, plan.method, record["seconds"])

    job = StoreJob(dataset, store_path, spec, pending, store.regions, frozenset(tags), store.layout.leading_dim)
    outcome = reconstruct_stores([job], key, f"Regions of {dataset} reconstructed", hook=progress_hook)[dataset]
    if not outcome.ok:
        raise RegionsFailed(outcome.message(job)) from outcome.failures[0].error

    summary = report_task.with_options(task_run_name=f"report {dataset}")(
        store_path, title=f"{parsed.name} on {dataset}", key=key
    )
    return {"store": store_path, "dataset": dataset, "method": plan.method, "flow_run_id": str(flow_run.id), **summary}
