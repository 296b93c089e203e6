"""A field store's one-off fit: run once, saved in the store, rebuilt once per process.

When one fit serves every region (a static field cut into row bands; a space-time PINN cut into
time blocks), ``ensure_fit`` runs it and saves it in the store's private directory
(``_inversa/field_fit.json`` plus ``field_fit.npz``, arrays first and the JSON last, both
atomically, so a crash leaves no half fit). Regions rebuild the model from it, once per process.
Held-out scores of such a fit are computed with it and kept in the same record: with the
calibrated interval when the run calibrates (so the calibration record must exist first; the
kind's prepare step makes it before the fit), and without, for comparison.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from typing import Any

import numpy as np
import torch

from inversa.data.store import ResultStore
from inversa.models.solvers import SolverState
from inversa.models.uq import interval_z
from inversa.tasks.kinds.field.intervals import calibration_record, interval_factor, predictive_std
from inversa.tasks.kinds.field.methods import FieldMethod, field_method, takes_device
from inversa.tasks.core.devices import resolve_device
from inversa.tasks.kinds.field.model import FieldModel
from inversa.tasks.kinds.field.problem import FieldProblem, Points, load_field_problem
from inversa.tasks.kinds.field.recipe import FieldRecipe

FIT_FILE = "field_fit.json"
FIT_ARRAYS = "field_fit.npz"
HOLDOUT_KEYS = ("holdout_n", "holdout_values", "holdout_sq_error", "holdout_covered", "holdout_covered_uncalibrated")


def solver_device(recipe: FieldRecipe) -> str:
    """Where the solver runs: ``method.params.device`` when the recipe sets it, else the recipe's
    ``device`` (``auto``: a GPU when there is one). What the run claims (the ``gpu`` tag, the
    ``inversa-gpu`` slot, a Dask GPU) follows this, so a CPU solver never holds a GPU."""
    given = recipe.method.params.get("device")
    if given is not None:
        return str(given)
    return str(resolve_device(recipe.device)) if takes_device(recipe.method.name) else "cpu"


def method_of(recipe: FieldRecipe) -> FieldMethod:
    params = dict(recipe.method.params)
    if takes_device(recipe.method.name):
        params.setdefault("device", solver_device(recipe))
    return field_method(recipe.method.name, params)


def global_points(problem: FieldProblem) -> tuple[Points, Points]:
    """(observations, held out) of the one fit: every time step at once for a time series."""
    if problem.times is not None:
        return problem.space_time()
    return problem.observations(None), problem.held_out(None)


def holdout_scores(model: FieldModel, held: Points, level: float,
                   calibration: dict[str, Any] | None = None) -> dict[str, float]:
    """Sums for pooled held-out RMSE and coverage (pooled over regions by the summary).

    A held-out value is a measurement, noise included, so it is scored against the predictive
    distribution of a new measurement: latent variance plus the observation-noise variance, its
    half-width scaled by the ``calibration`` factor (tasks/kinds/field/intervals.py);
    ``holdout_covered_uncalibrated`` counts the same without the factor.
    """
    if held.n == 0:
        return {key: 0 for key in HOLDOUT_KEYS} | {"holdout_sq_error": 0.0}
    mean, std = model.predict(held)
    error = np.abs(np.asarray(mean) - held.values)
    noise = model.noise_variance()
    half = interval_z(level) * predictive_std(std, noise)
    factor = interval_factor(calibration, std, noise)
    return {"holdout_n": held.n, "holdout_values": int(error.size), "holdout_sq_error": float(np.sum(error ** 2)),
            "holdout_covered": int(np.sum(error <= half * factor)),
            "holdout_covered_uncalibrated": int(np.sum(error <= half))}


def ensure_fit(store: ResultStore, recipe: FieldRecipe) -> dict[str, Any]:
    """The store's one-off fit record: read it if a run already made it, else fit and save it."""
    record = store.read_meta_json(FIT_FILE)
    if record is not None:
        return record
    started = time.perf_counter()
    calibration = calibration_record(store, recipe)
    problem = load_field_problem(recipe)
    points, held = global_points(problem)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = FieldModel(method_of(recipe), problem).fit(points)
    state = model.state()
    buffer = io.BytesIO()
    np.savez(buffer, **state.arrays)
    payload = buffer.getvalue()
    store.write_meta_bytes(FIT_ARRAYS, payload)
    record = {
        "state": state.meta,
        "arrays_sha256": hashlib.sha256(payload).hexdigest(),
        "info": model.info,
        "seconds": round(time.perf_counter() - started, 4),
        **holdout_scores(model, held, store.credible_level, calibration),
    }
    store.write_meta_json(FIT_FILE, record)
    return store.read_meta_json(FIT_FILE)


_models: dict[tuple, FieldModel] = {}
_models_lock = threading.Lock()


def fitted_model(store: ResultStore, recipe: FieldRecipe, problem: FieldProblem) -> FieldModel:
    """The store's one-off fit as a model, rebuilt once per process (the exact GP's Cholesky of
    all observations is the expensive part; every region of the store in this process shares it)."""
    record = ensure_fit(store, recipe)
    key = (str(store.path.resolve()), record["arrays_sha256"], json.dumps(record["state"], sort_keys=True))
    with _models_lock:
        model = _models.get(key)
        if model is None:
            payload = store.meta_path(FIT_ARRAYS).read_bytes()
            if hashlib.sha256(payload).hexdigest() != record["arrays_sha256"]:
                raise ValueError(f"{store.meta_path(FIT_ARRAYS)}: does not match {FIT_FILE} (sha256); "
                                 f"delete both files to refit")
            with np.load(io.BytesIO(payload), allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            points, _ = global_points(problem)
            model = FieldModel(method_of(recipe), problem).fit(points, SolverState(record["state"], arrays))
            _models.clear()  # one store's model at a time: they can be large
            _models[key] = model
    return model
