"""The field-observation schema of DESIGN.md, its validators, and the target grid of a recipe.

Field measurements come in two shapes, and every reader ends in one of the two validators so
that no solver ever sees unchecked coordinates or silently mis-handled gaps:

Scattered (``validate_field_observations``)
    ``value(sensor)``, ``value(time, sensor)``; a vector field (PIV u, v; GPS east, north) adds a
    trailing ``component`` dim: ``value(sensor, component)`` or ``value(time, sensor, component)``.
    Coords ``x(sensor)``, ``y(sensor)`` with ``attrs["units"]`` ``"m"`` or ``"mm"`` (projected
    longitude/latitude are metres, see data/projection.py); optional ``time(time)``.
    ``attrs["units"]`` is the unit of ``value``.

    Missing values: NaN means "not observed". Without a ``time`` dim a sensor with any NaN
    value is *dropped* (its count goes to ``attrs["n_dropped"]``). With a ``time`` dim a sensor is
    dropped only when it has no finite value at any time; the remaining NaNs stay and a boolean
    ``mask`` with the dims of ``value`` (True = observed) is added. Infinite values are errors:
    they are never a missing-value marker.

    Duplicate coordinates (two sensors at the same x, y) raise ``DuplicateCoordinates`` by
    default; ``duplicates="mean"`` instead averages the values observed there (documented
    choice for files such as the Southern Africa gravity stations, where 34 rows repeat a
    station), recording ``attrs["n_merged"]``.

Gridded (``validate_gridded_field``)
    One or more field variables ``NAME(y, x)`` or ``NAME(time, y, x)`` (``value`` for a scalar
    field; ``u``, ``v`` for PIV) with strictly monotonic 1D coords ``x``, ``y`` (either
    direction, units kept from the input: m, mm or degrees for a lat/lon grid), and a boolean
    ``mask(y, x)`` or ``mask(time, y, x)``, True = observed/valid. When the input has no mask it
    is derived from NaN (missing values); values where the mask is False are set to NaN so
    that nothing downstream uses them by accident.

    Gaps versus land: ``mask`` says what was *observed*, not what belongs to the field. A cell
    missing at every time step is still a gap to fill. Only an optional boolean ``domain(y, x)``
    (True = part of the field; readers derive it from an explicit land-sea mask, see
    data/readers/field_grid.py) marks cells outside the field: they are never observed (values
    there are dropped, their count kept in ``attrs["n_outside_domain"]``) and never predicted.

The target grid (``FieldGrid``) is a regular grid of cell centres built from the recipe's
``grid:`` section, with an optional convex-hull mask of the observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import xarray as xr

from inversa.data.errors import (
    DuplicateCoordinates,
    InvalidGrid,
    InvalidMeasurement,
    NonFiniteValues,
    OutsideGrid,
    ShapeMismatch,
)

VALUE = "value"
MASK = "mask"
DOMAIN = "domain"
SENSOR = "sensor"
COMPONENT = "component"
TIME = "time"
COORD_UNITS = ("m", "mm")
SCATTERED_DIMS = ((SENSOR,), (TIME, SENSOR), (SENSOR, COMPONENT), (TIME, SENSOR, COMPONENT))
GRIDDED_DIMS = (("y", "x"), (TIME, "y", "x"))
DUPLICATE_POLICIES = ("error", "mean")


def _require_units(attrs: Mapping[str, Any], source, name: str, allowed=None) -> str:
    units = attrs.get("units")
    expected = f"attrs['units'] one of {allowed}" if allowed else "attrs['units'] (a string; '1' if dimensionless)"
    if not isinstance(units, str) or not units or (allowed and units not in allowed):
        raise InvalidMeasurement(source, name, expected, repr(units))
    return units


def _numeric(da: xr.DataArray, source, name: str) -> np.ndarray:
    if not (np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.bool_)) or np.issubdtype(
        da.dtype, np.complexfloating
    ):
        raise InvalidMeasurement(source, name, "real numbers", f"dtype {da.dtype}")
    return np.asarray(da.values, dtype=np.float64)


def _finite_coordinate(ds: xr.Dataset, name: str, dim: str, source) -> np.ndarray:
    if name not in ds.coords and name not in ds.data_vars:
        raise InvalidMeasurement(source, name, f"a coordinate {name!r} along {dim!r}", "none")
    da = ds[name]
    if da.dims != (dim,):
        raise ShapeMismatch(source, name, f"a 1D coordinate with dims ({dim!r},)", f"dims {da.dims}")
    values = _numeric(da, source, name)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.argmax(bad))
        raise NonFiniteValues(
            source, name, "finite coordinates", f"{int(bad.sum())} non-finite, first at {dim} index {first}"
        )
    return values


def _other_coords(ds: xr.Dataset, dims) -> dict:
    """Coordinates besides x, y that still fit the field's dims (time, component, lon/lat, ...)."""
    return {
        name: ds.coords[name]
        for name in ds.coords
        if name not in ("x", "y") and set(ds.coords[name].dims) <= set(dims)
    }


