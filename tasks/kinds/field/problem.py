"""A field run's problem: its observations, its output grid, its reference, its held-out points.

Every task of a field run (plan, fit, each region, the report) rebuilds this from the recipe,
so nothing but paths crosses a process boundary; the files are read once per process (cached
by path, modification time and size, like the CT measurements in tasks/measurement.py).

The output grid:
* gridded input (a grid with gaps: SST, PIV): the input's own grid; every gap is filled, even a
  cell missing at every time step. Only an explicit mask (a land-sea mask variable of the input,
  or the recipe's ``mask:``, see data/readers/field_grid.py) puts cells outside the field (land):
  they stay NaN.
* scattered input: the recipe's ``grid:`` section (data.fields.FieldGrid), else the reference's
  grid (synthetic studies: the truth's nodes), else ``DEFAULT_GRID``: 128 x 128 cells over the
  observations' bounding box, masked to their convex hull (``inversa check`` prints it).

The region axis: ``time`` when the observations have one (each time step or block of them is a
region), else the rows of the output grid (``y``: a region is a band of rows, a grid tile).

Held-out points (``holdout: {fraction, seed}``): at each time index a seeded random fraction of
the observed points is withheld from every solver and used only to score it (RMSE and the
coverage of the credible interval there). The choice depends on ``(seed, time index)`` alone, so
every process and every rerun withholds the same points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidGrid, InvalidMeasurement, ShapeMismatch
from inversa.data.fields import COMPONENT, DOMAIN, MASK, TIME, VALUE, FieldGrid
from inversa.data.readers.field_grid import field_candidates
from inversa.data.readers.field_input import SCATTERED, field_input_kind, read_field_input
from inversa.data.readers.xarray_files import open_dataset_file
from inversa.data.readers.sniff import is_zarr_directory, require_exists
from inversa.tasks.core.inputs import FILE_READ_LOCK, cached_by_file_version, file_key
from inversa.tasks.kinds.field.recipe import FieldRecipe

NON_FIELD_VARIABLES = (MASK, DOMAIN, "chc")
DEFAULT_GRID = {"shape": [128, 128], "mask": "convex-hull"}


@dataclass(frozen=True)
class Points:
    """Observations as solvers take them: ``xy`` (n, 2) and ``values`` (n,) or (n, C); ``t`` (n,) for space-time."""

    xy: np.ndarray
    values: np.ndarray
    t: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.xy.shape[0])

    def take(self, index: np.ndarray) -> "Points":
        return Points(self.xy[index], self.values[index], None if self.t is None else self.t[index])


def _cached_input(key: tuple, path: str, options: str, variable: str | None) -> xr.Dataset:
    with FILE_READ_LOCK:
        return _read_input(key, path, options, variable)


def _cached_reference(key: tuple, path: str, variable: str | None) -> xr.DataArray:
    with FILE_READ_LOCK:
        return _read_reference(key, path, variable)


@cached_by_file_version(maxsize=4)
def _read_input(key: tuple, path: str, options: str, variable: str | None) -> xr.Dataset:
    return read_field_input(path, json.loads(options), variable)


@cached_by_file_version(maxsize=4)
def _read_reference(key: tuple, path: str, variable: str | None) -> xr.DataArray:
    source = require_exists(path)
    ds = open_dataset_file(source, "zarr" if is_zarr_directory(source) else "netcdf")
    if variable is None:
        candidates = field_candidates(ds)
        variable = "u" if "u" in candidates else candidates[0] if len(candidates) == 1 else None
        if variable is None:
            raise InvalidMeasurement(source, "reference_variable", f"reference_variable=NAME naming one of {candidates}",
                                     f"{len(candidates)} candidates")
    if variable not in ds.data_vars:
        raise InvalidMeasurement(source, str(variable), f"one of {sorted(map(str, ds.data_vars))}", "absent")
    return ds[variable].load()


@dataclass
class FieldProblem:
    """Everything a field run reads, with the output grid decided (see the module docstring)."""

    input: str
    kind: str
    data: xr.Dataset
    xs: np.ndarray
    ys: np.ndarray
    coord_units: str
    units: str
    components: tuple[str, ...] | None
    times: np.ndarray | None
    cell_mask: np.ndarray | None
    reference: np.ndarray | None
    holdout_fraction: float
    holdout_seed: int

    @property
    def leading_dim(self) -> str:
        return TIME if self.times is not None else "y"

    @property
    def n_leading(self) -> int:
        return len(self.times) if self.times is not None else len(self.ys)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    def _field_names(self) -> list[str]:
        return [str(n) for n in self.data.data_vars if n not in NON_FIELD_VARIABLES]

    def _observed_at(self, t: int | None) -> Points:
        """Every observed point at time index ``t`` (``None``: a static field)."""
        ds = self.data
        if self.kind == SCATTERED:
            x, y = ds["x"].values, ds["y"].values
            values = ds[VALUE].values if t is None else ds[VALUE].isel({TIME: t}).values
            finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)
            return Points(np.column_stack([x, y])[finite], values[finite])
        names = self._field_names()
        stack = np.stack([ds[n].values if t is None else ds[n].isel({TIME: t}).values for n in names], axis=-1)
        mask = ds[MASK].values
        if mask.ndim == 3:
            mask = mask[t if t is not None else 0]
        gx, gy = np.meshgrid(ds["x"].values, ds["y"].values)
        values = stack[mask]
        return Points(np.column_stack([gx[mask], gy[mask]]), values if self.components else values[:, 0])

    def _split(self, t: int | None, points: Points) -> tuple[np.ndarray, np.ndarray]:
        keep = np.ones(points.n, dtype=bool)
        if self.holdout_fraction > 0:
            rng = np.random.default_rng(np.random.SeedSequence([self.holdout_seed, 0 if t is None else int(t)]))
            count = int(round(self.holdout_fraction * points.n))
            keep[rng.choice(points.n, count, replace=False)] = False
        return np.flatnonzero(keep), np.flatnonzero(~keep)

    def observations(self, t: int | None = None) -> Points:
        """What the solver may see at time index ``t``: observed points minus the held-out ones."""
        points = self._observed_at(t)
        return points.take(self._split(t, points)[0])

    def held_out(self, t: int | None = None) -> Points:
        points = self._observed_at(t)
        return points.take(self._split(t, points)[1])

    def space_time(self) -> tuple[Points, Points]:
        """(observations, held out) over all times, with ``t`` set: for space-time solvers."""
        fits, outs = [], []
        for index, label in enumerate(self.times):
            for bucket, points in ((fits, self.observations(index)), (outs, self.held_out(index))):
                bucket.append(Points(points.xy, points.values, np.full(points.n, float(label))))
        join = lambda parts: Points(np.concatenate([p.xy for p in parts]),  # noqa: E731
                                    np.concatenate([p.values for p in parts]), np.concatenate([p.t for p in parts]))
        return join(fits), join(outs)

    def time_values(self) -> np.ndarray:
        """Times as numbers for space-time solvers (the PDE's units); refuses calendar dates."""
        if np.issubdtype(np.asarray(self.times).dtype, np.datetime64):
            raise InvalidMeasurement(self.input, TIME, "numeric times (seconds) for a space-time PDE solver",
                                     "calendar dates")
        return np.asarray(self.times, dtype=np.float64)

    def reference_block(self, start: int, stop: int) -> np.ndarray | None:
        return None if self.reference is None else self.reference[start:stop]


def _components(ds: xr.Dataset, kind: str) -> tuple[str, ...] | None:
    if kind == SCATTERED:
        if COMPONENT not in ds[VALUE].dims:
            return None
        if COMPONENT in ds.coords:
            return tuple(str(c) for c in ds[COMPONENT].values)
        return tuple(f"c{i}" for i in range(ds.sizes[COMPONENT]))
    names = [str(n) for n in ds.data_vars if n not in NON_FIELD_VARIABLES]
    return tuple(names) if len(names) > 1 else None


def _reference_on(recipe: FieldRecipe, xs: np.ndarray, ys: np.ndarray, times, components) -> np.ndarray:
    path = recipe.reference
    ref = _cached_reference(file_key(path), path, recipe.reference_variable)
    dims = (TIME, "y", "x") if times is not None else ("y", "x")
    if components:
        raise InvalidMeasurement(path, str(ref.name), "a scalar reference field", "a vector field run")
    if tuple(ref.dims) != dims:
        raise ShapeMismatch(path, str(ref.name), f"dims {dims} (the output's)", f"dims {ref.dims}")
    for name, axis in (("x", xs), ("y", ys)):
        values = np.asarray(ref[name].values, dtype=np.float64)
        if values.shape != axis.shape or not np.allclose(values, axis, rtol=1e-9, atol=1e-9 * np.ptp(axis) + 1e-12):
            raise ShapeMismatch(path, name, f"the output grid's {len(axis)} {name} coordinates", f"{values.size} others")
    if times is not None and ref.sizes[TIME] != len(times):
        raise ShapeMismatch(path, TIME, f"{len(times)} times (the observations')", f"{ref.sizes[TIME]}")
    return np.asarray(ref.values, dtype=np.float32)


def load_field_problem(recipe: FieldRecipe) -> FieldProblem:
    """Read and check a field recipe's input (and reference) and decide the output grid.

    Checks that run on data already read (the grid, the hull) name the input file in their errors.
    """
    try:
        return _load_field_problem(recipe)
    except InvalidMeasurement as exc:
        raise exc.naming(recipe.input) from None


def _load_field_problem(recipe: FieldRecipe) -> FieldProblem:
    path = str(recipe.input)
    reader_options = recipe.observations.model_dump() if recipe.observations is not None else {}
    if recipe.mask is not None:
        reader_options["mask"] = recipe.mask
    ds = _cached_input(file_key(path), path, json.dumps(reader_options, sort_keys=True), recipe.variable)
    kind = field_input_kind(ds)
    components = _components(ds, kind)
    times = np.asarray(ds[TIME].values) if TIME in ds.dims else None
    spec = recipe.grid.given()
    cell_mask = None
    if kind == SCATTERED:
        if spec or not recipe.reference:
            grid = FieldGrid.from_spec(spec or DEFAULT_GRID, ds)
            grid.check_inside(ds, source=path)
            xs, ys = grid.centres()
            cell_mask = grid.mask() if grid.hull is not None else None
        else:
            ref = _cached_reference(file_key(recipe.reference), recipe.reference, recipe.reference_variable)
            xs, ys = (np.asarray(ref[a].values, dtype=np.float64) for a in ("x", "y"))
        coord_units = str(ds["x"].attrs.get("units", "m"))
    else:
        if spec:
            raise InvalidGrid(path, "grid", "no grid section: a gridded input's gaps are filled on its own grid",
                              f"keys {sorted(spec)}")
        xs, ys = (np.asarray(ds[a].values, dtype=np.float64) for a in ("x", "y"))
        coord_units = str(ds["x"].attrs.get("units", "1"))
        if DOMAIN in ds.data_vars:  # an explicit mask: cells outside the field (land) are not predicted
            inside = np.asarray(ds[DOMAIN].values, dtype=bool)
            cell_mask = None if inside.all() else inside
    reference = _reference_on(recipe, xs, ys, times, components) if recipe.reference else None
    return FieldProblem(
        input=path, kind=kind, data=ds, xs=xs, ys=ys, coord_units=coord_units,
        units=str(ds.attrs.get("units", "1")), components=components, times=times, cell_mask=cell_mask,
        reference=reference, holdout_fraction=recipe.holdout.fraction if recipe.holdout else 0.0,
        holdout_seed=recipe.holdout.seed if recipe.holdout else 0,
    )
