"""One entry point for a field recipe's input: which reader, from the path alone.

A field run may start from a CSV of stations, a NetCDF/zarr file of scattered observations
(what ``inversa field-study`` writes), a NetCDF/zarr grid with gaps (sea-surface temperature),
or PIV frames (one ``.vec`` file, a directory of them, or a glob). The recipe should not have to
say which: the suffix, and for NetCDF/zarr the presence of a ``sensor`` dim, decide. Every
branch ends in one of the two validators of data/fields.py, so the solver side sees exactly two
shapes: scattered (``value`` over ``sensor``) or gridded (field variables over ``y, x`` with a
``mask``).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

from inversa.data.errors import InvalidMeasurement, MissingFile
from inversa.data.fields import SENSOR, validate_field_observations
from inversa.data.readers.field_csv import read_field_csv
from inversa.data.readers.field_grid import NO_MASK, UNOBSERVED, domain_of_unobserved, read_field_grid
from inversa.data.readers.piv_vec import read_piv_series, read_piv_vec
from inversa.data.readers.sniff import is_zarr_directory, require_exists
from inversa.data.readers.xarray_files import open_dataset_file

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.xz", ".csv.bz2", ".csv.zip", ".txt", ".txt.gz", ".txt.xz")
FIELD_SUFFIXES = CSV_SUFFIXES + (".vec", ".nc", ".zarr")
"""What a directory listing of field inputs picks up (besides PIV directories)."""

SCATTERED, GRIDDED = "scattered", "gridded"
GRID_SUFFIXES = (".nc", ".nc4", ".cdf", ".h5", ".hdf5")


def field_input_kind(ds: xr.Dataset) -> str:
    """``"scattered"`` or ``"gridded"``: the shape of a dataset ``read_field_input`` returned."""
    return SCATTERED if SENSOR in ds.dims else GRIDDED


def _vec_files(path: str) -> list[Path] | None:
    """The .vec frames a path means (a file, a directory of them, a glob), else None."""
    if any(ch in path for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(path, recursive=True))
        if not matches:
            raise MissingFile(path, "(input)", "files matching the pattern", "no match")
        return matches if all(p.suffix.lower() == ".vec" for p in matches) else None
    p = Path(path)
    if p.is_dir() and not is_zarr_directory(p):
        frames = sorted(p.glob("*.vec"))
        if not frames:
            raise InvalidMeasurement(p, "(input)", "a directory of .vec PIV frames, a file or a zarr store",
                                     "a directory without .vec files")
        return frames
    return [p] if p.suffix.lower() == ".vec" else None


def read_field_input(path: str | Path, options: Mapping[str, Any] | None = None,
                     variable: str | None = None) -> xr.Dataset:
    """Read a field input as validated scattered observations or a validated gridded field.

    ``options`` (the recipe's ``observations`` section): ``columns``, ``units``, ``projection``,
    ``duplicates`` for CSV (see data/readers/field_csv.py); ``units`` also names the unit of a
    grid variable that has none; ``duplicates`` applies to scattered NetCDF too; ``mask`` (the
    recipe's ``mask:``) says which cells of a grid lie outside the field (data/readers/field_grid.py;
    PIV frames take ``unobserved`` or ``none``). ``variable`` picks the grid variable
    (``--set variable=NAME``).
    """
    options = dict(options or {})
    mask = options.get("mask")
    text = str(path)
    frames = _vec_files(text)
    if frames is not None:
        for frame in frames:
            require_exists(frame)
        if mask not in (None, NO_MASK, UNOBSERVED):
            raise InvalidMeasurement(frames[0], str(mask), f"mask: {UNOBSERVED} or {NO_MASK} for PIV frames (a .vec "
                                     "file has no mask variable)", "a variable name")
        ds = read_piv_vec(frames[0]) if len(frames) == 1 and not Path(text).is_dir() else read_piv_series(frames)
        return domain_of_unobserved(ds, frames[0]) if mask == UNOBSERVED else ds
    p = require_exists(path)
    name = p.name.lower()
    if mask not in (None, NO_MASK) and not (is_zarr_directory(p) or name.endswith(GRID_SUFFIXES)):
        raise InvalidMeasurement(p, "mask", "no mask for scattered observations (it marks cells of a gridded "
                                 "input outside the field)", repr(mask))
    if name.endswith(CSV_SUFFIXES):
        if not options.get("columns"):
            raise InvalidMeasurement(p, "observations.columns",
                                     "a column mapping such as {x: longitude, y: latitude, value: gravity_mgal}",
                                     "none (CSV files carry no schema)")
        return read_field_csv(p, options["columns"], units=options.get("units"),
                              projection=options.get("projection", "auto"),
                              duplicates=options.get("duplicates", "error"))
    if is_zarr_directory(p) or name.endswith(GRID_SUFFIXES):
        ds = open_dataset_file(p, "zarr" if is_zarr_directory(p) else "netcdf")
        if SENSOR in ds.dims:
            if mask not in (None, NO_MASK):
                raise InvalidMeasurement(p, "mask", "no mask for scattered observations (it marks cells of a "
                                         "gridded input outside the field)", repr(mask))
            if variable not in (None, "value"):
                raise InvalidMeasurement(p, str(variable), "scattered observations store their values as 'value'",
                                         "another variable name")
            return validate_field_observations(ds.load(), source=p, duplicates=options.get("duplicates", "error"))
        return read_field_grid(p, variable=variable, units=options.get("units"), mask=mask)
    raise InvalidMeasurement(
        p, "(input)", f"a field file ({', '.join(FIELD_SUFFIXES)}) or a directory of .vec frames",
        f"suffix {p.suffix or '(none)'!r}",
    )
