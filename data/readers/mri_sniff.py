"""Tell MRI k-space files apart from everything else, by content and without reading arrays.

A pipeline handed a file must know whether it is a CT sinogram or MRI k-space before it picks
a problem kind. Only headers are read: HDF5 object names and dtypes, a ``.npy`` header, a
``.npz`` member list, a BART ``.hdr``. A CT file (or anything else) gives None.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from inversa.data.readers.hdf5_access import hdf5_file
from inversa.data.errors import CorruptFile, MissingFile
from inversa.data.readers.sniff import NUMPY_MAGIC, ZIP_MAGIC, hdf5_signature_offset

MRI_FORMATS = ("fastmri", "ismrmrd", "bart", "matlab", "numpy")
MATLAB_73 = b"MATLAB 7.3"


def bart_pair(path: Path) -> Path | None:
    """The ``.hdr`` of a BART pair named by ``name``, ``name.cfl`` or ``name.hdr``, if it is one."""
    base = path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    if hdr.is_file() and cfl.is_file():
        with open(hdr, "rb") as f:
            if f.read(64).lstrip().lower().startswith(b"# dimensions"):
                return hdr
    return None


def ismrmrd_group(f) -> str | None:
    """The name of the first top-level group holding ISMRMRD ``xml`` and ``data`` (``dataset`` first)."""
    import h5py

    names = sorted(f.keys(), key=lambda n: (n != "dataset", n))
    for name in names:
        group = f[name]
        if isinstance(group, h5py.Group) and "xml" in group and "data" in group:
            return name
    return None


def _hdf5_format(path: Path, matlab: bool) -> str | None:
    import h5py

    from inversa.data.readers.mri_matlab import complex_variables

    try:
        with hdf5_file(path) as f:
            if matlab:
                return "matlab" if complex_variables(f) else None
            if "kspace" in f and isinstance(f["kspace"], h5py.Dataset):
                return "fastmri"
            return "ismrmrd" if ismrmrd_group(f) is not None else None
    except OSError as err:
        raise CorruptFile(path, "(HDF5 superblock)", "a readable HDF5 file", f"{err}") from None


def _numpy_format(path: Path, head: bytes) -> str | None:
    if head.startswith(NUMPY_MAGIC):
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                _, _, dtype = read_header(f)
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFile(path, "(NumPy header)", "a readable .npy header", f"{err}") from None
        return "numpy" if np.dtype(dtype).kind == "c" else None
    try:
        with zipfile.ZipFile(path) as z:
            return "numpy" if "kspace.npy" in z.namelist() else None
    except zipfile.BadZipFile:
        return None


def mri_format(path) -> str | None:
    """One of :data:`MRI_FORMATS` when ``path`` holds MRI k-space, else None (a CT file, say).

    fastMRI: HDF5 with a ``kspace`` dataset; ISMRMRD: HDF5 with a group holding ``xml`` and
    ``data``; MATLAB: a v7.3 file with a complex array; NumPy: a complex ``.npy`` or an ``.npz``
    with ``kspace``; BART: a ``.cfl``/``.hdr`` pair (the path may name either or the stem).
    """
    path = Path(path)
    if not path.exists():
        if bart_pair(path) is not None:
            return "bart"
        raise MissingFile(path, "(file)", "an existing file", "nothing at that path")
    if path.is_dir():
        return None
    if path.suffix in (".cfl", ".hdr"):
        return "bart" if bart_pair(path) is not None else None
    with open(path, "rb") as f:
        head = f.read(2056)
    if head.startswith(NUMPY_MAGIC) or head.startswith(ZIP_MAGIC):
        return _numpy_format(path, head)
    if hdf5_signature_offset(head) is not None:
        return _hdf5_format(path, head.startswith(MATLAB_73))
    return "bart" if bart_pair(path) is not None else None
