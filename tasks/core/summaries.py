"""Run-level metrics and previews of image stores, shared by the kinds whose regions are slices.

CT and MRI stores hold one image per slice with per-slice metrics; their summaries (metrics
averaged over slices, compute seconds and NFE summed over regions, the calibration's numbers)
and their previews (mean, std, error against the reference) are the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inversa.data.store import ResultStore
from inversa.tasks.core.calibration import calibration_summary
from inversa.tasks.core.kind import Preview
from inversa.tasks.core.panels import store_preview


def slice_summary(store: ResultStore) -> dict[str, Any]:
    """Per-slice metrics averaged, seconds and NFE summed over regions, and the calibration's numbers."""
    ds = store.to_xarray()
    summary: dict[str, Any] = {"slices": int(ds.sizes["slice"])}
    for name in ds.data_vars:
        if str(name).startswith("metric_"):
            values = np.asarray(ds[name].values, dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary[str(name)[len("metric_"):]] = float(finite.mean()) if finite.size else math.nan
    records = [store.region_record(i) for i in sorted(store.done_regions())]
    summary["seconds"] = float(sum(r.get("info", {}).get("seconds", 0.0) for r in records))
    summary["nfe"] = int(sum(r.get("info", {}).get("nfe", 0) for r in records))
    residuals = [r["info"]["solver_max_relative_residual"] for r in records
                 if "solver_max_relative_residual" in r.get("info", {})]
    if residuals:
        summary["solver_max_relative_residual"] = float(max(residuals))
    summary["regions"] = len(store.regions)
    summary["regions_done"] = len(records)
    return {**summary, **calibration_summary(store)}


def slice_preview(store: ResultStore, index: int = 0, what: str = "") -> Preview:
    """Slice ``index``: mean, std (where the method has one), and where there is a reference
    |mean - reference| and where it falls outside the interval (tasks/core/panels.py); ``what``
    names the image in the caption (", magnitude")."""
    return store_preview(store, index, what)
