"""Reader for NetCDF files and zarr stores that already follow the measurement schema.

Measurements open lazily: xarray's indexed backend arrays read only what is asked for, so a
region reads only its own slices and a run's memory does not grow with the number of slices in
the input (benchmarks/memory_scaling.py). Not dask arrays: computing one inside a Dask worker
would go through the cluster's scheduler and wait for the very worker slot it occupies.
References stay eager; they are small.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import xarray as xr
import zarr

from inversa.data.errors import CorruptFile
from inversa.data.readers.sniff import require_exists
from inversa.data.schema import SINOGRAM, validate_ct


def _is_consolidated(store: Path) -> bool:
    """Open consolidated stores as such; asking for metadata that is absent only warns and falls back."""
    if (store / ".zmetadata").exists():
        return True
    try:
        return json.loads((store / "zarr.json").read_text()).get("consolidated_metadata") is not None
    except (OSError, ValueError, AttributeError):
        return False


METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def check_zarr_metadata(store: Path) -> None:
    """Every metadata file of a zarr store parses: consolidated metadata would otherwise hide
    an array's own truncated ``zarr.json`` until some other tool reads it."""
    for name in METADATA_FILES:
        for meta in store.rglob(name):
            try:
                json.loads(meta.read_text())
            except (OSError, ValueError) as exc:
                raise CorruptFile(store, str(meta.relative_to(store)), "valid JSON zarr metadata",
                                  f"unreadable ({type(exc).__name__}: {exc})") from None


def missing_chunks(store: Path, name: str) -> tuple[int, int, str | None]:
    """``(missing, total, first missing key)`` of the chunk files of array ``name``: zarr reads a
    missing chunk as the fill value, which for a measurement is damage, not data."""
    try:
        array = zarr.open_array(str(store / name), mode="r")
    except Exception:  # noqa: BLE001 - an array zarr cannot open is reported by whoever reads it
        return 0, 0, None
    keys = [array.metadata.encode_chunk_key(c) for c in itertools.product(*(range(n) for n in array.cdata_shape))]
    absent = [k for k in keys if not (store / name / k).exists()]
    return len(absent), len(keys), (absent[0] if absent else None)


def library_words(err: BaseException, path) -> str:
    """A file library's complaint without its errno, its repetition of the path and its jargon."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(err)).strip()
    for shown in (f": {str(path)!r}", f": b{str(path)!r}", f": {path}", str(path)):
        text = text.replace(shown, "")
    text = text.removeprefix("NetCDF: ").strip(" :")
    if isinstance(err, OSError) and "HDF error" in text:
        return "a damaged or truncated file (the NetCDF/HDF5 library could not read it: HDF error)"
    return f"a file the reader could not decode ({text or type(err).__name__})"


def open_dataset_file(path, fmt: str, lazy: bool = False) -> xr.Dataset:
    """Open NetCDF (``fmt='netcdf'``) or zarr (``'zarr'``), wrapping decode errors.

    ``lazy``: keep the file open and read nothing yet (indexing reads the part asked for);
    otherwise load everything and close the file.
    """
    path = require_exists(path)
    if fmt == "zarr":
        check_zarr_metadata(Path(path))
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
        raise CorruptFile(path, "(dataset)", f"a readable {fmt} dataset", library_words(err, path)) from None


def read_xarray(path, fmt: str = "netcdf"):
    """Read a NetCDF file or zarr store holding ``sinogram(slice, angle, detector)`` and validate it."""
    ds = open_dataset_file(path, fmt, lazy=True)
    if fmt == "zarr" and SINOGRAM in ds.data_vars:
        absent, total, first = missing_chunks(Path(path), SINOGRAM)
        if absent:
            raise CorruptFile(path, SINOGRAM, "every chunk of the array present",
                              f"{absent} of {total} chunk files missing (first {SINOGRAM}/{first}); zarr would "
                              "read them as the fill value")
    ds.attrs.setdefault("format", fmt)
    ds.attrs["source"] = str(path)
    checked = validate_ct(ds, source=path, lazy=True)
    checked.set_close(ds.close)  # closing what the caller gets closes the file it reads from
    return checked
