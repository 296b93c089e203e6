"""Reader for gridded fields with holes in NetCDF files or zarr stores (e.g. SST anomalies).

The output grid is the input grid: the variable's last two dims become ``y``, ``x`` with their
coordinate values and attrs untouched (degrees for a lat/lon grid, ``attrs["original_dims"]``
keeps the names); no reprojection, so a reconstruction maps back cell for cell. One leading
dim, whatever its name (time, winter, level), becomes ``time``: each step is a region of the
pipeline. Missing values become the ``mask`` of data/fields.py: CF ``_FillValue`` and
``missing_value`` (decoded to NaN by xarray), NaN, and any |value| >= 1e20, the de facto
"missing" of older climate files that sometimes lack the attribute.

Gaps versus land. A missing value is a gap to fill, even when the cell is missing at every time
step (a sensor that never reported, a region hidden for a test): nothing but an explicit mask
says a cell lies outside the field. The mask becomes the ``domain(y, x)`` of data/fields.py:

* ``mask=NAME`` (the recipe's ``mask:``): that variable of the file; a data variable named like a
  land-sea mask (``LAND_SEA_NAMES``: mask, lsm, land_sea_mask, landmask, ...) is used unasked.
  It must be static, on the field's own two grid dims. Booleans: True is the field. Numbers with
  NaN: the NaN cells are outside. 0/1 (or fractions) without NaN: conventions differ (ERA5's
  ``lsm`` is 1 on land, NOAA's ``lsmask`` 1 on sea), so the side of 0.5 that holds the observed
  cells is the field; ``attrs["mask_rule"]`` says which was taken.
* ``mask="unobserved"``: cells without a value at any time step are outside (a file whose land
  is marked only by missing values, like the SST example); ``mask="none"``: no mask at all,
  even where the file has one.

A boolean ``mask(time, y, x)`` in the file is what was observed at each time, as before.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidMeasurement, ShapeMismatch
from inversa.data.fields import DOMAIN, MASK, TIME, VALUE, validate_gridded_field
from inversa.data.readers.sniff import is_zarr_directory, require_exists
from inversa.data.readers.xarray_files import open_dataset_file

MISSING_THRESHOLD = 1e20
LAND_SEA_NAMES = ("mask", "lsm", "land_sea_mask", "landmask", "lsmask", "land_mask", "landsea", "sea_mask")
UNOBSERVED, NO_MASK = "unobserved", "none"


def _is_land_sea_name(name) -> bool:
    return str(name).lower() in LAND_SEA_NAMES


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
        if name not in skip and not _is_land_sea_name(name) and da.ndim in (2, 3)
        and np.issubdtype(da.dtype, np.number)
    )


def _mask_variable(ds: xr.Dataset, path, variable: str, mask: str | None) -> str | None:
    """The file's land-sea mask variable: the one the recipe names, else one named like one."""
    if mask is not None:
        if mask not in ds.variables:
            names = sorted(map(str, ds.data_vars))
            raise InvalidMeasurement(path, mask, f"a mask variable in the file (variables: {names})", "absent")
        return mask
    found = [str(n) for n in ds.data_vars if _is_land_sea_name(n) and str(n) != variable
             and not (str(n) == MASK and ds[n].dtype == np.bool_ and ds[n].ndim == 3)]  # observed per time
    if len(found) > 1:
        raise InvalidMeasurement(path, "mask", f"mask=NAME naming the land-sea mask, one of {found}",
                                 f"{len(found)} mask variables")
    return found[0] if found else None


def _inside(ds: xr.Dataset, name: str, path, ydim: str, xdim: str, ever: np.ndarray) -> tuple[np.ndarray, str]:
    """``(domain (y, x), rule)`` from mask variable ``name`` (see the module docstring)."""
    da = ds[name]
    if set(da.dims) != {ydim, xdim} or da.ndim != 2:
        raise ShapeMismatch(path, name, f"a static mask with the field's grid dims ({ydim}, {xdim}), shape "
                            f"{ever.shape}", f"dims {da.dims}, shape {da.shape}")
    if not (np.issubdtype(da.dtype, np.number) or da.dtype == np.bool_):
        raise InvalidMeasurement(path, name, "a boolean or numeric land-sea mask", f"dtype {da.dtype}")
    values = np.asarray(da.transpose(ydim, xdim).values)
    if values.dtype == np.bool_:
        return values, f"{name} True"
    values = values.astype(np.float64)
    if np.isnan(values).any():
        return np.isfinite(values), f"{name} not NaN"
    high = values >= 0.5
    if high.all() or not high.any():
        return np.ones_like(high), f"{name} uniform: every cell"
    on_high, on_low = int((ever & high).sum()), int((ever & ~high).sum())
    if on_high == on_low:
        raise InvalidMeasurement(path, name, "a land-sea mask whose side of 0.5 holding the observed cells is the "
                                 "field", f"{on_high} observed cells on either side")
    return (high, f"{name} >= 0.5") if on_high > on_low else (~high, f"{name} < 0.5")


def domain_of_unobserved(ds: xr.Dataset, source) -> xr.Dataset:
    """A validated gridded field whose cells never observed are outside the field (``mask="unobserved"``)."""
    mask = ds[MASK].values
    ever = mask if mask.ndim == 2 else mask.any(axis=0)
    out = ds.copy()
    out[DOMAIN] = (("y", "x"), ever, {"mask_rule": "observed at some time step"})
    out.attrs["mask_rule"] = "unobserved: cells without a value at any time step are outside the field"
    return validate_gridded_field(out, source=source)


def read_field_grid(path, variable: str | None = None, units: str | None = None,
                    mask: str | None = None) -> xr.Dataset:
    """Read one gridded variable as a validated ``value(y, x)`` / ``value(time, y, x)`` with ``mask``
    (and ``domain`` where a mask marks cells outside the field).

    ``variable``: which data variable (``--set variable=NAME``); needed when the file holds more
    than one candidate, and the error lists them. ``units``: used when the variable has no
    ``units`` attr (the SST file has none: its values are K). ``mask``: a mask variable's name,
    ``"unobserved"`` or ``"none"`` (see the module docstring); None: a land-sea mask found by name.
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
    observed = ds[MASK] if MASK in ds.data_vars else None
    if observed is not None and observed.dtype == np.bool_ and observed.ndim == 3 \
            and set(observed.dims) == set(da.dims):
        out[MASK] = (tuple(rename[d] for d in observed.dims), observed.values)  # observed, per time step
    if mask == UNOBSERVED:
        return domain_of_unobserved(validate_gridded_field(out, source=path), path)
    name = None if mask == NO_MASK else _mask_variable(ds, path, str(variable), mask)
    if name is not None:
        ever = np.isfinite(values) if values.ndim == 2 else np.isfinite(values).any(axis=0)
        inside, rule = _inside(ds, name, path, ydim, xdim, ever)
        out[DOMAIN] = (("y", "x"), inside, {"mask_variable": name, "mask_rule": rule})
        out.attrs["mask_variable"], out.attrs["mask_rule"] = name, rule
    return validate_gridded_field(out, source=path)
