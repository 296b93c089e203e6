"""Run-level scores of a field store and its preview for the UI.

Scores are pooled, not averaged: the RMSE against a reference is over every cell of every time
step, the held-out RMSE over every withheld point (from the one-off fit's record, or summed from
the regions' records), and coverage is the fraction of those values inside the credible interval
(calibrated where the run calibrates; ``holdout_coverage_uncalibrated`` without the factor). The
calibration's own numbers (factor, units, coverage of its withheld blocks before and after) come
from its record.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inversa.data.store import ResultStore
from inversa.models.uq import coverage
from inversa.tasks.core.calibration import CALIBRATION_FILE
from inversa.tasks.core.kind import Preview
from inversa.tasks.core.panels import store_preview
from inversa.tasks.kinds.field.fit import FIT_FILE, HOLDOUT_KEYS


def summarize(store: ResultStore) -> dict[str, Any]:
    ds = store.to_xarray()
    layout = store.layout
    summary: dict[str, Any] = {layout.leading_dim if layout.leading_dim != "y" else "rows": int(layout.n_slices)}
    mean = np.asarray(ds["mean"].values, dtype=np.float64)
    std = np.asarray(ds["std"].values, dtype=np.float64)
    summary["cells"] = int(np.isfinite(mean).sum())
    summary["mean_std"] = float(np.nanmean(std)) if np.isfinite(std).any() else math.nan
    if store.has_reference:
        ref = np.asarray(ds["reference"].values, dtype=np.float64)
        lower, upper = (np.asarray(ds[n].values, dtype=np.float64) for n in ("lower", "upper"))
        finite = np.isfinite(mean) & np.isfinite(ref)
        if finite.any():
            err = mean[finite] - ref[finite]
            summary["rmse"] = float(np.sqrt(np.mean(err ** 2)))
            summary["relative_rmse"] = summary["rmse"] / (float(np.std(ref[finite])) or 1.0)
            summary["coverage"] = coverage(lower[finite], upper[finite], ref[finite])
    records = [store.region_record(i) for i in sorted(store.done_regions())]
    fit = store.read_meta_json(FIT_FILE)
    sources = [fit] if fit is not None else [r.get("info", {}) for r in records]
    totals = {key: sum(s.get(key, 0) for s in sources) for key in HOLDOUT_KEYS}
    if totals["holdout_n"]:
        values = totals["holdout_values"] or totals["holdout_n"]  # vectors: every component counts
        summary["holdout_points"] = int(totals["holdout_n"])
        summary["holdout_rmse"] = math.sqrt(totals["holdout_sq_error"] / values)
        summary["holdout_coverage"] = totals["holdout_covered"] / values
        if any("holdout_covered_uncalibrated" in source for source in sources):
            summary["holdout_coverage_uncalibrated"] = totals["holdout_covered_uncalibrated"] / values
    calibration = store.read_meta_json(CALIBRATION_FILE)
    if calibration is not None:
        summary["interval_scale"] = calibration["scale"]
        summary["calibration_units"] = calibration["units"]
        summary["calibration_coverage_before"] = calibration["coverage_before"]
        summary["calibration_coverage_after"] = calibration["coverage_after"]
    if fit is not None:
        summary["fit_seconds"] = float(fit.get("seconds", 0.0))
        for solver in fit.get("info", {}).get("solvers", []):
            if "parameter" in solver and "parameter_mean" in solver:
                summary[f"{solver['parameter']}_mean"] = solver["parameter_mean"]
                summary[f"{solver['parameter']}_std"] = solver["parameter_std"]
    summary["seconds"] = float(sum(r.get("info", {}).get("seconds", 0.0) for r in records)) + summary.get("fit_seconds", 0.0)
    summary["regions"] = len(store.regions)
    summary["regions_done"] = len(records)
    return summary


def preview(store: ResultStore, index: int = 0) -> Preview:
    """Time step ``index`` (the whole field when static, index 0) over the field's coordinates,
    north up: mean, std, and with a reference the error and where it falls outside the interval
    (a vector field: its speed and the length of the error vector); tasks/core/panels.py draws
    every kind's stores this way."""
    return store_preview(store, index)
