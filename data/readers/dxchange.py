"""Reader for Data Exchange HDF5 files (raw synchrotron projections, parallel beam).

The raw counts need flat/dark correction and ``-log`` before they are line integrals, and the
file does not say where the rotation axis is. The axis position is expressed in the schema as
``detector_offset_mm`` (the detector itself is kept as measured, no shift or crop): the axis is at
pixel ``c``, so ``s_c = 0`` gives ``detector_offset_mm = ((K - 1) / 2 - c) * d``.
"""

from __future__ import annotations

import numpy as np

from inversa.data.readers.hdf5_access import hdf5_file
from inversa.data.errors import CorruptFile, InvalidMeasurement, ShapeMismatch
from inversa.data.readers.center_of_rotation import center_of_mass_fit
from inversa.data.readers.sniff import require_exists
from inversa.data.schema import build_ct, check_finite

DATA, WHITE, DARK, THETA = "exchange/data", "exchange/data_white", "exchange/data_dark", "exchange/theta"
# Transmission below this is treated as this (a dead or saturated pixel must not give -log(0)).
MIN_TRANSMISSION = 1e-6


def _read(f, path, name: str, required: bool = True):
    if name not in f:
        if required:
            raise InvalidMeasurement(path, name, "a dataset present in the Data Exchange file", "none")
        return None, {}
    try:
        node = f[name]
        return np.asarray(node[()]), dict(node.attrs)
    except (OSError, KeyError, RuntimeError) as err:
        raise CorruptFile(path, name, "a readable HDF5 dataset", f"{type(err).__name__}: {err}") from None


def _stack(values, path, name: str, rows: int, cols: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (rows, cols):
        raise ShapeMismatch(path, name, f"an array (n, {rows}, {cols}) matching exchange/data's rows and columns",
                            f"shape {arr.shape}")
    check_finite(arr, path, name)
    return arr.mean(axis=0)


def _theta_radians(theta, attrs, path) -> np.ndarray:
    units = attrs.get("units", b"degrees")
    units = units.decode() if isinstance(units, bytes) else str(units)
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    check_finite(theta, path, THETA)
    if units.lower().startswith("rad"):
        return theta
    if not units.lower().startswith("deg"):
        raise InvalidMeasurement(path, f"{THETA}@units", "'degrees' or 'radians'", repr(units))
    return np.deg2rad(theta)


def read_dxchange(path, center_of_rotation: float | None = None, detector_spacing_mm: float = 1.0):
    """Read raw projections, correct them and return a parallel-beam measurement.

    ``center_of_rotation`` (pixel index along the detector, may be fractional) overrides the
    automatic centre-of-mass estimate. ``detector_spacing_mm`` is not stored in Data Exchange
    files; the default 1.0 mm makes the sinogram and grids read in pixel units.
    """

    path = require_exists(path)
    with hdf5_file(path, on_error=lambda err: CorruptFile(path, "(HDF5 file)", "a complete, readable HDF5 file", str(err))) as f:
        data, _ = _read(f, path, DATA)
        white, _ = _read(f, path, WHITE)
        dark, _ = _read(f, path, DARK, required=False)
        theta, theta_attrs = _read(f, path, THETA)
    if data.ndim != 3:
        raise ShapeMismatch(path, DATA, "a 3D array (angle, row, column)", f"shape {data.shape}")
    data = data.astype(np.float64)
    check_finite(data, path, DATA)
    _, rows, cols = data.shape
    flat = _stack(white, path, WHITE, rows, cols)
    dark_mean = np.zeros((rows, cols)) if dark is None else _stack(dark, path, DARK, rows, cols)
    angles = _theta_radians(theta, theta_attrs, path)
    if angles.size != data.shape[0]:
        raise ShapeMismatch(path, THETA, f"{data.shape[0]} angles (axis 0 of {DATA} {data.shape})",
                            f"{angles.size} angles")
    transmission = (data - dark_mean) / np.maximum(flat - dark_mean, MIN_TRANSMISSION)
    sino = -np.log(np.clip(transmission, MIN_TRANSMISSION, None))
    sino = np.ascontiguousarray(sino.transpose(1, 0, 2))  # rows become slices
    if center_of_rotation is None:
        center, residual = center_of_mass_fit(sino.sum(axis=0), angles)
        method = f"centre-of-mass sinusoid fit over all views (rms residual {residual:.3g} px)"
    else:
        center, method = float(center_of_rotation), "given"
        if not np.isfinite(center):
            raise InvalidMeasurement(path, "center_of_rotation", "a finite pixel position", repr(center))
    attrs = {
        "geometry": "parallel",
        "detector_spacing_mm": float(detector_spacing_mm),
        "detector_offset_mm": ((cols - 1) / 2.0 - center) * float(detector_spacing_mm),
        "center_of_rotation_px": center,
        "center_of_rotation_method": method,
        "units": "1",
        "format": "dxchange",
    }
    return build_ct(sino, angles, attrs, source=path, sinogram_name=DATA, angles_name=THETA)
