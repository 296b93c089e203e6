"""The Prefect tasks of a `train-prior` run: open a run directory, train one chunk, report.

A chunk is the steps between two checkpoints. Every chunk task ends with a checkpoint on disk,
so a crash, a killed worker or a retry loses at most one chunk and the next task resumes from
the directory. Rebuilding the network and reading the checkpoint for every chunk would be
wasted work in the ordinary case, so the last opened run is kept in this process and reused
while its step count is still the one on disk; any failure in a chunk drops it, and the next
task (or a fresh process) reads the directory instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from inversa.data.checkpoints import checkpoint_paths, read_config
from inversa.data.figures import data_uri, image_png
from inversa.tasks.core.prior_recipe import PriorRecipe
from inversa.tasks.core.training import LAST, PRIOR, TrainingRun, preview_strip, training_digest
from inversa.tasks.pipeline import retry_on_transient
from inversa.tasks.report import artifact_key, publish

PREVIEW_SAMPLES = 8

_lock = threading.Lock()
_open: tuple[tuple[str, str, str], TrainingRun] | None = None


def _key(recipe: PriorRecipe, output, device: str) -> tuple[str, str, str]:
    return (str(Path(output).resolve()), training_digest(recipe), str(device))


def _steps_on_disk(output) -> int:
    last = checkpoint_paths(Path(output) / LAST)[1]
    return int(read_config(last).get("completed_steps", 0)) if last.is_file() else 0


def open_run(recipe: PriorRecipe, output, device: str = "cpu") -> TrainingRun:
    """The run in ``output``: the cached one if it is where the directory says, else read from disk."""
    global _open
    key = _key(recipe, output, device)
    with _lock:
        if _open is not None and _open[0] == key and _open[1].completed == _steps_on_disk(output):
            return _open[1]
        _open = None
    run = TrainingRun(recipe, output, device=device)
    with _lock:
        _open = (key, run)
    return run


def forget_open_run() -> None:
    """Drop the cached run, as a new process would start (and as any failed chunk does)."""
    global _open
    with _lock:
        _open = None


def loss_table(history: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Rows of (step, mean loss over the chunk, seconds per step) from a run's history."""
    rows, previous = [], 0
    for entry in history:
        step = int(entry["step"])
        taken = max(step - previous, 1)
        rows.append({"step": step, "loss": round(float(entry["loss"]), 6),
                     "seconds_per_step": round(float(entry["seconds"]) / taken, 4)})
        previous = step
    return rows


def _final_loss(history: list[dict[str, float]]) -> float:
    return float(history[-1]["loss"]) if history else math.nan


def preview_markdown(run: TrainingRun, title: str) -> str:
    strip = preview_strip(run.prior(), PREVIEW_SAMPLES, seed=0)
    history = run.history
    loss = f"{_final_loss(history):.4g}" if history else "n/a"
    return (f"### {title}: step {run.completed} of {run.total}\n\n"
            f"{PREVIEW_SAMPLES} unconditional samples (EMA weights, same seed at every checkpoint), "
            f"grey scale fixed to the training range; last chunk's loss {loss}.\n\n"
            f"![samples at step {run.completed}]({data_uri(image_png(strip, 'gray', 0.0, 1.0))})\n")


def summary(run: TrainingRun) -> dict[str, Any]:
    return {"output": str(run.output), "completed_steps": run.completed, "total_steps": run.total,
            "final_loss": _final_loss(run.history), "prior": str(checkpoint_paths(run.output / PRIOR)[1])}


@task(name="open-run", cache_policy=NO_CACHE)
def open_run_task(recipe: PriorRecipe, output: str, device: str) -> dict[str, Any]:
    """Open or resume the directory (refusing one of another recipe); returns where it stands."""
    run = open_run(recipe, output, device)
    return {**summary(run), "resumed_from": run.completed}


@task(name="train-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_on_transient)
def train_chunk_task(recipe: PriorRecipe, output: str, device: str, stop: int, preview: bool,
                     key: str, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train until ``stop`` steps are complete, checkpoint, publish the loss curve (and a preview)."""
    run = open_run(recipe, output, device)
    start, started = run.completed, time.perf_counter()
    try:
        run.train(stop, on_step)
        run.save()
    except BaseException:
        forget_open_run()  # its weights may be past the checkpoint, or half-updated
        raise
    seconds = time.perf_counter() - started
    title = recipe.name
    calls = [partial(create_table_artifact, table=loss_table(run.history), key=artifact_key(key, "loss"),
                     description=f"Training loss of {title} (mean per checkpoint) and seconds per step")]
    if preview:
        markdown = preview_markdown(run, title)
        calls.append(partial(create_markdown_artifact, markdown=markdown, key=artifact_key(key, "samples"),
                             description=f"Samples from {title} at step {run.completed}"))
    publish(calls)
    return {**summary(run), "steps_taken": run.completed - start, "seconds": seconds}


@task(name="report", cache_policy=NO_CACHE)
def report_task(recipe: PriorRecipe, output: str, device: str, key: str, preview: bool) -> dict[str, Any]:
    """Where the run stands, as artifacts: the loss curve and, if asked, samples at this step."""
    run = open_run(recipe, output, device)
    title = recipe.name
    result = summary(run)
    lines = [f"# {title}", "", f"Directory `{run.output}`: {run.completed} of {run.total} steps, "
             f"prior `{result['prior']}`.", ""]
    if preview:
        lines.append(preview_markdown(run, title))
    calls = [partial(create_table_artifact, table=loss_table(run.history), key=artifact_key(key, "loss"),
                     description=f"Training loss of {title} (mean per checkpoint) and seconds per step"),
             partial(create_markdown_artifact, markdown="\n".join(lines), key=artifact_key(key, "summary"),
                     description=f"{title}: {run.completed}/{run.total} steps")]
    publish(calls)
    return result
