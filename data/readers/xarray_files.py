"""Reader for NetCDF files and zarr stores that already follow the measurement schema.

Measurements open lazily: xarray's indexed backend arrays read only what is asked for, so a
region reads only its own slices and a run's memory does not grow with the number of slices in
the input (benchmarks/memory_scaling.py). Not dask arrays: computing one inside a Dask worker
would go through the cluster's scheduler and wait for the very worker slot it occupies.
References stay eager; they are small.
"""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from inversa.data.errors import CorruptFile
from inversa.data.readers.sniff import require_exists
from inversa.data.schema import validate_ct


def _is_consolidated(store: Path) -> bool:
    """Open consolidated stores as such; asking for metadata that is absent only warns and falls back."""
    if (store / ".zmetadata").exists():
        return True
    try:
        return json.loads((store / "zarr.json").read_text()).get("consolidated_metadata") is not None
    except (OSError, ValueError, AttributeError):
        return False


def open_dataset_file(path, fmt: str, lazy: bool = False) -> xr.Dataset:
    """Open NetCDF (``fmt='netcdf'``) or zarr (``'zarr'``), wrapping decode errors.

    ``lazy``: keep the file open and read nothing yet (indexing reads the part asked for);
    otherwise load everything and close the file.
    """
    path = require_exists(path)
    try:
        if fmt == "zarr":
            if lazy:
                return xr.open_zarr(path, consolidated=_is_consolidated(path), chunks=None)
            with xr.open_zarr(path, consolidated=_is_consolidated(path), chunks=None) as ds:
                return ds.load()
        if lazy:
            return xr.open_dataset(path)  # the file stays open; nothing is read yet
        with xr.open_dataset(path) as ds:
            return ds.load()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CorruptFile(path, "(dataset)", f"a readable {fmt} dataset", f"{type(err).__name__}: {err}") from None


def read_xarray(path, fmt: str = "netcdf"):
    """Read a NetCDF file or zarr store holding ``sinogram(slice, angle, detector)`` and validate it."""
    ds = open_dataset_file(path, fmt, lazy=True)
    ds.attrs.setdefault("format", fmt)
    ds.attrs["source"] = str(path)
    checked = validate_ct(ds, source=path, lazy=True)
    checked.set_close(ds.close)  # closing what the caller gets closes the file it reads from
    return checked
