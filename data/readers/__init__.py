"""Readers that turn files into validated measurements.

``read_measurement`` picks the reader from the file's content (magic bytes), so a user can pass
any supported file without naming its format; ``format=`` overrides the guess. MRI k-space
files have their own entry point, ``read_mri``; ``mri_format`` tells them apart from CT files.
"""

from __future__ import annotations

from inversa.data.errors import UnknownFormat
from inversa.data.readers.dxchange import read_dxchange
from inversa.data.readers.htc2022 import read_htc2022
from inversa.data.readers.mri import read_mri
from inversa.data.readers.mri_reference import read_mri_reference
from inversa.data.readers.mri_sniff import MRI_FORMATS, mri_format
from inversa.data.readers.numpy_arrays import read_numpy
from inversa.data.readers.reference import read_reference
from inversa.data.readers.sniff import FORMATS, detect_format, require_exists
from inversa.data.readers.xarray_files import read_xarray

__all__ = ["FORMATS", "MRI_FORMATS", "detect_format", "mri_format", "read_measurement", "read_mri",
           "read_mri_reference", "read_reference"]


def read_measurement(path, format: str | None = None, **options):
    """Read a CT measurement file as a validated ``xr.Dataset`` (see data/schema.py).

    ``format``: one of ``htc2022``, ``dxchange``, ``numpy``, ``netcdf``, ``zarr``; by default
    judged from content. ``options`` go to the reader: ``variable`` (htc2022);
    ``center_of_rotation``, ``detector_spacing_mm`` (dxchange); ``angles`` and geometry attrs (numpy).
    """
    path = require_exists(path)
    fmt = format if format is not None else detect_format(path)
    if fmt not in FORMATS:
        raise UnknownFormat(path, "format", f"one of {FORMATS}", repr(fmt))
    if fmt == "htc2022":
        return read_htc2022(path, **options)
    if fmt == "dxchange":
        return read_dxchange(path, **options)
    if fmt == "numpy":
        return read_numpy(path, **options)
    if options:
        raise TypeError(f"{fmt} files take no reader options, got {sorted(options)}")
    return read_xarray(path, fmt)
