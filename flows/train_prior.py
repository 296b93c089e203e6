"""The `train-prior` flow: a prior recipe in, a run directory with a trained prior out.

Training is cut into chunks of `checkpoint_every` steps, one Prefect task each, and every chunk
ends with a checkpoint; a rerun of the same recipe into the same directory resumes at the last
checkpoint and, because every step's randomness is a function of (seed, step), ends with the
same weights as a run that never stopped. A finished directory is only reported on; any other
directory with files in it is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from inversa.tasks.core.devices import resolve_device
from inversa.tasks.core.prior_recipe import PriorRecipe, load_prior_recipe
from inversa.tasks.core.training import check_run_directory
from inversa.tasks.report import ProgressArtifact, artifact_key
from inversa.tasks.training_tasks import open_run_task, report_task, train_chunk_task

# Set by the command line to draw a terminal progress bar: called with (done, stop, loss).
progress_hook: Callable[[int, int, float], None] | None = None


def _run_name() -> str:
    recipe = (flow_run.parameters or {}).get("recipe")
    name = recipe.name if isinstance(recipe, PriorRecipe) else (recipe or {}).get("name", "prior")
    return f"train-prior | {name}"


def chunks(completed: int, stop: int, every: int) -> list[tuple[int, int]]:
    """``(start, end)`` step ranges ending on multiples of ``every`` (and at ``stop``)."""
    bounds, start = [], completed
    while start < stop:
        end = min((start // every + 1) * every, stop)
        bounds.append((start, end))
        start = end
    return bounds


@flow(name="train-prior", flow_run_name=_run_name, log_prints=True, validate_parameters=False)
def train_prior(recipe: PriorRecipe | dict[str, Any], output: str | None = None, steps: int | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Train (or resume) the prior of ``recipe`` in ``output`` (default: the recipe's ``output``).

    ``steps``: stop once this many steps are complete (default: all of the recipe's
    ``training.steps``); the rest is trained by a later run with the same recipe.
    ``overwrite``: start afresh in a directory that holds another recipe's run, a finished run,
    or a prior without its resumable checkpoint (otherwise refused, see `check_run_directory`).
    """
    logger = get_run_logger()
    progress = progress_hook
    parsed = load_prior_recipe(recipe, output=output)
    if not parsed.output:
        raise ValueError(f"prior recipe {parsed.name!r}: no output directory; give one with --output DIR")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    spec, out = parsed, parsed.output
    check_run_directory(parsed, out, overwrite=overwrite)
    device = str(resolve_device(parsed.device))
    tags = ["gpu"] if device.startswith("cuda") else []

    state = open_run_task.with_options(task_run_name=f"open {out}", tags=tags)(spec, out, device)
    total, completed = state["total_steps"], state["completed_steps"]
    stop = total if steps is None else min(int(steps), total)
    work = chunks(completed, stop, parsed.checkpoint_every)
    logger.info("%s: %d of %d steps done in %s; training to step %d in %d chunk(s) on %s",
                parsed.name, completed, total, out, max(stop, completed), len(work), device)
    key = artifact_key("train-prior", parsed.name)
    bar = ProgressArtifact(key, total, completed, description=f"Training steps of {parsed.name}")
    if progress:
        progress(min(completed, stop), stop, math.nan)

    def on_step(done: int, loss: float) -> None:
        if progress:
            progress(done, stop, loss)

    result = state
    try:
        for start, end in work:
            checkpoint = end // parsed.checkpoint_every
            preview = (end < stop and parsed.preview_every > 0 and end % parsed.checkpoint_every == 0
                       and checkpoint % parsed.preview_every == 0)
            result = train_chunk_task.with_options(task_run_name=f"steps {start + 1}-{end}", tags=tags)(
                spec, out, device, end, preview, key, on_step)
            bar.move_to(result["completed_steps"], description=f"{result['completed_steps']}/{total} steps, "
                           f"loss {result['final_loss']:.4g}")
            logger.info("steps %d-%d: loss %.4g, %.3f s per step", start + 1, end, result["final_loss"],
                        result["seconds"] / max(result["steps_taken"], 1))
    finally:
        bar.close()
    summary = report_task.with_options(task_run_name=f"report {parsed.name}", tags=tags)(
        spec, out, device, key, True)
    return {"output": summary["output"], "completed_steps": summary["completed_steps"],
            "total_steps": summary["total_steps"], "final_loss": summary["final_loss"],
            "prior": summary["prior"], "flow_run_id": str(flow_run.id)}
