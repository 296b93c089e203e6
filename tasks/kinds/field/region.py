"""The field branch of a run: plan, store, the one-off fit, each region, the run summary.

The reconstruct and batch flows call the same task functions for CT and for fields
(tasks/plan.py, tasks/region.py and tasks/report.py hand field recipes over to this module),
so scheduling, resume, store locks, Dask and the UI work for fields unchanged.

A field store holds ``mean``, ``std``, ``lower``, ``upper`` (and ``reference``) over
``(time, y, x)`` or ``(y, x)``, a trailing ``component`` for vector fields, cell centres as
coordinates in the input's units; cells outside the recipe's convex-hull mask are NaN.

Fit once: when one fit serves every region (a static field cut into row bands; a space-time
PINN cut into time blocks), ``ensure_fit`` runs it and saves it in the store's private
directory (``_inversa/field_fit.json`` plus ``field_fit.npz``, arrays first and the JSON last,
both atomically, so a crash leaves no half fit). Regions rebuild the model from it, once per
process. Held-out scores of such a fit are computed with it and kept in the same record.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from inversa.data.store import ResultStore
from inversa.tasks.field_methods import FieldMethod, field_method
from inversa.tasks.field_problem import FieldProblem, Points, load_field_problem
from inversa.tasks.field_solve import FieldModel, needs_global_fit
from inversa.tasks.measurement import input_digest
from inversa.tasks.region import gaussian_interval, interval_z

FIT_FILE = "field_fit.json"
FIT_ARRAYS = "field_fit.npz"
INTERVAL_KIND = "gaussian"
INTERVAL_DESCRIPTION = (
    "mean +- z * std, z the standard normal quantile of (1 + credible_level) / 2; std is the posterior "
    "standard deviation of the latent field (GP: exact or sparse posterior; PINN: spread of the ensemble)"
)


@dataclass
class FieldPlan:
    dataset: str
    input: str
    output: str | None
    input_kind: str
    n_slices: int
    leading_dim: str
    grid_shape: tuple[int, int]
    coord_units: str
    units: str
    components: tuple[str, ...] | None
    n_observations: int
    n_held_out: int
    method: str
    method_params: dict[str, Any]
    regions: list[tuple[int, int]]
    global_fit: bool
    estimated_memory_bytes: int
    estimated_storage_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, region_size: int) -> list[str]:
        """The lines ``inversa check`` prints."""
        ny, nx = self.grid_shape
        comps = f", components {', '.join(self.components)}" if self.components else ""
        along = "time step(s)" if self.leading_dim == "time" else "grid row(s)"
        return [
            f"input      {self.input} ({self.input_kind}, values in {self.units}{comps})",
            f"observed   {self.n_observations} point(s) to fit, {self.n_held_out} held out for scoring",
            f"grid       {ny} x {nx} cells, coordinates in {self.coord_units}"
            + (f", {self.n_slices} time steps" if self.leading_dim == "time" else ""),
            f"method     {self.method} {self.method_params}",
            f"fit        {'once for all regions' if self.global_fit else 'per time step'}",
            f"regions    {len(self.regions)} of up to {region_size} {along}",
            f"memory     about {_human(self.estimated_memory_bytes)} per worker",
            f"storage    at most {_human(self.estimated_storage_bytes)} (before compression)",
        ]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _method(recipe: dict[str, Any]) -> FieldMethod:
    spec = recipe["method"]
    return field_method(spec["name"], spec.get("params") or {})


def _counts(problem: FieldProblem, method: FieldMethod) -> tuple[int, int, int]:
    """(observations fitted, held out, the most any single fit sees)."""
    if needs_global_fit(method, problem) and problem.times is not None:
        fit, held = problem.space_time()
        return fit.n, held.n, fit.n
    indices = [None] if problem.times is None else range(len(problem.times))
    fits = [problem.observations(t).n for t in indices]
    helds = [problem.held_out(t).n for t in indices]
    return sum(fits), sum(helds), max(fits)


def make_field_plan(recipe: dict[str, Any]) -> FieldPlan:
    """Read the input, decide grid and regions, check the method on it; writes nothing."""
    from inversa.tasks.plan import dataset_name, plan_regions

    problem = load_field_problem(recipe)
    method = _method(recipe)
    FieldModel(method, problem)  # refuses a method that cannot model this input (vector field, no time)
    n_fit, n_held, largest = _counts(problem, method)
    if largest < 3:
        raise ValueError(f"{problem.input}: at most {largest} observation(s) per fit after the holdout; need at least 3")
    ny, nx = problem.shape
    channels = len(problem.components or ()) or 1
    cells = ny * nx * channels
    if method.name == "gp":
        memory = 3 * 8 * largest ** 2 + 8 * 1024 * largest
    elif method.name == "gp-physics":
        extra = int(method.solver_params.get("n_collocation", 400))
        memory = 3 * 8 * (largest + extra) ** 2
    elif method.name == "sparse-gp":
        m = int(method.solver_params.get("inducing", 512)) if np.ndim(method.solver_params.get("inducing", 512)) == 0 else 512
        memory = 8 * (4 * m * m + 4096 * m) + 24 * largest
    else:
        memory = 64 * 1024 * 1024
    region_size = int(recipe.get("region_size") or 1)
    per_index = cells if problem.leading_dim == "time" else nx * channels
    with_ref = 5 if recipe.get("reference") else 4
    return FieldPlan(
        dataset=dataset_name(recipe.get("input")), input=problem.input, output=recipe.get("output"),
        input_kind=problem.kind, n_slices=problem.n_leading, leading_dim=problem.leading_dim,
        grid_shape=(ny, nx), coord_units=problem.coord_units, units=problem.units, components=problem.components,
        n_observations=n_fit, n_held_out=n_held, method=method.name, method_params=method.resolved(),
        regions=plan_regions(problem.n_leading, region_size), global_fit=needs_global_fit(method, problem),
        estimated_memory_bytes=int(memory + 4 * 4 * region_size * per_index),
        estimated_storage_bytes=int(with_ref * 4 * problem.n_leading * per_index),
    )


def metric_names(recipe: dict[str, Any], plan: FieldPlan) -> tuple[str, ...]:
    """Per-time-step metrics (a static field's scores are run-level: see ``summarize_field``)."""
    if plan.leading_dim != "time":
        return ()
    names = ("rmse", "coverage") if recipe.get("reference") else ()
    per_step = (recipe.get("holdout") or {}).get("fraction") and not plan.global_fit
    holdout = ("holdout_rmse", "holdout_coverage") if per_step else ()
    return names + holdout


def field_provenance(recipe: dict[str, Any], recipe_digest: str, plan: FieldPlan) -> dict[str, Any]:
    from pathlib import Path

    from inversa.tasks.plan import code_version

    return {
        "kind": "field",
        "recipe": recipe,
        "recipe_digest": recipe_digest,
        "input": str(Path(recipe["input"]).resolve()) if not any(c in recipe["input"] for c in "*?[") else recipe["input"],
        "input_digest": field_input_digest(recipe["input"]),
        "reference": str(Path(recipe["reference"]).resolve()) if recipe.get("reference") else None,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "seed": int(recipe.get("seed", 0)),
        "method": plan.method,
        "method_params": plan.method_params,
        "input_kind": plan.input_kind,
        "units": plan.units,
        "observations": {"fitted": plan.n_observations, "held_out": plan.n_held_out},
        "holdout": recipe.get("holdout"),
        "fit": "once for all regions" if plan.global_fit else "per time step",
        "interval_kind": INTERVAL_KIND,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def field_input_digest(path: str) -> str:
    from pathlib import Path

    return input_digest(str(Path(path).parent) if any(c in path for c in "*?[") else path)


def create_field_store(recipe: dict[str, Any], recipe_digest: str, plan: FieldPlan, overwrite: bool) -> ResultStore:
    problem = load_field_problem(recipe)
    store = ResultStore.create(
        recipe["output"],
        n_slices=plan.n_slices,
        image_shape=plan.grid_shape,
        pixel_size_mm=float(abs(problem.xs[1] - problem.xs[0])) if len(problem.xs) > 1 else 1.0,
        region_size=int(recipe.get("region_size") or 1),
        provenance=field_provenance(recipe, recipe_digest, plan),
        credible_level=float(recipe.get("credible_level", 0.9)),
        n_samples=0,
        with_reference=bool(recipe.get("reference")),
        metric_names=metric_names(recipe, plan),
        slice_coord=problem.times,
        overwrite=overwrite,
        leading_dim=plan.leading_dim,
        x_coord=problem.xs,
        y_coord=problem.ys,
        coord_units=problem.coord_units,
        components=problem.components,
    )
    attrs = {"interval_kind": INTERVAL_KIND, "interval_definition": INTERVAL_DESCRIPTION, "units": problem.units}
    if any(store.attrs.get(k) != v for k, v in attrs.items()):
        store.update_attrs(attrs)
    return store


# ------------------------------------------------------------------------------ the one-off fit

def _global_points(problem: FieldProblem, method: FieldMethod) -> tuple[Points, Points]:
    if problem.times is not None:
        return problem.space_time()
    return problem.observations(None), problem.held_out(None)


def holdout_scores(model: FieldModel, held: Points, level: float) -> dict[str, float]:
    """Sums for pooled held-out RMSE and coverage (pooled over regions by the summary).

    A held-out value is a measurement, noise included, so it is scored against the predictive
    distribution of a new measurement: latent variance plus the observation-noise variance.
    """
    if held.n == 0:
        return {"holdout_n": 0, "holdout_values": 0, "holdout_sq_error": 0.0, "holdout_covered": 0}
    mean, std = model.predict(held)
    error = np.asarray(mean) - held.values
    half = interval_z(level) * np.sqrt(np.asarray(std) ** 2 + model.noise_variance())
    return {"holdout_n": held.n, "holdout_values": int(error.size), "holdout_sq_error": float(np.sum(error ** 2)),
            "holdout_covered": int(np.sum(np.abs(error) <= half))}


def ensure_fit(store_path: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """The store's one-off fit record: read it if a run already made it, else fit and save it."""
    store = ResultStore.open(store_path)
    record = store.read_meta_json(FIT_FILE)
    if record is not None:
        return record
    started = time.perf_counter()
    problem, method = load_field_problem(recipe), _method(recipe)
    points, held = _global_points(problem, method)
    model = FieldModel(method, problem).fit(points)
    state, arrays = model.state()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    store.write_meta_bytes(FIT_ARRAYS, payload)
    record = {
        "state": state,
        "arrays_sha256": hashlib.sha256(payload).hexdigest(),
        "info": model.info,
        "seconds": round(time.perf_counter() - started, 4),
        **holdout_scores(model, held, store.credible_level),
    }
    store.write_meta_json(FIT_FILE, record)
    return store.read_meta_json(FIT_FILE)


_models: dict[tuple, FieldModel] = {}
_models_lock = threading.Lock()


def fitted_model(store: ResultStore, recipe: dict[str, Any], problem: FieldProblem, method: FieldMethod) -> FieldModel:
    """The store's one-off fit as a model, rebuilt once per process (the exact GP's Cholesky of
    all observations is the expensive part; every region of the store in this process shares it)."""
    record = ensure_fit(str(store.path), recipe)
    key = (str(store.path.resolve()), record["arrays_sha256"], json.dumps(record["state"], sort_keys=True))
    with _models_lock:
        model = _models.get(key)
        if model is None:
            with np.load(store.meta_path(FIT_ARRAYS), allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            if hashlib.sha256(store.meta_path(FIT_ARRAYS).read_bytes()).hexdigest() != record["arrays_sha256"]:
                raise ValueError(f"{store.meta_path(FIT_ARRAYS)}: does not match {FIT_FILE} (sha256); "
                                 f"delete both files to refit")
            points, _ = _global_points(problem, method)
            model = FieldModel(method, problem).fit(points, record["state"], arrays)
            _models.clear()  # one store's model at a time: they can be large
            _models[key] = model
    return model


# ------------------------------------------------------------------------------ regions

def _scores(mean, lower, upper, ref) -> tuple[float, float]:
    finite = np.isfinite(mean) & np.isfinite(ref)
    if not finite.any():
        return float("nan"), float("nan")
    rmse = float(np.sqrt(np.mean((mean[finite] - ref[finite]) ** 2)))
    covered = float(np.mean((lower[finite] <= ref[finite]) & (ref[finite] <= upper[finite])))
    return rmse, covered


def reconstruct_field_region(store_path: str, index: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Predict region ``index`` of a field store and write it; returns its manifest record."""
    started = time.perf_counter()
    store = ResultStore.open(store_path)
    start, stop = store.regions[index]
    problem, method = load_field_problem(recipe), _method(recipe)
    level = store.credible_level
    info: dict[str, Any] = {"method": method.name}
    metrics: dict[str, list[float]] = {name: [] for name in store.metric_names}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe.get("seed", 0)))
        if needs_global_fit(method, problem):
            model = fitted_model(store, recipe, problem, method)
            if problem.leading_dim == "y":
                rows = None if problem.cell_mask is None else problem.cell_mask[start:stop]
                mean, std = model.predict_cells(problem.ys[start:stop], rows)
            else:
                mean, std = model.predict_cells(problem.ys, problem.cell_mask, problem.time_values()[start:stop])
            info["fit"] = "shared"
        else:
            means, stds, fits, sums = [], [], [], []
            for t in range(start, stop):
                model = FieldModel(method, problem).fit(problem.observations(t))
                m, s = model.predict_cells(problem.ys, problem.cell_mask)
                means.append(m)
                stds.append(s)
                fits.append(model.info)
                sums.append(holdout_scores(model, problem.held_out(t), level))
            mean, std = np.stack(means), np.stack(stds)
            info["fits"] = fits
            info.update({key: sum(s[key] for s in sums) for key in sums[0]})
            if "holdout_rmse" in metrics:
                for s in sums:
                    n = max(s["holdout_values"], 1)
                    metrics["holdout_rmse"].append(np.sqrt(s["holdout_sq_error"] / n) if s["holdout_n"] else np.nan)
                    metrics["holdout_coverage"].append(s["holdout_covered"] / n if s["holdout_n"] else np.nan)
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)  # NaN outside the mask
    lower, upper = gaussian_interval(mean, std, level)
    reference = problem.reference_block(start, stop)
    if reference is not None and "rmse" in metrics:
        for i in range(stop - start):
            rmse, covered = _scores(mean[i], lower[i], upper[i], reference[i])
            metrics["rmse"].append(rmse)
            metrics["coverage"].append(covered)
    info["seconds"] = round(time.perf_counter() - started, 4)
    store.write_region(
        index, mean=mean, std=std, lower=lower, upper=upper,
        reference=reference if store.has_reference else None,
        metrics={k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()} or None,
        info=info,
    )
    return {"index": index, "start": start, "stop": stop, "seconds": info["seconds"]}
