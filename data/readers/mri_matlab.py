"""MATLAB v7.3 (HDF5) files holding complex k-space.

MATLAB stores a complex array as a compound dataset with fields ``real`` and ``imag`` (a struct
with ``real``/``imag`` fields is accepted as well), in reversed axis order: transposing what h5py
returns gives MATLAB's ``size()`` order. The ``axes`` option names those MATLAB axes, e.g.
``axes="x y z coil"`` for an ``[Nx, Ny, Nz, Nc]`` array.

Orientation: the two in-plane axes are placed as MATLAB displays the array (``imshow``): the
first of them (in MATLAB's order) becomes the rows (``ky``) and the second the columns
(``kx``), whatever they are called ``x`` or ``y``; name them ``ky``/``kx`` (or ``phase``/
``readout``) to choose otherwise. This is what makes the SENSE-tutorial brain
(``raw_data.mat``, ``[Nx, Ny, Nz, Nc]``) come out upright with its undersampled axis, MATLAB's
first, as the phase encode. Default axes by rank: 2-D ``x y``, 3-D ``x y coil``, 4-D ``x y z
coil``; a partition axis ``z`` must have length 1 (2-D k-space).
"""

from __future__ import annotations

import numpy as np

from inversa.data.readers.hdf5_access import hdf5_file
from inversa.data.errors import CorruptFile, InvalidMeasurement
from inversa.data.mri import build_mri
from inversa.data.readers.mri_common import parse_axes, to_schema_order
from inversa.data.readers.sniff import require_exists

DEFAULT_AXES = {2: "x y", 3: "x y coil", 4: "x y z coil"}
_INTERNAL = ("#refs#", "#subsystem#")


def _is_complex_dataset(obj) -> bool:
    import h5py

    if isinstance(obj, h5py.Dataset):
        names = obj.dtype.names or ()
        return "real" in names and "imag" in names or obj.dtype.kind == "c"
    if isinstance(obj, h5py.Group):
        return all(k in obj and isinstance(obj[k], h5py.Dataset) for k in ("real", "imag"))
    return False


def complex_variables(f) -> list[str]:
    """Paths of every complex array in an open MATLAB v7.3 file (compound or real/imag struct)."""
    found = []

    def visit(name, obj):
        if name.split("/")[0] in _INTERNAL:
            return
        if _is_complex_dataset(obj):
            found.append(name)

    f.visititems(visit)
    return sorted(found)


def _load(f, name: str, path) -> np.ndarray:
    import h5py

    obj = f[name]
    if isinstance(obj, h5py.Group):
        real, imag = np.asarray(obj["real"][()]), np.asarray(obj["imag"][()])
        if real.shape != imag.shape:
            raise CorruptFile(path, name, "real and imag fields of one shape", f"{real.shape} and {imag.shape}")
        values = real + 1j * imag
    else:
        raw = obj[()]
        values = raw if raw.dtype.kind == "c" else raw["real"] + 1j * raw["imag"]
    return np.asarray(values, dtype=np.complex64).transpose()


def read_matlab(path, variable: str | None = None, axes=None, mask=None, **attrs):
    """Read complex k-space from a MATLAB v7.3 file as a validated MRI measurement.

    ``variable``: the array's name (path) in the file; default the only complex array.
    ``axes``: names of the MATLAB axes (see the module docstring; default by rank).
    ``mask``: ``(ky, kx)``/``(slice, ky, kx)`` bool array in the output orientation; default the
    nonzero pattern. ``attrs``: schema attrs the file does not carry (``field_of_view_mm``,
    ``noise_sigma``, ``units``).
    """

    path = require_exists(path)
    with hdf5_file(path, on_error=lambda err: CorruptFile(path, "(HDF5 file)", "a readable MATLAB v7.3 (HDF5) file", f"{err}")) as f:
        candidates = complex_variables(f)
        if variable is None:
            if len(candidates) != 1:
                raise InvalidMeasurement(path, "(variable)", "exactly one complex array, or variable= naming one",
                                         f"complex arrays {candidates}" if candidates else "no complex array")
            variable = candidates[0]
        elif variable not in f:
            raise InvalidMeasurement(path, variable, "an array of that name", f"complex arrays {candidates}")
        elif variable not in candidates:
            raise InvalidMeasurement(path, variable, "complex k-space (a compound real/imag array)",
                                     f"a real-valued or non-array entry ({type(f[variable]).__name__})")
        values = _load(f, variable, path)
    if axes is None:
        if values.ndim not in DEFAULT_AXES:
            raise InvalidMeasurement(path, variable, "a 2-D, 3-D or 4-D array, or axes= naming each axis",
                                     f"shape {values.shape}")
        axes = DEFAULT_AXES[values.ndim]
    names = parse_axes(axes, values.ndim, path, variable, display_order=True)
    kspace = to_schema_order(values, names, path, variable)
    out_attrs = {**attrs, "format": "matlab", "variable": variable, "matlab_axes": " ".join(
        axes.split() if isinstance(axes, str) else map(str, axes))}
    return build_mri(np.ascontiguousarray(kspace), mask, attrs=out_attrs, source=path, kspace_name=variable)
