"""A store's posterior as preview panels, for any kind whose store holds the standard variables.

Every result store holds ``mean``, ``std``, ``lower`` and ``upper`` over ``(slice|time, y, x)``
or ``(y, x)`` (a trailing ``component`` for a vector field) and, when the run had one, a
``reference`` (docs: the data model in DESIGN.md). So what a reader needs to judge a result is
the same for every kind: the mean; the std; where a reference exists, the error
``|mean - reference|`` and where the reference falls outside the stored interval, with the
fraction outside in the title (the honest number to set against the nominal level). The std and
the error share one colour scale, so an error much larger than the std shows as such.

How to draw follows from the store too, never from the kind's name: a store with explicit
cell-centre coordinates (a field on a physical grid) is a map, drawn north up over its
coordinates with a colour map for quantities (``viridis``, or diverging ``RdBu_r`` when the values
straddle zero); a store on a pixel grid (CT, MRI slices) is an image, drawn in grey as stored,
row 0 at the top, without axes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inversa.data.figures import robust_limits
from inversa.data.store import ResultStore
from inversa.tasks.core.kind import Panel, Preview

OUTSIDE_TICKS = (0.0, 1.0)
OUTSIDE_TICK_LABELS = ("inside", "outside")


def store_preview(store: ResultStore, index: int = 0, what: str = "") -> Preview:
    """Index ``index`` along the store's region axis (a slice, a time step; the only image of a
    static field, index 0): mean, std where the method has one, and with a reference the error
    and the outside-the-interval map. ``what`` names the image in the caption (", magnitude")."""
    layout = store.layout
    lead = layout.leading_dim
    ds = store.to_xarray()
    if lead == "y":
        if index != 0:
            raise ValueError(f"{store.path}: a static field has one image; index {index}: expected 0")
        where, caption = "", "The field"
    else:
        n = layout.n_slices
        if not 0 <= index < n:
            word = "slice" if lead == "slice" else "time index"
            raise ValueError(f"{store.path}: {word} {index}: expected 0..{n - 1}")
        ds = ds.isel({lead: index})
        label = _label(ds[lead].values) if lead in ds.coords else str(index)
        where = f"{lead} {label}"
        caption = f"Slice {label}" if lead == "slice" else f"Time step {index} ({label})"
    _require_computed(store, index, lead)
    names = [n for n in ("mean", "std", "lower", "upper", "reference") if n in ds]
    arrays = {n: np.asarray(ds[n].values, dtype=np.float64) for n in names}
    is_map = layout.x_coord is not None
    ys, xs = np.asarray(ds["y"].values, dtype=np.float64), np.asarray(ds["x"].values, dtype=np.float64)
    flip = is_map and len(ys) > 1 and ys[0] < ys[-1]
    up = (lambda a: a[::-1]) if flip else (lambda a: a)  # noqa: E731 - row 0 is the northmost row
    units = str(store.attrs.get("units") or "")
    segmentation = store.attrs.get("reference_kind") == "segmentation"
    panels = _panels(arrays, layout.components, store.credible_level, units, is_map, up, segmentation)
    method = store.provenance.get("method")
    title = ", ".join(str(p) for p in (where, method) if p)
    hints: dict[str, Any] = {}
    if is_map:
        coord_units = layout.coord_units
        hints = {"extent": _extent(xs, ys), "xlabel": f"x ({coord_units})", "ylabel": f"y ({coord_units})",
                 "aspect": _aspect(coord_units, ys)}
        caption += ", north up"
    caption += what
    if any(p.label == "std" or p.label.startswith("std of") for p in panels) and store.has_reference \
            and not segmentation:
        caption += "; std and error share one colour scale"
    return Preview(panels, caption, title=title, **hints)


def _require_computed(store: ResultStore, index: int, lead: str) -> None:
    """Refuse to draw an image whose region is not written yet: its arrays hold the store's fill
    value, and a blank figure with a colour bar reads as a result."""
    regions = store.regions
    needed = range(len(regions)) if lead == "y" else [i for i, (a, b) in enumerate(regions) if a <= index < b]
    missing = [i for i in needed if i not in store.done_regions()]
    if missing:
        done = len(store.done_regions())
        what = "the field" if lead == "y" else f"{lead} {index}"
        raise ValueError(f"{store.path}: {what} is not computed yet (region {missing[0]} pending; {done} of "
                         f"{len(regions)} regions done): rerun the recipe, or wait for the run to reach it")


def _panels(arrays: dict[str, np.ndarray], components: tuple[str, ...] | None, level: float, units: str,
            is_map: bool, up, segmentation: bool = False) -> list[Panel]:
    """``segmentation``: the reference is a binary mask (HTC2022's, scored by MCC), not an image in
    the mean's units, so it is drawn beside the mean instead of subtracted from it."""
    mean, std = arrays["mean"], arrays["std"]
    reference = arrays.get("reference")
    if segmentation and reference is not None:
        panels = [_mean_panel(up(mean), "mean", units, is_map)]
        if np.isfinite(std).any():
            panels.append(Panel(up(std), "std", units, "magma", 0.0, robust_limits(std)[1]))
        panels.append(Panel(up((reference > 0).astype(np.float64)), "reference segmentation", "", "gray", 0.0, 1.0))
        return panels
    if components:  # a vector field: its speed, the std of its first component, the error's length
        error = None if reference is None else np.sqrt(np.sum((mean - reference) ** 2, axis=-1))
        mean, std = np.sqrt(np.sum(mean ** 2, axis=-1)), std[..., 0]
        mean_label, std_label = "mean speed", f"std of {components[0]}"
    else:
        error = None if reference is None else np.abs(mean - reference)
        mean_label, std_label = "mean", "std"
    panels = [_mean_panel(up(mean), mean_label, units, is_map)]
    has_std = bool(np.isfinite(std).any())
    spread_max = max([robust_limits(a)[1] for a in (std, error) if a is not None and np.isfinite(a).any()] or [1.0])
    if has_std:
        panels.append(Panel(up(std), std_label, units, "magma", 0.0, spread_max))
    if error is not None:
        panels.append(Panel(up(error), "|mean - reference|", units, "magma", 0.0, spread_max))
        outside = outside_map(arrays["lower"], arrays["upper"], reference)
        if outside is not None:
            fraction = float(np.nanmean(outside))
            panels.append(Panel(up(outside), f"outside {100 * level:.3g}% interval: {fraction:.1%}", "", "Reds",
                                0.0, 1.0, OUTSIDE_TICKS, OUTSIDE_TICK_LABELS))
    return panels


def outside_map(lower: np.ndarray, upper: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """1 where the reference lies outside [lower, upper], 0 inside, NaN where any is missing; for
    a vector field (trailing component axis) the fraction of components outside. Its mean over the
    finite cells is the fraction of values outside. None when no interval was stored."""
    finite = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(reference)
    if not finite.any():
        return None
    outside = np.where(finite, (reference < lower) | (reference > upper), np.nan).astype(np.float64)
    if outside.ndim == 3:
        counted = finite.sum(axis=-1)
        outside = np.where(counted > 0, np.nansum(outside, axis=-1) / np.maximum(counted, 1), np.nan)
    return outside


def _mean_panel(mean: np.ndarray, label: str, units: str, is_map: bool) -> Panel:
    lo, hi = robust_limits(mean)
    if not is_map:
        return Panel(mean, label, units, "gray", lo, hi)
    if lo < 0 < hi and min(-lo, hi) > 0.2 * max(-lo, hi):  # signed values: zero in the middle, white
        bound = max(-lo, hi)
        return Panel(mean, label, units, "RdBu_r", -bound, bound)
    return Panel(mean, label, units, "viridis", lo, hi)


def _edges(centres: np.ndarray) -> tuple[float, float]:
    """The outer cell edges of a row of cell centres (half a spacing beyond the first and last)."""
    if len(centres) < 2:
        return float(centres[0]) - 0.5, float(centres[0]) + 0.5
    return (float(centres[0] - (centres[1] - centres[0]) / 2), float(centres[-1] + (centres[-1] - centres[-2]) / 2))


def _extent(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    left, right = _edges(xs)
    y0, y1 = _edges(ys)
    return left, right, min(y0, y1), max(y0, y1)


def _aspect(coord_units: str, ys: np.ndarray) -> str | float:
    """Equal lengths on both axes; for degrees (x longitude, y latitude) a degree of longitude is
    shorter by cos(latitude), so the y unit is drawn 1 / cos(mid-latitude) times as tall."""
    if coord_units.lower().startswith("deg"):
        mid = float(np.clip(np.nanmean(ys), -85.0, 85.0))
        return 1.0 / math.cos(math.radians(mid))
    return "equal"


def _label(value: Any) -> str:
    """A slice or time label as a person writes it (dates without midnight's zeros)."""
    value = np.asarray(value)
    if value.dtype.kind == "M":
        text = np.datetime_as_string(value, unit="s")
        return text[:-9] if text.endswith("T00:00:00") else text.replace("T", " ")
    item = value.item()
    return f"{item:g}" if isinstance(item, float) else str(item)
