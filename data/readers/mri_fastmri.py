"""fastMRI-style HDF5 k-space: ``kspace``, ``ismrmrd_header`` and an optional ``mask``.

fastMRI's own files store ``kspace`` as ``(slice, coil, readout, phase)`` (e.g. 640 x 368 for
the knee, readout first) and a 1-D ``mask`` over the phase-encode lines. docs/conventions.md
puts the readout along the columns (``kx``) and the phase encode along the rows (``ky``), so the
reader finds the readout axis by matching the header's encoded readout size (ISMRMRD ``x``):

- the second-to-last axis matches: fastMRI's layout, the last two axes are swapped (images come
  out transposed relative to fastMRI's figures: the readout is horizontal here);
- the last axis matches: already ``(ky, kx)``, as :func:`write_fastmri` writes it;
- both match (a square encoded matrix): the ``axes`` attribute of the ``kspace`` dataset
  (``"slice coil ky kx"`` from :func:`write_fastmri`) decides, else fastMRI's layout.

Readout oversampling is removed as fastMRI does (inverse FFT along the readout, central crop to
the recon width, FFT back), recorded in ``readout_oversampling_removed``. Without ``mask`` the
sampled lines are those holding any nonzero sample. ``reconstruction_rss`` (fastMRI's reference)
is read by ``data.readers.mri_reference``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inversa.data.readers.hdf5_access import hdf5_file
from inversa.data.errors import CorruptFile, InvalidMeasurement, MissingGeometry, ShapeMismatch
from inversa.data.mri import KSPACE, MASK, SENSITIVITY, build_mri, nonzero_mask
from inversa.data.readers.ismrmrd_header import Encoding, make_header, parse_header
from inversa.data.readers.mri_common import cartesian_attrs_and_crop, plain_attrs
from inversa.data.readers.sniff import require_exists

HEADER = "ismrmrd_header"
OUR_AXES = "slice coil ky kx"
_SKIP_ATTRS = ("matrix", "field_of_view_mm", "readout_oversampling", "acceleration", "source", "format")


def _open(path):
    return hdf5_file(path, on_error=lambda err: CorruptFile(path, "(HDF5 file)", "a readable HDF5 file", f"{err}"))


def read_header_text(f, path) -> str:
    if HEADER not in f:
        raise MissingGeometry(path, HEADER, "an ISMRMRD XML header string (encoded matrix and field of view)",
                              "none")
    raw = f[HEADER][()]
    if isinstance(raw, np.ndarray):
        raw = raw.item() if raw.size == 1 else b"".join(raw.tolist())
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)


def fastmri_layout(shape: tuple[int, ...], encoding: Encoding, axes_attr, path) -> bool:
    """True when the last two axes are fastMRI's ``(readout, phase)``, False for ``(ky, kx)``."""
    if axes_attr is not None:
        names = str(axes_attr.decode() if isinstance(axes_attr, bytes) else axes_attr).split()
        if names[-2:] == ["ky", "kx"]:
            return False
        if names[-2:] == ["kx", "ky"]:
            return True
        raise InvalidMeasurement(path, f"{KSPACE}.attrs['axes']", "axes ending in 'ky kx' or 'kx ky'", repr(axes_attr))
    readout = encoding.encoded_matrix[0]
    first, last = shape[-2], shape[-1]
    if first == readout:
        return True
    if last == readout:
        return False
    raise ShapeMismatch(path, KSPACE, f"one of the last two axes of the encoded readout length {readout} "
                        f"({HEADER}: encodedSpace/matrixSize/x)", f"shape {shape}")


