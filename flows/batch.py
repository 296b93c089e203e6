"""The `batch` flow: one recipe over many inputs, one store per dataset at `OUTPUT/<dataset>.zarr`.

Why a store per dataset and not one store with a `dataset` dimension: each store stays what a
single `inversa run` would make (same layout, same values, same provenance and digests), so it
is resumable, lockable and deletable on its own, a new file in a watched directory adds a store
instead of reshaping a shared one, and datasets of different sizes need no padding.

Phases, each isolating a failed dataset from the others:

1. Expand INPUTS (flows/batch_inputs.py) and skip, without planning, every dataset whose store
   is complete for the same recipe digest and input digest: a rerun over a watched directory
   costs one file digest per finished dataset and no task run.
2. Prepare: one task per remaining dataset reads, validates and plans its input and creates (or
   reopens) its store, so an unreadable or invalid file fails only its own dataset, before any
   heavy work; the kind's one-off preparation (CT calibration, a field's shared fit), where the
   plan asks for one, follows per dataset.
3. Regions of all datasets are scheduled together in coarse work units, interleaved across
   datasets (flows/scheduling.py), with one progress artifact for the batch.
4. A report per finished dataset (its metrics, preview and store link, as `inversa run` leaves),
   then the batch table artifact (`batch-<recipe>`) and `OUTPUT/batch-summary.json`.

Statuses: `done` (reconstructed now), `resumed` (a partial store was completed), `skipped` (already
complete), `failed` (with a one-line reason). The flow raises `DatasetsFailed` after writing the
table and summary when any dataset failed, so the run shows as failed in the UI.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from inversa.data.store import ResultStore, StoreError
from inversa.data.store_lock import StoreLock, StoreLocked
from inversa.flows.batch_inputs import BatchInput, empty_inputs, expand_inputs
from inversa.flows.reconstruct import recipe_field
from inversa.flows.scheduling import StoreJob, reconstruct_stores
from inversa.tasks.core.recipe import RecipeBase, load_recipe
from inversa.tasks.kinds import kind_of
from inversa.tasks.pipeline import prepare_store_task, prepare_task, report_task
from inversa.tasks.report import artifact_key

SUMMARY_FILE = "batch-summary.json"

# Set by the command line to draw a terminal progress bar: called with (done, total) regions.
progress_hook: Callable[[float, int], None] | None = None


class DatasetsFailed(RuntimeError):
    """Some datasets of a batch failed; the others are stored, and a rerun retries only these."""


def _run_name() -> str:
    params = flow_run.parameters or {}
    inputs = params.get("inputs") or []
    return f"{recipe_field(params.get('recipe'), 'name') or 'recipe'} | batch of {len(inputs)} input(s)"


@flow(
    name="batch",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
    log_prints=True,
    validate_parameters=False,
)
def batch(recipe: RecipeBase | dict[str, Any], inputs: list[str], output: str, overwrite: bool = False
          ) -> dict[str, Any]:
    """Reconstruct every dataset named by `inputs` with `recipe` into `output/<dataset>.zarr`.

    ``recipe``: a validated recipe, or its fields as a mapping (a deployment's JSON parameters).
    """
    started = time.perf_counter()
    logger = get_run_logger()
    base = load_recipe(recipe)
    kind = kind_of(base)
    if not inputs:
        raise ValueError(f"batch {base.name!r}: no inputs given; expected files, directories or globs")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    datasets = expand_inputs([str(i) for i in inputs], kind.input_suffixes)
    for line in empty_inputs([str(i) for i in inputs], kind.input_suffixes):  # a watched directory before its first scan
        logger.warning("batch %s: %s; nothing to do there", base.name, line)

    rows: dict[str, dict[str, Any]] = {}
    specs: dict[str, tuple[RecipeBase, str]] = {}
    for item in datasets:
        rows[item.dataset] = {"dataset": item.dataset, "input": item.path, "reference": item.reference,
                              "store": str(out / f"{item.dataset}.zarr"), "status": None, "reason": None,
                              "metrics": {}, "seconds": None}
        if item.problem:
            _fail(rows[item.dataset], item.problem)
            continue
        try:
            spec, digest = _dataset_recipe(base, item, rows[item.dataset]["store"])
        except Exception as exc:  # noqa: BLE001 - a bad input fails its own dataset only
            _fail(rows[item.dataset], exc)
            continue
        complete = completed_store_summary(spec, digest)
        if complete is not None:
            rows[item.dataset].update(status="skipped", metrics=complete, seconds=complete.get("seconds"))
        else:
            specs[item.dataset] = (spec, digest)
    skipped = sum(row["status"] == "skipped" for row in rows.values())
    logger.info("batch %s: %d dataset(s), %d already complete, %d to prepare", base.name, len(rows), skipped,
                len(specs))

    with ExitStack() as locks:  # each store held from before it is created to after its report
        for dataset in list(specs):
            try:
                locks.enter_context(StoreLock(rows[dataset]["store"]))
            except StoreLocked as exc:  # another run (or batch) is writing it: fail this one only
                _fail(rows[dataset], exc)
                del specs[dataset]
        jobs = _prepare_stores(specs, rows, overwrite)
        jobs = _prepare_runs(jobs, rows)
        if jobs:
            outcomes = reconstruct_stores(jobs, f"batch-{base.name}",
                                          f"Regions of {len(jobs)} dataset(s) reconstructed", hook=progress_hook)
            for job in jobs:
                if not outcomes[job.dataset].ok:
                    _fail(rows[job.dataset], outcomes[job.dataset].message(job))
            _report(base.name, [job for job in jobs if outcomes[job.dataset].ok], rows)

    result = {
        "recipe": base.name,
        "recipe_digest": base.digest(),
        "output": str(out.resolve()),
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "counts": {s: sum(r["status"] == s for r in rows.values()) for s in ("done", "resumed", "skipped", "failed")},
        "datasets": list(rows.values()),
    }
    _write_json(out / SUMMARY_FILE, result)
    create_table_artifact(
        table=batch_table(result["datasets"], kind.table_metrics),
        key=artifact_key("batch", base.name),
        description=(f"Batch {base.name} over {len(rows)} dataset(s) in {result['wall_seconds']:.1f} s: "
                     + ", ".join(f"{n} {s}" for s, n in result["counts"].items() if n) + f"; summary {out / SUMMARY_FILE}"),
    )
    failed = [r for r in rows.values() if r["status"] == "failed"]
    if failed:
        raise DatasetsFailed(
            f"{len(failed)} of {len(rows)} dataset(s) failed ({', '.join(r['dataset'] for r in failed)}; first: "
            f"{failed[0]['reason']}); the others are in {out}; details in {out / SUMMARY_FILE}"
        )
    return result


def _dataset_recipe(base: RecipeBase, item: BatchInput, store: str) -> tuple[RecipeBase, str]:
    """The recipe of one dataset: the batch recipe with this input, store and paired reference."""
    changes: dict[str, Any] = {"input": item.path, "output": store, "reference": item.reference}
    if not item.reference:
        changes["reference_variable"] = None
    parsed = base.with_fields(**changes)
    return parsed, parsed.digest()


def completed_store_summary(spec: RecipeBase, digest: str) -> dict[str, Any] | None:
    """The summary of the dataset's store if it is complete for this recipe and input, else None.

    Cheap on purpose (one file digest, a few small JSON reads, a stat per chunk file): it is what makes a rerun over a
    watched directory touch only new inputs. Anything unexpected means "not complete": the
    prepare task then reports it properly.
    """
    try:
        store = ResultStore.open(spec.output)
    except StoreError:
        return None
    try:
        same = (store.provenance.get("recipe_digest") == digest
                and store.provenance.get("input_digest") == kind_of(spec).input_digest(spec))
    except Exception:  # noqa: BLE001 - an unreadable input is the prepare task's to report
        return None
    if not same or store.pending_regions(contents=False) or not store.summary:
        return None
    return store.summary


def _prepare_stores(specs: dict[str, tuple[RecipeBase, str]], rows: dict[str, dict[str, Any]],
                    overwrite: bool) -> list[StoreJob]:
    """Validate, plan and open the store of every dataset concurrently; failures stay in their row."""
    futures = {
        dataset: prepare_store_task.with_options(task_run_name=f"prepare {dataset}").submit(spec, digest, overwrite)
        for dataset, (spec, digest) in specs.items()
    }
    jobs = []
    for dataset, prepared in _gather(futures, rows).items():
        spec = specs[dataset][0]
        total, pending = prepared["total"], list(prepared["pending"])
        rows[dataset]["status"] = "resumed" if len(pending) < total else "done"
        layout = ResultStore.open(prepared["store"]).layout
        tags = frozenset({"gpu"}) if kind_of(spec).uses_gpu(spec) else frozenset()
        jobs.append(StoreJob(dataset, prepared["store"], spec, pending, layout.regions, tags, layout.leading_dim,
                             prepare=prepared["prepare"]))
    return jobs


def _prepare_runs(jobs: list[StoreJob], rows: dict[str, dict[str, Any]]) -> list[StoreJob]:
    """Run each dataset's one-off preparation where its plan asks for one (before its regions);
    drop the datasets whose preparation failed."""
    futures = {
        job.dataset: prepare_task.with_options(task_run_name=f"{job.prepare} {job.dataset}", tags=set(job.tags))
        .submit(job.store_path, job.recipe)
        for job in jobs if job.prepare and job.pending
    }
    prepared = _gather(futures, rows)
    return [job for job in jobs if job.dataset not in futures or job.dataset in prepared]


def _report(name: str, jobs: list[StoreJob], rows: dict[str, dict[str, Any]]) -> None:
    """Each finished dataset's own metrics, preview and store link, as a single run leaves them."""
    futures = {
        job.dataset: report_task.with_options(task_run_name=f"report {job.dataset}")
        .submit(job.store_path, title=f"{name} on {job.dataset}", key=f"{name}-{job.dataset}")
        for job in jobs
    }
    for dataset, summary in _gather(futures, rows).items():
        rows[dataset].update(metrics=summary, seconds=summary.get("seconds"))


def _gather(futures: dict[str, Any], rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each dataset's task result; a dataset whose task failed is marked failed and left out."""
    results = {}
    for dataset, future in futures.items():
        try:
            results[dataset] = future.result()
        except Exception as exc:  # noqa: BLE001 - isolate the dataset
            _fail(rows[dataset], exc)
    return results


def _fail(row: dict[str, Any], error: BaseException | str) -> None:
    text = str(error) if isinstance(error, str) else (str(error) or type(error).__name__)
    row.update(status="failed", reason=" ".join(text.split()))


def batch_table(rows: list[dict[str, Any]], metric_columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per dataset for the table artifact and the terminal: status, metrics, time, store.

    ``metric_columns``: the kind's ``table_metrics``; those no dataset has are left out."""
    metrics = [m for m in metric_columns if any(_finite(r["metrics"].get(m)) for r in rows)]
    table = []
    for row in rows:
        line = {"dataset": row["dataset"], "status": row["status"]}
        for name in metrics:
            value = row["metrics"].get(name)
            line[name] = f"{value:.4g}" if _finite(value) else ""
        seconds = row.get("seconds")
        line["compute_s"] = f"{seconds:.2f}" if _finite(seconds) else ""
        line["store"] = row["store"] if row["status"] != "failed" or Path(row["store"]).exists() else ""
        line["reason"] = row["reason"] or ""
        table.append(line)
    return table


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strict(value: Any) -> Any:
    """NaN and infinities as null: strict JSON that every reader accepts."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(_strict(obj), indent=1, default=str, allow_nan=False))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
