"""Input files as every kind sees them: one read lock, a cache key, a digest, a dataset name.

Region tasks receive the recipe and re-read what they need instead of receiving arrays:
Prefect would hash and persist big inputs, and a Dask worker in another process has to read the
file anyway. Within one process the kinds cache what they parse under ``file_key`` (path,
modification time and size), so threads working on neighbouring regions read a file once and a
changed file is read afresh.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from inversa.data.digest import file_digest

FILE_READ_LOCK = threading.Lock()  # netCDF4/HDF5 is not thread-safe: one reader at a time per process
GLOB_CHARACTERS = frozenset("*?[")
INPUT_SUFFIXES = (".zarr", ".nc", ".mat", ".h5", ".hdf5", ".npz", ".npy", ".vec",
                  ".csv", ".csv.gz", ".csv.xz", ".csv.bz2", ".csv.zip", ".txt", ".txt.gz", ".txt.xz")


def is_glob(path: str) -> bool:
    return bool(GLOB_CHARACTERS & set(str(path)))


def file_key(path: str) -> tuple:
    """What identifies a file's current content cheaply: resolved path, mtime and size."""
    p = Path(path)
    try:
        st = p.stat()
        return (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(p), None, None)


@lru_cache(maxsize=8)
def _cached_digest(key: tuple, path: str) -> str:
    return file_digest(path)


def input_digest(path: str) -> str:
    """Digest of an input (a file, a directory, or a glob's directory), computed once per process
    while it is unchanged."""
    target = str(Path(path).parent) if is_glob(path) else str(path)
    return _cached_digest(file_key(target), target)


def input_location(path: str) -> str:
    """The input as provenance records it: an absolute path (a glob stays as written)."""
    return str(path) if is_glob(path) else str(Path(path).resolve())


def dataset_name(path: str | None) -> str:
    """A dataset's name from its input: the file name without its suffix (a glob: its directory)."""
    if not path:
        return "no-input"
    name = Path(path).name
    if is_glob(name):  # a glob of frames: named after their directory
        return Path(path).parent.name or "frames"
    for suffix in INPUT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
