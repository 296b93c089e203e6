"""Reader for gridded fields with holes in NetCDF files or zarr stores (e.g. SST anomalies).

The output grid is the input grid: the variable's last two dims become ``y``, ``x`` with their
coordinate values and attrs untouched (degrees for a lat/lon grid, ``attrs["original_dims"]``
keeps the names); no reprojection, so a reconstruction maps back cell for cell. One leading
dim, whatever its name (time, winter, level), becomes ``time``: each step is a region of the
pipeline. Missing values become the ``mask`` of data/fields.py: CF ``_FillValue`` and
``missing_value`` (decoded to NaN by xarray), NaN, and any |value| >= 1e20, the de facto
"missing" of older climate files that sometimes lack the attribute.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidMeasurement, ShapeMismatch
from inversa.data.fields import MASK, TIME, VALUE, validate_gridded_field
from inversa.data.readers.sniff import is_zarr_directory, require_exists
from inversa.data.readers.xarray_files import open_dataset_file

MISSING_THRESHOLD = 1e20


def _bounds_names(ds: xr.Dataset) -> set:
    """Cell-bounds variables (CF ``bounds`` attrs or named bounds_*/..._bnds): never a field."""
    named = {str(ds[name].attrs["bounds"]) for name in ds.variables if "bounds" in ds[name].attrs}
    by_name = {str(n) for n in ds.data_vars if str(n).startswith("bounds_") or str(n).endswith(("_bnds", "_bounds"))}
    return named | by_name


def field_candidates(ds: xr.Dataset) -> list[str]:
    """Data variables that could be the field (sorted): numeric, 2 or 3 dims, not cell bounds."""
    skip = _bounds_names(ds)
    return sorted(
        str(name) for name, da in ds.data_vars.items()
        if name not in skip and da.ndim in (2, 3) and np.issubdtype(da.dtype, np.number)
    )


def read_field_grid(path, variable: str | None = None, units: str | None = None) -> xr.Dataset:
    """Read one gridded variable as a validated ``value(y, x)`` / ``value(time, y, x)`` with ``mask``.

    ``variable``: which data variable (``--set variable=NAME``); needed when the file holds more
    than one candidate, and the error lists them. ``units``: used when the variable has no
    ``units`` attr (the SST file has none: its values are K).
    """
    path = require_exists(path)
    fmt = "zarr" if is_zarr_directory(path) else "netcdf"
    ds = open_dataset_file(path, fmt)
    candidates = field_candidates(ds)
    if variable is None:
        if len(candidates) != 1:
            raise InvalidMeasurement(path, "variable", f"variable=NAME naming one of {candidates}",
                                     f"{len(candidates)} candidate field variables")
        variable = candidates[0]
    elif variable not in ds.data_vars:
        raise InvalidMeasurement(path, str(variable), f"one of the file's field variables {candidates}", "absent")
    da = ds[variable]
    if da.ndim not in (2, 3):
        raise ShapeMismatch(path, variable, "dims (y, x) or (time, y, x)", f"dims {da.dims}")
    field_units = da.attrs.get("units", units)
    if not isinstance(field_units, str) or not field_units:
        raise InvalidMeasurement(path, f"{variable}.attrs['units']", "a units attr, or units=... given to the reader",
                                 "none")
    *lead, ydim, xdim = da.dims
    values = np.asarray(da.values, dtype=np.float64)
    values[np.abs(values) >= MISSING_THRESHOLD] = np.nan
    rename = {ydim: "y", xdim: "x", **({lead[0]: TIME} if lead else {})}
    coords = {}
    for old, new in rename.items():
        if old in ds.coords:
            coord = ds[old]
            # ``bounds`` would point at a variable that is not carried over.
            kept = {k: v for k, v in coord.attrs.items() if k != "bounds"}
            coords[new] = (new, coord.values, {**kept, "original_name": str(old)})
        elif new != TIME:
            index = np.arange(da.sizes[old], dtype=np.float64)
            coords[new] = (new, index, {"units": "index", "original_name": str(old)})
    attrs = {k: v for k, v in da.attrs.items() if k not in ("missing_value", "_FillValue")}
    out = xr.Dataset(
        {VALUE: (tuple(rename[d] for d in da.dims), values, attrs)},
        coords=coords,
        attrs={"units": field_units, "variable": str(variable), "original_dims": repr(tuple(map(str, da.dims)))},
    )
    if MASK in ds.data_vars and ds[MASK].dtype == np.bool_:  # an explicit mask in the file wins
        out[MASK] = (tuple(rename[d] for d in ds[MASK].dims), ds[MASK].values)
    return validate_gridded_field(out, source=path)
