"""Input files as every kind sees them: one read lock, a cache key, a digest, a dataset name.

Region tasks receive the recipe and re-read what they need instead of receiving arrays:
Prefect would hash and persist big inputs, and a Dask worker in another process has to read the
file anyway. Within one process the kinds cache what they parse under ``file_key`` (path,
modification time and size), so threads working on neighbouring regions read a file once and a
changed file is read afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path

from inversa.data.digest import file_digest
from inversa.data.errors import InvalidMeasurement

FILE_READ_LOCK = threading.Lock()  # netCDF4/HDF5 is not thread-safe: one reader at a time per process
GLOB_CHARACTERS = frozenset("*?[")
INPUT_SUFFIXES = (".zarr", ".nc", ".mat", ".h5", ".hdf5", ".npz", ".npy", ".vec",
                  ".csv", ".csv.gz", ".csv.xz", ".csv.bz2", ".csv.zip", ".txt", ".txt.gz", ".txt.xz")


def is_glob(path: str) -> bool:
    return bool(GLOB_CHARACTERS & set(str(path)))


def _stat_key(st) -> tuple:
    # ctime and inode too: `cp -p` or `touch -r` can give new content the old mtime and size,
    # but not the old ctime, and a file renamed into place has another inode.
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size)


def file_key(path: str) -> tuple:
    """What identifies a file's current content cheaply: resolved path and its stat.

    A directory (a zarr store) is keyed by every file under it, because rewriting a chunk in
    place changes the chunk's stat but not the directory's.
    """
    p = Path(path)
    try:
        if p.is_dir():
            files = sorted((q for q in p.rglob("*") if q.is_file()), key=lambda q: q.as_posix())
            return (str(p.resolve()), tuple((q.relative_to(p).as_posix(), *_stat_key(q.stat())) for q in files))
        return (str(p.resolve()), *_stat_key(p.stat()))
    except (OSError, RuntimeError):  # missing, unreadable, a symlink loop: the reader names it
        return (str(p), None, None)


def _close(value) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - a handle that cannot close is dropped all the same
            pass


def cached_by_file_version(maxsize: int = 2):
    """Like ``lru_cache`` for ``fn(key, path, *rest)`` with ``key = file_key(path)``, and more:
    when a path shows up with a new key, what was parsed from its old version is closed first.

    Lazily opened files (NetCDF/HDF5) keep a handle; HDF5 shares one open file per inode, so a
    file rewritten in place and opened again would be served from the stale handle's cache.
    Closing the old version before the new one is opened is what makes a changed file read as
    it now is.
    """
    def decorate(fn):
        entries: OrderedDict = OrderedDict()
        lock = threading.RLock()

        @wraps(fn)
        def cached(key, path, *rest):
            name = (str(path), rest)
            with lock:
                hit = entries.get(name)
                if hit is not None and hit[0] == key:
                    entries.move_to_end(name)
                    return hit[1]
                for other in [n for n, (k, _) in entries.items() if n[0] == str(path) and k != key]:
                    _close(entries.pop(other)[1])
            value = fn(key, path, *rest)
            with lock:
                entries[name] = (key, value)
                entries.move_to_end(name)
                while len(entries) > maxsize:
                    entries.popitem(last=False)  # evicted, not closed: a thread may still be reading it
            return value

        cached.cache_clear = lambda: entries.clear()
        return cached
    return decorate


@lru_cache(maxsize=8)
def _cached_digest(key: tuple, path: str) -> str:
    return file_digest(path)


def input_digest(path: str) -> str:
    """Digest of an input (a file, a directory, or a glob's directory), computed once per process
    while it is unchanged."""
    target = str(Path(path).parent) if is_glob(path) else str(path)
    return _cached_digest(file_key(target), target)


class InputChanged(ValueError):
    """The input no longer matches the digest its store recorded when the run began."""


def check_input_unchanged(input_name: str, digest_now: Callable[[], str], recorded: str | None,
                          store_path) -> None:
    """Refuse to go on when the input no longer has the digest ``recorded`` in its store.

    Called before every region and again before its results are written, so each region comes
    from the data the provenance describes: a file replaced mid-run fails the run instead of
    leaving a store that mixes two inputs under the first one's digest. Cheap while the file is
    unchanged (the digest is cached under its stat); a changed file is read once to digest it.
    """
    if not recorded:
        return
    try:
        now = digest_now()
    except (OSError, InvalidMeasurement) as exc:
        raise InputChanged(f"{input_name}: the input of {store_path} can no longer be read ({exc})") from exc
    if now != recorded:
        raise InputChanged(
            f"{input_name}: changed since this run began (its store {store_path} records {recorded[:19]}, "
            f"the input now has {now[:19]}); the regions already written come from the original. Put the "
            f"original back and rerun to resume, or rerun with --overwrite to start again on the new data")


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
