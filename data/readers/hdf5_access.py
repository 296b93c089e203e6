"""One lock for every use of the HDF5 library in a process.

HDF5 as the wheels build it is not thread-safe, and two libraries call it here: h5py (our
Data Exchange, fastMRI, ISMRMRD and MATLAB readers, the format sniffers) and netCDF4 (through
xarray, for NetCDF inputs and references). Each guards itself with its own lock, h5py with its
global ``phil``, xarray with ``HDF5_LOCK``, so an h5py read in one thread and a NetCDF read or
close in another entered HDF5 together: a batch of NetCDF datasets segfaulted now and then while
one thread sniffed a file and another read a sinogram. Opening h5py files through ``hdf5_file``
takes xarray's lock too, so the two never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from xarray.backends.locks import HDF5_LOCK


@contextmanager
def hdf5_file(path, mode: str = "r", on_error: Callable[[OSError], Exception] | None = None) -> Iterator:
    """``h5py.File(path, mode)``, open only while HDF5 is ours; a file that cannot be opened
    raises ``on_error(err)`` where given (a reader's message naming the file), else h5py's OSError."""
    import h5py

    with HDF5_LOCK:
        try:
            f = h5py.File(path, mode)
        except OSError as err:
            if on_error is None:
                raise
            raise on_error(err) from None
        with f:
            yield f


@contextmanager
def hdf5_locked() -> Iterator[None]:
    """HDF5 to ourselves for a library that opens files itself (the ``ismrmrd`` package)."""
    with HDF5_LOCK:
        yield
