"""Choose a reader from a file's content rather than its name.

File names lie (a NetCDF-4 file is HDF5, a MATLAB 7.3 file is HDF5 behind a 512-byte header),
so the decision reads magic bytes and, for HDF5, looks inside for the Data Exchange layout.
MRI k-space files have their own detector, ``data.readers.mri_sniff.mri_format``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from inversa.data.readers.hdf5_access import hdf5_file
from inversa.data.errors import CorruptFile, MissingFile, UnknownFormat

FORMATS = ("htc2022", "dxchange", "numpy", "netcdf", "zarr")

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NUMPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
NETCDF_CLASSIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
MATLAB_V5_TEXT = b"MATLAB 5.0 MAT-file"
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def require_exists(path) -> Path:
    path = Path(path)
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            found = "a loop of symbolic links"
        elif path.is_symlink():
            found = f"a symbolic link to {os.readlink(path)}, which does not exist"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            found = "a path this user may not read (permission denied)"
        elif exc.errno == errno.ENAMETOOLONG:
            found = "a name longer than the file system allows"
        else:
            found = "nothing at that path" if exc.errno == errno.ENOENT else f"{exc.strerror or exc}"
        raise MissingFile(path, "(file)", "an existing file or zarr directory", found) from None
    return path


def is_zarr_directory(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in ZARR_MARKERS)


def hdf5_signature_offset(head: bytes) -> int | None:
    """HDF5 allows a user block of 0, 512, 1024, ... bytes before the superblock."""
    for offset in (0, 512, 1024, 2048):
        if head[offset:offset + 8] == HDF5_SIGNATURE:
            return offset
    return None


def _hdf5_has_exchange(path: Path) -> bool:
    import h5py

    try:
        with hdf5_file(path) as f:
            if "kspace" in f or any("xml" in g and "data" in g for g in f.values() if isinstance(g, h5py.Group)):
                # MRI raw data (fastMRI k-space, ISMRMRD): say so rather than fail inside the NetCDF reader.
                raise UnknownFormat(path, "(file)", "a CT measurement (Data Exchange or NetCDF-4 HDF5)",
                                    "MRI k-space (fastMRI or ISMRMRD): read it with inversa.data.readers.read_mri")
            return "exchange/data" in f
    except OSError as err:
        raise CorruptFile(path, "(HDF5 superblock)", "a readable HDF5 file", f"{err}") from None


def detect_format(path) -> str:
    """Return one of :data:`FORMATS` for ``path``, judged by content."""
    path = require_exists(path)
    if path.is_dir():
        if is_zarr_directory(path):
            return "zarr"
        raise UnknownFormat(path, "(directory)", f"a zarr store (a directory holding one of {ZARR_MARKERS})",
                            "a directory without zarr metadata")
    with open(path, "rb") as f:
        head = f.read(2056)
    if not head:
        raise CorruptFile(path, "(file)", "a non-empty file", "0 bytes")
    if head.startswith(MATLAB_V5_TEXT) and head[126:128] in (b"IM", b"MI"):
        return "htc2022"
    if head.startswith(NUMPY_MAGIC) or head.startswith(ZIP_MAGIC):
        return "numpy"
    if head.startswith(NETCDF_CLASSIC):
        return "netcdf"
    if hdf5_signature_offset(head) is not None:
        if head.startswith(b"MATLAB 7.3"):
            raise UnknownFormat(path, "(file)", "a MATLAB v5 file (HTC2022) or a Data Exchange/NetCDF HDF5 file",
                                "a MATLAB 7.3 file, which has no CT measurement reader (MRI k-space: read_mri)")
        return "dxchange" if _hdf5_has_exchange(path) else "netcdf"
    raise UnknownFormat(
        path, "(file)", "a MATLAB v5, HDF5 (Data Exchange or NetCDF-4), NetCDF, NumPy .npy/.npz file or a zarr directory",
        f"leading bytes {head[:8]!r}",
    )