def _mask(f, path, kshape: tuple[int, ...], transposed: bool):
    if MASK not in f:
        return None
    mask = np.asarray(f[MASK][()])
    n_slices, ny, nx = kshape[0], kshape[-2], kshape[-1]
    if mask.ndim == 1:
        if mask.size != ny:
            raise ShapeMismatch(path, MASK, f"a line mask of {ny} phase-encode lines", f"shape {mask.shape}")
        mask = np.broadcast_to(mask.reshape(ny, 1), (ny, nx))
    elif mask.ndim in (2, 3):
        if transposed:
            mask = np.swapaxes(mask, -1, -2)
        if mask.shape not in ((ny, nx), (n_slices, ny, nx)):
            raise ShapeMismatch(path, MASK, f"a mask of {ny} lines (1-D), (ky, kx) = {(ny, nx)} or (slice, ky, kx)",
                                f"shape {np.asarray(f[MASK]).shape}")
    else:
        raise ShapeMismatch(path, MASK, "a 1-D, 2-D or 3-D mask", f"shape {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise InvalidMeasurement(path, MASK, "0/1 or boolean values", f"values {np.unique(mask)[:5].tolist()}")
    return np.ascontiguousarray(mask.astype(bool))


def read_fastmri(path, remove_oversampling: bool = True, slices=None):
    """Read a fastMRI-style HDF5 file as a validated MRI measurement.

    ``kspace``: ``(slice, coil, ., .)`` or single-coil ``(slice, ., .)``; layout and readout
    oversampling from ``ismrmrd_header`` (required: its ``encodedSpace/matrixSize``); optional
    ``mask`` (1-D over lines, or 2-D/3-D in the file's layout) and ``sensitivity``; ``slices``:
    an index, slice or list of slices to read (default all).
    """
    path = require_exists(path)
    with _open(path) as f:
        if KSPACE not in f:
            raise InvalidMeasurement(path, KSPACE, "a dataset 'kspace' (slice, coil, ky, kx)",
                                     f"entries {sorted(f.keys())}")
        dset = f[KSPACE]
        if dset.ndim not in (3, 4):
            raise ShapeMismatch(path, KSPACE, "(slice, coil, ky, kx) or single-coil (slice, ky, kx)",
                                f"shape {dset.shape}")
        if dset.dtype.kind != "c":
            raise InvalidMeasurement(path, KSPACE, "complex k-space (complex64)", f"real-valued dtype {dset.dtype}")
        encoding = parse_header(read_header_text(f, path), path, HEADER)
        if encoding.encoded_matrix[2] != 1:
            raise InvalidMeasurement(path, f"{HEADER}: encodedSpace/matrixSize/z", "2-D k-space (z = 1)",
                                     f"z = {encoding.encoded_matrix[2]}")
        transposed = fastmri_layout(dset.shape, encoding, dset.attrs.get("axes"), path)
        chosen = _slice_indices(slices, dset.shape[0], path)
        sel = slice(None) if len(chosen) == dset.shape[0] else chosen
        kspace = np.asarray(dset[sel])
        if dset.ndim == 3:
            kspace = kspace[:, None]
        if transposed:
            kspace = np.swapaxes(kspace, -1, -2)
        mask = _mask(f, path, (dset.shape[0], *kspace.shape[-2:]), transposed)
        if mask is not None and mask.ndim == 3:
            mask = mask[chosen]
        sensitivity = None
        if SENSITIVITY in f:
            sensitivity = np.asarray(f[SENSITIVITY][sel])
            if transposed:
                sensitivity = np.swapaxes(sensitivity, -1, -2)
        file_attrs = plain_attrs(f.attrs, skip=_SKIP_ATTRS)
    if mask is None:
        mask = nonzero_mask(kspace, lines=True)
    kspace, mask, geometry = cartesian_attrs_and_crop(np.ascontiguousarray(kspace), mask, encoding, path,
                                                      remove_oversampling)
    attrs = {**file_attrs, **geometry, "format": "fastmri",
             "layout": "fastmri (readout, phase): transposed" if transposed else "(ky, kx)"}
    return build_mri(kspace, mask, sensitivity=sensitivity, attrs=attrs, source=path,
                     coords={"slice": np.asarray(chosen)})


def _slice_indices(slices, n: int, path) -> list[int]:
    """``slices`` (None, an int, a slice or a sequence) as a sorted list, for h5py's fancy indexing."""
    try:
        chosen = np.arange(n)[slice(None) if slices is None else slices]
    except (IndexError, TypeError):
        raise InvalidMeasurement(path, "slices", f"slice indices within 0..{n - 1}", repr(slices)) from None
    chosen = sorted(set(np.atleast_1d(chosen).tolist()))
    if not chosen:
        raise InvalidMeasurement(path, "slices", "at least one slice", repr(slices))
    return chosen


def write_fastmri(path, ds, sensitivity: bool = True) -> Path:
    """Write a validated MRI measurement as a fastMRI-style HDF5 file, in ``(ky, kx)`` layout.

    Datasets: ``kspace`` (slice, coil, ky, kx) complex64 with ``attrs['axes'] = "slice coil ky
    kx"``, ``mask`` (ky, kx) or (slice, ky, kx) uint8, ``sensitivity`` when present (and asked
    for), ``ismrmrd_header`` (encoded and recon matrix and field of view). Scalar attrs of the
    dataset become file attrs.
    """
    import h5py

    path = Path(path)
    ny, nx = ds.sizes["ky"], ds.sizes["kx"]
    fov = ds.attrs.get("field_of_view_mm")
    header = make_header((ny, nx), fov, n_slices=ds.sizes["slice"], n_coils=ds.sizes["coil"])
    with h5py.File(path, "w") as f:
        k = f.create_dataset(KSPACE, data=np.asarray(ds[KSPACE].values, dtype=np.complex64))
        k.attrs["axes"] = OUR_AXES
        f.create_dataset(MASK, data=np.asarray(ds[MASK].values, dtype=np.uint8))
        if sensitivity and SENSITIVITY in ds:
            f.create_dataset(SENSITIVITY, data=np.asarray(ds[SENSITIVITY].values, dtype=np.complex64))
        f.create_dataset(HEADER, data=header)
        for key, value in plain_attrs(ds.attrs, skip=("source",)).items():
            f.attrs[key] = value
    return path
