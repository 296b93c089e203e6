"""The `reconstruct` flow: one input in, one uncertainty store out, for any problem kind.

Validate and plan, write the store template, run the kind's one-off preparation if the plan
asks for one (CT calibration, a field's shared fit), reconstruct the pending regions in parallel
work units (flows/scheduling.py: a task run covers several regions and writes and records each
as it finishes), then metrics and a report, all under the store's lock. A rerun of the same
recipe on the same input finds the store, skips the regions already recorded as done, and ends
with the same store as an uninterrupted run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from inversa.data.store import ResultStore, axis_words
from inversa.data.store_lock import StoreLock
from inversa.flows.scheduling import StoreJob, reconstruct_stores
from inversa.tasks.core.inputs import dataset_name
from inversa.tasks.core.recipe import RecipeBase, load_recipe
from inversa.tasks.kinds import kind_of
from inversa.tasks.pipeline import create_store_task, plan_task, prepare_task, report_task

# Set by the command line to draw a terminal progress bar: called with (done, total) regions.
progress_hook: Callable[[float, int], None] | None = None


class RegionsFailed(RuntimeError):
    """Some regions failed; the others are written and a rerun resumes from them."""


def recipe_field(recipe: RecipeBase | Mapping | None, name: str) -> Any:
    """A field of a flow's recipe parameter, typed or (from a deployment's JSON) a mapping."""
    if isinstance(recipe, RecipeBase):
        return getattr(recipe, name)
    return (recipe or {}).get(name)


def _run_name() -> str:
    recipe = (flow_run.parameters or {}).get("recipe")
    return f"{recipe_field(recipe, 'name') or 'recipe'} | {dataset_name(recipe_field(recipe, 'input'))}"


def holding_store_lock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hold the output store's lock for the whole run, from before the store is created to after
    the report: a second run on the same store is refused before it touches anything, and the
    operating system frees the lock if this run dies."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        output = recipe_field(signature.bind(*args, **kwargs).arguments["recipe"], "output")
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
def reconstruct(recipe: RecipeBase | dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Reconstruct every region of `recipe.input` into the store `recipe.output`.

    ``recipe``: a validated recipe, or its fields as a mapping (a deployment's JSON parameters).
    """
    logger = get_run_logger()
    recipe = load_recipe(recipe)
    if not recipe.output:
        raise ValueError(f"recipe {recipe.name!r}: no output store; give one with --output STORE")
    digest = recipe.digest()
    dataset = dataset_name(recipe.input)
    kind = kind_of(recipe)

    plan = plan_task.with_options(task_run_name=f"plan {dataset}")(recipe)
    store_path = create_store_task.with_options(task_run_name=f"store {dataset}")(recipe, digest, plan, overwrite)
    store = ResultStore.open(store_path)
    pending = store.pending_regions()
    total = len(store.regions)
    logger.info(
        "%s: %d %s in %d regions, %d already done; method %s; store %s",
        dataset, plan.n_slices, axis_words(store.layout.leading_dim)[1], total, total - len(pending), plan.method,
        store_path,
    )
    key = f"{recipe.name}-{dataset}"

    # GPU work carries the `gpu` tag, so a tag concurrency limit can give each GPU one task at a time.
    tags = frozenset({"gpu"}) if kind.uses_gpu(recipe) else frozenset()
    if plan.prepare and pending:
        prepared = prepare_task.with_options(task_run_name=f"{plan.prepare} {dataset}", tags=set(tags))(
            store_path, recipe)
        logger.info("%s: %s", dataset, prepared["message"])

    job = StoreJob(dataset, store_path, recipe, pending, store.regions, tags, store.layout.leading_dim)
    outcome = reconstruct_stores([job], key, f"Regions of {dataset} reconstructed", hook=progress_hook)[dataset]
    if not outcome.ok:
        raise RegionsFailed(outcome.message(job)) from outcome.failures[0].error

    summary = report_task.with_options(task_run_name=f"report {dataset}")(
        store_path, title=f"{recipe.name} on {dataset}", key=key
    )
    return {"store": store_path, "dataset": dataset, "method": plan.method, "flow_run_id": str(flow_run.id), **summary}