def _check_no_inf(values: np.ndarray, source, name: str) -> None:
    inf = np.isinf(values)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise NonFiniteValues(
            source, name, "finite values or NaN for missing", f"{int(inf.sum())} infinite, first at index {where}"
        )


def _merge_duplicates(ds: xr.Dataset, x: np.ndarray, y: np.ndarray, source, policy: str) -> xr.Dataset:
    """Raise on sensors that share (x, y), or average them when ``policy == 'mean'``."""
    pairs = np.stack([x, y], axis=1)
    _, first, inverse, counts = np.unique(pairs, axis=0, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n_extra = int(x.size - first.size)
    if n_extra == 0:
        return ds
    if policy == "error":
        group = int(np.argmax(counts > 1))
        members = np.flatnonzero(inverse == group)
        raise DuplicateCoordinates(
            source,
            "x, y",
            "one sensor per (x, y) (or duplicates='mean' to average them)",
            f"{n_extra} duplicate sensors, e.g. sensor indices {members.tolist()} at "
            f"x={float(pairs[members[0], 0])!r}, y={float(pairs[members[0], 1])!r}",
        )
    # Average values per unique location (NaN-aware, so a missing repeat does not erase the other).
    order = np.sort(first)
    group_of_position = np.empty(first.size, dtype=np.int64)
    group_of_position[np.argsort(first)] = np.arange(first.size)  # unique group -> output position
    value = ds[VALUE].transpose(SENSOR, ...).values
    sums = np.zeros((first.size,) + value.shape[1:])
    n = np.zeros_like(sums)
    finite = np.isfinite(value)
    np.add.at(sums, group_of_position[inverse], np.where(finite, value, 0.0))
    np.add.at(n, group_of_position[inverse], finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    out = ds.isel({SENSOR: order})
    other_dims = [d for d in ds[VALUE].dims if d != SENSOR]
    out[VALUE] = ((SENSOR, *other_dims), merged)
    out[VALUE] = out[VALUE].transpose(*ds[VALUE].dims)
    out.attrs["n_merged"] = int(out.attrs.get("n_merged", 0)) + n_extra
    return out


def validate_field_observations(ds: xr.Dataset, source=None, duplicates: str = "error") -> xr.Dataset:
    """Check scattered observations and return them in canonical form (float64, gaps handled).

    ``source`` names the file in errors. ``duplicates``: ``"error"`` (default) or ``"mean"``.
    See the module docstring for the NaN policy.
    """
    if not isinstance(ds, xr.Dataset):
        raise InvalidMeasurement(source, VALUE, "an xarray.Dataset", type(ds).__name__)
    if duplicates not in DUPLICATE_POLICIES:
        raise InvalidMeasurement(source, "duplicates", f"one of {DUPLICATE_POLICIES}", repr(duplicates))
    if VALUE not in ds.data_vars:
        raise InvalidMeasurement(source, VALUE, "a data variable 'value'", f"variables {sorted(ds.data_vars)}")
    da = ds[VALUE]
    if da.dims not in SCATTERED_DIMS:
        raise ShapeMismatch(source, VALUE, f"dims one of {SCATTERED_DIMS}", f"dims {da.dims}")
    if da.sizes[SENSOR] == 0:
        raise ShapeMismatch(source, VALUE, "at least one sensor", "0 sensors")
    values = _numeric(da, source, VALUE)
    _check_no_inf(values, source, VALUE)
    units = _require_units(ds.attrs, source, "units (of value)")
    x = _finite_coordinate(ds, "x", SENSOR, source)
    y = _finite_coordinate(ds, "y", SENSOR, source)
    coord_units = _require_units(ds["x"].attrs, source, "x", COORD_UNITS)
    if _require_units(ds["y"].attrs, source, "y", COORD_UNITS) != coord_units:
        raise InvalidMeasurement(source, "y", f"the same units as x ({coord_units!r})", repr(ds["y"].attrs["units"]))
    if TIME in ds.coords and not np.issubdtype(ds[TIME].dtype, np.datetime64):
        _numeric(ds[TIME], source, TIME)

    out = xr.Dataset(
        {VALUE: (da.dims, values, dict(da.attrs))},
        coords={
            "x": (SENSOR, x, dict(ds["x"].attrs)),
            "y": (SENSOR, y, dict(ds["y"].attrs)),
            **_other_coords(ds, da.dims),
        },
        attrs=dict(ds.attrs),
    )
    out = _merge_duplicates(out, x, y, source, duplicates)

    finite = np.isfinite(out[VALUE].transpose(SENSOR, ...).values)
    per_sensor = finite.reshape(finite.shape[0], -1)
    if not per_sensor.any():
        raise NonFiniteValues(source, VALUE, "at least one finite value", "all values are NaN")
    keep = per_sensor.any(axis=1) if TIME in da.dims else per_sensor.all(axis=1)
    n_dropped = int((~keep).sum())
    if n_dropped:
        out = out.isel({SENSOR: np.flatnonzero(keep)})
    out.attrs["n_dropped"] = int(out.attrs.get("n_dropped", 0)) + n_dropped
    out.attrs["units"] = units
    if TIME in da.dims:
        out[MASK] = (out[VALUE].dims, np.isfinite(out[VALUE].values))
    elif MASK in out:
        out = out.drop_vars(MASK)
    return out


def _monotonic_axis(ds: xr.Dataset, name: str, source) -> np.ndarray:
    values = _finite_coordinate(ds, name, name, source)
    if values.size == 0:
        raise ShapeMismatch(source, name, f"at least one {name} coordinate", "0")
    steps = np.diff(values)
    if values.size > 1 and not ((steps > 0).all() or (steps < 0).all()):
        raise InvalidMeasurement(
            source, name, "strictly monotonic coordinates (no repeats)", f"{values[:6].tolist()}..."
        )
    return values


def validate_gridded_field(ds: xr.Dataset, source=None) -> xr.Dataset:
    """Check a gridded field and return it with a boolean ``mask`` (True = observed).

    Every data variable other than ``mask`` and ``domain`` is a field variable. See the module docstring for
    dims, coordinates and how the mask is derived when absent.
    """
    if not isinstance(ds, xr.Dataset):
        raise InvalidMeasurement(source, VALUE, "an xarray.Dataset", type(ds).__name__)
    names = [name for name in ds.data_vars if name not in (MASK, DOMAIN)]
    if not names:
        raise InvalidMeasurement(source, VALUE, "at least one field variable (e.g. 'value')", "only a mask")
    _require_units(ds.attrs, source, "units (of the field)")
    x = _monotonic_axis(ds, "x", source)
    y = _monotonic_axis(ds, "y", source)
    dims = ds[names[0]].dims
    fields = {}
    for name in names:
        da = ds[name]
        if da.dims not in GRIDDED_DIMS or da.dims != dims:
            raise ShapeMismatch(source, name, f"dims one of {GRIDDED_DIMS}, the same for all fields", f"dims {da.dims}")
        values = _numeric(da, source, name)
        _check_no_inf(values, source, name)
        fields[name] = values
    observed = np.logical_and.reduce([np.isfinite(v) for v in fields.values()])
    domain = _domain(ds, source)
    outside = 0
    if domain is not None:
        outside = int((observed & ~domain).sum())
        observed = observed & domain
        if not domain.any():
            raise InvalidMeasurement(source, DOMAIN, "at least one cell inside the field (True)", "none")
    if MASK in ds.data_vars:
        mask_da = ds[MASK]
        if mask_da.dtype != np.bool_:
            raise InvalidMeasurement(source, MASK, "a boolean mask (True = observed)", f"dtype {mask_da.dtype}")
        if mask_da.dims not in GRIDDED_DIMS or (TIME in mask_da.dims and TIME not in dims):
            raise ShapeMismatch(source, MASK, f"dims ('y', 'x') or {dims}", f"dims {mask_da.dims}")
        mask = np.broadcast_to(mask_da.transpose(*[d for d in dims if d in mask_da.dims]).values, observed.shape)
        if domain is not None:
            mask = mask & domain
        bad = mask & ~observed
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NonFiniteValues(source, names[0], "finite values wherever mask is True", f"NaN at index {where}")
        mask_dims = mask_da.dims
        mask_values = mask_da.values if domain is None else mask_da.values & domain
    else:
        mask = observed
        if TIME in dims and (observed == observed[:1]).all():
            mask_dims, mask_values = ("y", "x"), observed[0]  # the same gaps at every time: one mask
        else:
            mask_dims, mask_values = dims, observed
    if not mask.any():
        raise NonFiniteValues(source, names[0], "at least one observed (finite, unmasked) value", "none")
    out = xr.Dataset(
        {name: (dims, np.where(mask, values, np.nan), dict(ds[name].attrs)) for name, values in fields.items()},
        coords={
            "x": ("x", x, dict(ds["x"].attrs)),
            "y": ("y", y, dict(ds["y"].attrs)),
            **_other_coords(ds, dims),
        },
        attrs=dict(ds.attrs),
    )
    out[MASK] = (mask_dims, np.asarray(mask_values, dtype=bool))
    if domain is not None:
        out[DOMAIN] = (("y", "x"), domain, dict(ds[DOMAIN].attrs))
        out.attrs["n_outside_domain"] = outside
    return out


def _domain(ds: xr.Dataset, source) -> np.ndarray | None:
    """The boolean ``domain(y, x)`` of a gridded field (True = part of the field), or None."""
    if DOMAIN not in ds.data_vars:
        return None
    da = ds[DOMAIN]
    if da.dtype != np.bool_:
        raise InvalidMeasurement(source, DOMAIN, "a boolean domain mask (True = part of the field)",
                                 f"dtype {da.dtype}")
    if set(da.dims) != {"y", "x"}:
        raise ShapeMismatch(source, DOMAIN, "dims ('y', 'x'): one mask for every time step", f"dims {da.dims}")
    return np.asarray(da.transpose("y", "x").values, dtype=bool)


def _positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidGrid(None, f"grid.{name}", "a positive integer", repr(value)) from None
    if number != value or number < 1:
        raise InvalidGrid(None, f"grid.{name}", "a positive integer (at least one cell)", repr(value))
    return number


def _positive_float(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidGrid(None, f"grid.{name}", "a positive number", repr(value)) from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidGrid(None, f"grid.{name}", "a positive finite number", repr(value))
    return number


def _observation_xy(observations) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(observations["x"].values, dtype=float), np.asarray(observations["y"].values, dtype=float)


@dataclass(frozen=True)
class FieldGrid:
    """A regular target grid: cell centres ``x0 + i*dx`` (i < nx), ``y0 + j*dy`` (j < ny).

    ``hull``: vertices ``((x, y), ...)`` of the observations' convex hull when the recipe asks
    for ``mask: convex-hull`` (a tuple, so the grid stays hashable and comparable); ``None`` keeps
    every cell.
    """

    x0: float
    y0: float
    dx: float
    dy: float
    nx: int
    ny: int
    hull: tuple | None = None

    def __post_init__(self):
        for name in ("nx", "ny"):
            _positive_int(getattr(self, name), name)
        for name in ("dx", "dy"):
            _positive_float(getattr(self, name), name)
        for name in ("x0", "y0"):
            if not math.isfinite(float(getattr(self, name))):
                raise InvalidGrid(None, f"grid.{name}", "a finite number", repr(getattr(self, name)))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], observations: xr.Dataset | None = None) -> "FieldGrid":
        """Build the grid of a recipe's ``grid:`` section.

        Keys: ``extent: [xmin, xmax, ymin, ymax]`` (the outer edges of the cells; taken from the
        observations' bounding box when absent), ``padding`` (added on every side of the
        bounding box; only with a data-derived extent), and one of ``spacing: d`` (square cells;
        the last cell may end past xmax/ymax) or ``shape: [ny, nx]`` (cells tile the extent
        exactly); ``mask: convex-hull`` keeps only cells whose centre is inside the hull of the
        observations.
        """
        spec = dict(spec)
        unknown = set(spec) - {"extent", "spacing", "shape", "padding", "mask"}
        if unknown:
            raise InvalidGrid(None, "grid", "keys extent, spacing, shape, padding, mask", f"unknown {sorted(unknown)}")
        if "extent" in spec:
            extent = spec["extent"]
            if "padding" in spec:
                raise InvalidGrid(None, "grid.padding", "padding only with an extent taken from the data", "both")
        elif observations is not None:
            x, y = _observation_xy(observations)
            pad = float(spec.get("padding", 0.0))
            if not math.isfinite(pad) or pad < 0:
                raise InvalidGrid(None, "grid.padding", "a non-negative number", repr(spec.get("padding")))
            extent = [x.min() - pad, x.max() + pad, y.min() - pad, y.max() + pad]
        else:
            raise InvalidGrid(
                None, "grid.extent", "[xmin, xmax, ymin, ymax] or observations to take it from", "neither"
            )
        try:
            xmin, xmax, ymin, ymax = (float(v) for v in extent)
        except (TypeError, ValueError):
            raise InvalidGrid(None, "grid.extent", "four numbers [xmin, xmax, ymin, ymax]", repr(extent)) from None
        if not all(math.isfinite(v) for v in (xmin, xmax, ymin, ymax)) or xmax <= xmin or ymax <= ymin:
            raise InvalidGrid(
                None,
                "grid.extent",
                "finite [xmin, xmax, ymin, ymax] with xmax > xmin and ymax > ymin (at least one cell)",
                repr(list(extent)),
            )
        if ("spacing" in spec) == ("shape" in spec):
            raise InvalidGrid(None, "grid", "exactly one of 'spacing' or 'shape'", f"keys {sorted(spec)}")
        if "spacing" in spec:
            d = _positive_float(spec["spacing"], "spacing")
            # A small tolerance so that an extent that is a multiple of d does not gain a cell.
            nx = max(1, math.ceil((xmax - xmin) / d - 1e-9))
            ny = max(1, math.ceil((ymax - ymin) / d - 1e-9))
            dx = dy = d
        else:
            shape = spec["shape"]
            if not isinstance(shape, (list, tuple)) or len(shape) != 2:
                raise InvalidGrid(None, "grid.shape", "[ny, nx]", repr(shape))
            ny, nx = _positive_int(shape[0], "shape[0] (ny)"), _positive_int(shape[1], "shape[1] (nx)")
            dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
        hull = None
        mask = spec.get("mask")
        if mask not in (None, "convex-hull"):
            raise InvalidGrid(None, "grid.mask", "'convex-hull' or nothing", repr(mask))
        if mask == "convex-hull":
            if observations is None:
                raise InvalidGrid(None, "grid.mask", "observations to compute the convex hull from", "none")
            hull = _convex_hull(*_observation_xy(observations))
        return cls(xmin + dx / 2, ymin + dy / 2, dx, dy, nx, ny, hull)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """1D cell-centre coordinates ``(x, y)``, ascending."""
        return self.x0 + self.dx * np.arange(self.nx), self.y0 + self.dy * np.arange(self.ny)

    def extent(self) -> tuple[float, float, float, float]:
        """Outer cell edges ``(xmin, xmax, ymin, ymax)``."""
        return (self.x0 - self.dx / 2, self.x0 + (self.nx - 0.5) * self.dx,
                self.y0 - self.dy / 2, self.y0 + (self.ny - 0.5) * self.dy)

    def mask(self) -> np.ndarray:
        """Boolean ``(ny, nx)``: True where the cell centre is inside the hull (all True without one)."""
        if self.hull is None:
            return np.ones((self.ny, self.nx), dtype=bool)
        from scipy.spatial import Delaunay

        x, y = self.centres()
        xx, yy = np.meshgrid(x, y)
        inside = Delaunay(np.asarray(self.hull)).find_simplex(np.stack([xx.ravel(), yy.ravel()], axis=1)) >= 0
        return inside.reshape(self.ny, self.nx)

    def check_inside(self, observations: xr.Dataset, source=None) -> None:
        """Raise ``OutsideGrid`` when a sensor lies outside the grid's cells (edges included)."""
        x, y = _observation_xy(observations)
        xmin, xmax, ymin, ymax = self.extent()
        tol = 1e-9 * max(abs(xmax - xmin), abs(ymax - ymin))
        outside = (x < xmin - tol) | (x > xmax + tol) | (y < ymin - tol) | (y > ymax + tol)
        if outside.any():
            first = int(np.argmax(outside))
            raise OutsideGrid(
                source,
                "x, y",
                f"sensors inside the grid extent x in [{xmin:g}, {xmax:g}], y in [{ymin:g}, {ymax:g}]",
                f"{int(outside.sum())} outside, first sensor {first} at x={x[first]:g}, y={y[first]:g}",
            )


def _convex_hull(x: np.ndarray, y: np.ndarray, source=None) -> tuple:
    from scipy.spatial import ConvexHull, QhullError

    points = np.stack([x, y], axis=1)
    try:
        hull = ConvexHull(points)
    except QhullError:
        unique = np.unique(points, axis=0)
        found = (f"{len(unique)} distinct sensor position(s)" if len(unique) < 3 else
                 f"{len(unique)} sensors all on one line")
        raise InvalidGrid(source, "grid.mask", "sensors spanning an area (3 or more not on one line) for the "
                          "convex hull; give grid.extent with mask: none instead", found) from None
    return tuple((float(px), float(py)) for px, py in points[hull.vertices])
