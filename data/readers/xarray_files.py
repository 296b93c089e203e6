"""Reader for NetCDF files and zarr stores that already follow the measurement schema."""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from data.errors import CorruptFile
from data.readers.sniff import require_exists
from data.schema import validate_ct


def _is_consolidated(store: Path) -> bool:
    """Open consolidated stores as such; asking for metadata that is absent only warns and falls back."""
    if (store / ".zmetadata").exists():
        return True
    try:
        return json.loads((store / "zarr.json").read_text()).get("consolidated_metadata") is not None
    except (OSError, ValueError, AttributeError):
        return False


def open_dataset_file(path, fmt: str) -> xr.Dataset:
    """Open and load NetCDF (``fmt='netcdf'``) or zarr (``'zarr'``), wrapping decode errors."""
    path = require_exists(path)
    try:
        if fmt == "zarr":
            with xr.open_zarr(path, consolidated=_is_consolidated(path), chunks=None) as ds:
                return ds.load()
        with xr.open_dataset(path) as ds:
            return ds.load()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CorruptFile(path, "(dataset)", f"a readable {fmt} dataset", f"{type(err).__name__}: {err}") from None


def read_xarray(path, fmt: str = "netcdf"):
    """Read a NetCDF file or zarr store holding ``sinogram(slice, angle, detector)`` and validate it."""
    ds = open_dataset_file(path, fmt)
    ds.attrs.setdefault("format", fmt)
    ds.attrs["source"] = str(path)
    return validate_ct(ds, source=path)
