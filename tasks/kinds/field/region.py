"""One field region: predict a band of grid rows (or a block of time steps) and write it.

A static field's regions share the store's one-off fit (tasks/kinds/field/fit.py); a time
series whose solver fits one time step at a time fits each step of the region here, scoring
it on that step's held-out points. Intervals are ``mean -+ z * factor * std`` with the run's
calibration factor per cell (tasks/kinds/field/intervals.py), 1 with calibration off.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from inversa.data.store import ResultStore
from inversa.models.uq import coverage
from inversa.tasks.core.kind import RegionProgress
from inversa.tasks.kinds.field.fit import fitted_model, holdout_scores, method_of
from inversa.tasks.kinds.field.intervals import calibration_record, field_interval
from inversa.tasks.kinds.field.model import FieldModel
from inversa.tasks.kinds.field.problem import load_field_problem
from inversa.tasks.kinds.field.recipe import FieldRecipe


def _scores(mean, lower, upper, ref) -> tuple[float, float]:
    """RMSE and interval coverage against the reference over the cells where both are defined."""
    finite = np.isfinite(mean) & np.isfinite(ref)
    if not finite.any():
        return float("nan"), float("nan")
    rmse = float(np.sqrt(np.mean((mean[finite] - ref[finite]) ** 2)))
    return rmse, float(coverage(lower[finite], upper[finite], ref[finite]))


def reconstruct_region(store: ResultStore, index: int, recipe: FieldRecipe,
                       progress: RegionProgress | None = None) -> dict[str, Any]:
    """Predict region ``index`` of a field store and write it; returns its manifest record."""
    started = time.perf_counter()
    start, stop = store.regions[index]
    problem, method = load_field_problem(recipe), method_of(recipe)
    level = store.credible_level
    calibration = calibration_record(store, recipe)
    info: dict[str, Any] = {"method": method.name, "calibrated": calibration is not None}
    metrics: dict[str, list[float]] = {name: [] for name in store.metric_names}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = FieldModel(method, problem)
        if model.global_fit:
            model = fitted_model(store, recipe, problem)
            if problem.leading_dim == "y":
                rows = None if problem.cell_mask is None else problem.cell_mask[start:stop]
                mean, std = model.predict_cells(problem.ys[start:stop], rows)
            else:
                mean, std = model.predict_cells(problem.ys, problem.cell_mask, problem.time_values()[start:stop])
            lower, upper = field_interval(mean, std, model.noise_variance(), level, calibration)
            info["fit"] = "shared"
        else:
            means, stds, lowers, uppers, fits, sums = [], [], [], [], [], []
            for t in range(start, stop):
                model = FieldModel(method, problem).fit(problem.observations(t))
                m, s = model.predict_cells(problem.ys, problem.cell_mask)
                lo, hi = field_interval(m, s, model.noise_variance(), level, calibration)
                means.append(m)
                stds.append(s)
                lowers.append(lo)
                uppers.append(hi)
                fits.append(model.info)
                sums.append(holdout_scores(model, problem.held_out(t), level, calibration))
                if progress is not None:
                    progress((t + 1 - start) / (stop - start))
            mean, std, lower, upper = np.stack(means), np.stack(stds), np.stack(lowers), np.stack(uppers)
            info["fits"] = fits
            info.update({key: sum(s[key] for s in sums) for key in sums[0]})
            if "holdout_rmse" in metrics:
                for s in sums:
                    n = max(s["holdout_values"], 1)
                    metrics["holdout_rmse"].append(np.sqrt(s["holdout_sq_error"] / n) if s["holdout_n"] else np.nan)
                    metrics["holdout_coverage"].append(s["holdout_covered"] / n if s["holdout_n"] else np.nan)
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)  # NaN outside the mask
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
