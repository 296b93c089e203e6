"""Reference magnitude images for MRI metrics: ``(slice, y, x)`` float32.

Sources: NetCDF (``reference``, as ``data.synthetic_mri.write_mri_study`` writes ``*_truth.nc``),
fastMRI HDF5 (``reconstruction_rss``, or ``reconstruction_esc`` for single-coil, or
``reference``), NumPy ``.npy``/``.npz``. A complex image is reduced to its magnitude.

fastMRI's references are drawn in fastMRI's layout (the readout along the rows); where the
same file holds k-space that ``read_fastmri`` transposes, the reference is transposed too, so
image and reference agree. fastMRI's ``reconstruction_rss`` is the 320 x 320 display crop, not
the k-space grid: compare against the centre crop of a reconstruction (``recon_matrix`` attr).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from inversa.data.readers.hdf5_access import hdf5_file
from inversa.data.errors import InvalidMeasurement, ShapeMismatch
from inversa.data.mri import IMAGE_DIMS
from inversa.data.readers.mri_fastmri import HEADER, fastmri_layout, read_header_text
from inversa.data.readers.ismrmrd_header import parse_header
from inversa.data.readers.reference import _load_numpy, _pick
from inversa.data.readers.sniff import NUMPY_MAGIC, ZIP_MAGIC, hdf5_signature_offset, require_exists
from inversa.data.readers.xarray_files import open_dataset_file
from inversa.data.schema import check_finite

PREFERRED = ("reference", "reconstruction_rss", "reconstruction_esc", "image", "truth")


def _from_hdf5(path, variable: str | None):
    """(values, name, transposed) from fastMRI-style HDF5, or None when the file is NetCDF-4."""
    import h5py

    with hdf5_file(path) as f:
        datasets = {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}
        fastmri = "kspace" in datasets or "reconstruction_rss" in datasets or "reconstruction_esc" in datasets
        if not fastmri:
            return None
        name = _pick(path, {k: np.empty((0,) * v.ndim) for k, v in datasets.items() if k != HEADER and k != "mask"
                            and k != "kspace"}, variable, PREFERRED)
        values = np.asarray(f[name][()])
        transposed = False
        if "kspace" in datasets and HEADER in f:
            encoding = parse_header(read_header_text(f, path), path, HEADER)
            transposed = fastmri_layout(f["kspace"].shape, encoding, f["kspace"].attrs.get("axes"), path)
        if transposed:
            values = np.swapaxes(values, -1, -2)
    return values, name, transposed


def read_mri_reference(path, variable: str | None = None) -> xr.DataArray:
    """Read a reference magnitude image as ``(slice, y, x)`` float32 with ``attrs['kind'] = 'image'``.

    ``variable``: the array's name; default the first of ``reference``, ``reconstruction_rss``,
    ``reconstruction_esc``, ``image``, ``truth``, else the only 2-D/3-D array.
    """
    path = require_exists(path)
    with open(path, "rb") as f:
        head = f.read(2056)
    attrs: dict = {}
    transposed = False
    if head.startswith(NUMPY_MAGIC) or head.startswith(ZIP_MAGIC):
        available = _load_numpy(path)
        name = _pick(path, available, variable, PREFERRED)
        values = np.asarray(available[name])
    else:
        found = _from_hdf5(path, variable) if hdf5_signature_offset(head) is not None else None
        if found is not None:
            values, name, transposed = found
        else:
            ds = open_dataset_file(path, "netcdf")
            name = _pick(path, {str(k): v for k, v in ds.data_vars.items()}, variable, PREFERRED)
            values = np.asarray(ds[name].values)
            attrs.update({k: ds.attrs[k] for k in ("field_of_view_mm", "pixel_size_mm", "units") if k in ds.attrs})
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ShapeMismatch(path, name, "a 2-D (y, x) or 3-D (slice, y, x) image", f"shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number):
        raise InvalidMeasurement(path, name, "a numeric magnitude image", f"dtype {values.dtype}")
    if np.iscomplexobj(values):
        values = np.abs(values)
        attrs["from_complex"] = 1
    values = values.astype(np.float32)
    check_finite(values, path, name)
    attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v)
             for k, v in attrs.items()}
    return xr.DataArray(values, dims=IMAGE_DIMS, name=name, coords={"slice": np.arange(values.shape[0])},
                        attrs={**attrs, "kind": "image", "source": str(path), "variable": name,
                               "transposed_from_fastmri": int(transposed)})
