"""Reference images and segmentations (the "truth" a reconstruction is scored against).

They come in the organisers' MATLAB files (HTC2022), NumPy arrays, or NetCDF/zarr written by
:mod:`data.synthetic`. All come back as ``(slice, y, x)`` with ``attrs['kind']`` telling an image
from a segmentation, because the scoring differs (PSNR/SSIM versus MCC).
"""

from __future__ import annotations

import zipfile
import zlib

import numpy as np
import xarray as xr

from inversa.data.errors import CorruptFile, InvalidMeasurement, ShapeMismatch
from inversa.data.readers.sniff import detect_format, require_exists
from inversa.data.readers.xarray_files import open_dataset_file
from inversa.data.schema import check_finite

# Known variable names, most specific first.
HTC_VARIABLES = ("reconFullFbpSeg", "reconFullFbp", "reconLimitedFbpSeg", "reconLimitedFbp")
DATASET_VARIABLES = ("reference", "truth", "image", "segmentation")
REFERENCE_DIMS = ("slice", "y", "x")
# The organisers' FBP images are in attenuation per pixel of this size (SOURCES.md grid):
# multiply by 1 / HTC_PIXEL_SIZE_MM for attenuation per mm.
HTC_PIXEL_SIZE_MM = 0.1483223173330444


def _pick(path, available: dict, variable: str | None, preferred: tuple[str, ...]):
    if variable is not None:
        if variable not in available:
            raise InvalidMeasurement(path, variable, "a variable of that name", f"variables {sorted(available)}")
        return variable
    for name in preferred:
        if name in available:
            return name
    arrays = [k for k, v in available.items() if np.ndim(v) in (2, 3)]
    if len(arrays) == 1:
        return arrays[0]
    raise InvalidMeasurement(path, " or ".join(preferred), "one of these variables, or a single 2D/3D array",
                             f"variables {sorted(available)}")


def _load_mat(path):
    import scipy.io

    try:
        contents = scipy.io.loadmat(path, squeeze_me=True)
    except (ValueError, TypeError, OSError, EOFError, zlib.error, IndexError, KeyError) as err:
        raise CorruptFile(path, "(MATLAB v5 file)", "a complete, readable MATLAB v5 file",
                          f"{type(err).__name__}: {err}") from None
    return {k: v for k, v in contents.items() if not k.startswith("__")}


def _load_numpy(path):
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"(array)": loaded}
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptFile(path, "(NumPy file)", "a complete .npy or .npz file", f"{type(err).__name__}: {err}") from None


def is_segmentation(values: np.ndarray) -> bool:
    """Binary or integer-valued arrays are segmentations; anything else is an image."""
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
        return True
    return bool(np.isin(np.unique(values), (0.0, 1.0)).all())


def read_reference(path, variable: str | None = None) -> xr.DataArray:
    """Read a reference image or segmentation as ``(slice, y, x)`` with ``attrs['kind']``.

    HTC2022: ``*_recon_fbp.mat`` -> ``reconFullFbp`` (image), ``*_seg.mat`` -> ``reconFullFbpSeg``
    (segmentation). NumPy/NetCDF/zarr: ``variable``, else the first of ``reference``, ``truth``,
    ``image``, ``segmentation``, else the only 2D/3D array. Images become float32, segmentations uint8.
    """
    path = require_exists(path)
    fmt = detect_format(path)
    attrs: dict = {}
    if fmt == "htc2022":
        available = _load_mat(path)
        name = _pick(path, available, variable, HTC_VARIABLES)
        values = np.asarray(available[name])
        if name in ("reconFullFbp", "reconLimitedFbp"):
            attrs.update(units="1/pixel", pixel_size_mm=HTC_PIXEL_SIZE_MM)
    elif fmt == "numpy":
        available = _load_numpy(path)
        name = _pick(path, available, variable, DATASET_VARIABLES)
        values = np.asarray(available[name])
    elif fmt in ("netcdf", "zarr"):
        ds = open_dataset_file(path, fmt)
        name = _pick(path, {str(k): v for k, v in ds.data_vars.items()}, variable, DATASET_VARIABLES)
        values = np.asarray(ds[name].values)
        attrs.update({k: v for k, v in ds.attrs.items() if k in ("pixel_size_mm", "units")})
        attrs.update({k: v for k, v in ds[name].attrs.items() if k in ("pixel_size_mm", "units")})
    else:
        raise InvalidMeasurement(path, "(file)", "a MATLAB v5, NumPy, NetCDF or zarr reference", f"format {fmt!r}")
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ShapeMismatch(path, name, "a 2D (y, x) or 3D (slice, y, x) array", f"shape {values.shape}")
    if not (values.dtype == bool or np.issubdtype(values.dtype, np.number)) or np.iscomplexobj(values):
        raise InvalidMeasurement(path, name, "real numbers", f"dtype {values.dtype}")
    check_finite(values.astype(np.float64, copy=False), path, name)
    kind = "segmentation" if is_segmentation(values) else "image"
    values = values.astype(np.uint8 if kind == "segmentation" else np.float32)
    return xr.DataArray(values, dims=REFERENCE_DIMS, name=name,
                        coords={"slice": np.arange(values.shape[0])},
                        attrs={**{k: v.item() if isinstance(v, np.generic) else v for k, v in attrs.items()},
                               "kind": kind, "source": str(path), "variable": name})
