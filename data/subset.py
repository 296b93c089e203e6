"""Limited-angle and sparse-view subsets of a CT measurement.

The HTC2022 task is reconstruction from a contiguous wedge of views; these functions make such
subsets from a full scan and record what they did, so a result can be traced to its views.

Angle convention for wedges: ``start_angle_deg`` and the wedge are measured from the *first view*
of the measurement, in the direction the scan goes (increasing or decreasing angles). So
"start 0, range 90" always means the first quarter turn of the acquisition, whatever the sign
convention a reader applied. The end point is included: HTC2022's 90-degree wedges at 0.5 degree
steps have 181 views.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidMeasurement
from inversa.data.schema import validate_ct

# Angles within this many degrees of the wedge's end count as inside (float round-off).
_END_TOL_DEG = 1e-6


def _record(ds: xr.Dataset, note: str) -> xr.Dataset:
    previous = ds.attrs.get("subset")
    ds.attrs["subset"] = f"{previous}; {note}" if previous else note
    return ds


def angular_wedge(ds: xr.Dataset, angular_range_deg: float, start_angle_deg: float = 0.0) -> xr.Dataset:
    """Keep the views whose offset from the first view lies in ``[start, start + range]`` (degrees).

    Offsets are taken modulo 360, so a wedge may wrap past the end of a full turn; the views are
    then reordered to follow the wedge and their angles shifted by whole turns so they stay
    monotonic (the same physical views).
    """
    source = ds.attrs.get("source")
    ds = validate_ct(ds, source=source)
    rng = float(angular_range_deg)
    if not (math.isfinite(rng) and 0 < rng <= 360):
        raise InvalidMeasurement(source, "angular_range_deg", "a wedge width in (0, 360] degrees", repr(angular_range_deg))
    start = float(start_angle_deg)
    if not math.isfinite(start):
        raise InvalidMeasurement(source, "start_angle_deg", "a finite angle in degrees", repr(start_angle_deg))
    angles = ds["angle"].values
    direction = 1.0 if angles.size < 2 or angles[1] > angles[0] else -1.0
    raw_offset = direction * np.rad2deg(angles - angles[0])
    start_mod = start % 360.0
    within = (raw_offset - start_mod) % 360.0
    within = np.where(within > 360.0 - _END_TOL_DEG, within - 360.0, within)  # round-off below start
    keep = np.flatnonzero(within <= rng + _END_TOL_DEG)
    if keep.size == 0:
        raise InvalidMeasurement(
            source, "angle", f"at least one view within {rng} degrees of {start} degrees from the first view",
            "no view in that wedge",
        )
    order = keep[np.argsort(within[keep], kind="stable")]
    # Drop views that repeat a direction already in the wedge (scans longer than one turn).
    _, first = np.unique(np.round(within[order], 6), return_index=True)
    order = order[np.sort(first)]
    turns = np.round((start_mod + within[order] - raw_offset[order]) / 360.0)
    new_angles = angles[order] + direction * 2.0 * np.pi * turns
    out = ds.isel(angle=order).assign_coords(angle=("angle", new_angles, ds["angle"].attrs))
    out.attrs = dict(ds.attrs)
    note = (f"angular_wedge(range={rng:g} deg, start={start:g} deg from the first view): "
            f"{order.size} of {angles.size} views")
    return validate_ct(_record(out, note), source=source)


def every_kth_view(ds: xr.Dataset, k: int) -> xr.Dataset:
    """Keep views 0, k, 2k, ... (sparse-view subset)."""
    source = ds.attrs.get("source")
    ds = validate_ct(ds, source=source)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidMeasurement(source, "k", "a positive integer step between kept views", repr(k))
    n = ds.sizes["angle"]
    out = ds.isel(angle=slice(None, None, int(k)))
    out.attrs = dict(ds.attrs)
    return validate_ct(_record(out, f"every_kth_view(k={int(k)}): {out.sizes['angle']} of {n} views"), source=source)
