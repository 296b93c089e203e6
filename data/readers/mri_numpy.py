"""NumPy k-space: a bare complex ``.npy`` array or an ``.npz`` archive with named arrays.

A ``.npy`` is read by rank (C order, as NumPy code writes it): ``(ky, kx)`` single-coil,
``(coil, ky, kx)``, ``(slice, coil, ky, kx)``; ``axes=`` names the axes otherwise (``ky``/``y``
rows, ``kx``/``x`` columns, ``coil``, ``slice``). Its sampling pattern is where any coil is
nonzero (sigpy's tutorial data are stored that way). An ``.npz`` holds ``kspace`` (as a
``.npy``), optional ``mask`` (``(ky,)`` lines, ``(ky, kx)`` or ``(slice, ky, kx)``),
``sensitivity`` and ``reference`` in the output orientation, and scalar attrs
(``noise_sigma``, ``units``, ``field_of_view_mm``, ``readout_oversampling``).
"""

from __future__ import annotations

import zipfile

import numpy as np

from inversa.data.errors import CorruptFile, InvalidMeasurement, ShapeMismatch
from inversa.data.mri import KSPACE, MASK, REFERENCE, SENSITIVITY, build_mri
from inversa.data.readers.mri_common import parse_axes, to_schema_order
from inversa.data.readers.sniff import NUMPY_MAGIC, require_exists

DEFAULT_AXES = {2: "ky kx", 3: "coil ky kx", 4: "slice coil ky kx"}
ATTR_KEYS = ("noise_sigma", "units", "field_of_view_mm", "readout_oversampling")


def _load(path):
    with open(path, "rb") as f:
        is_npy = f.read(6) == NUMPY_MAGIC
    try:
        loaded = np.load(path, allow_pickle=False)
        if is_npy:
            return {KSPACE: np.asarray(loaded)}, True
        with loaded:
            return {k: loaded[k] for k in loaded.files}, False
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptFile(path, "(NumPy file)", "a complete .npy or .npz file",
                          f"{type(err).__name__}: {err}") from None


def _attr(value):
    value = np.asarray(value)
    if value.dtype.kind in "US":
        return str(value.item())
    return value.item() if value.ndim == 0 else value.tolist()


def read_mri_numpy(path, axes=None, mask=None, **attrs):
    """Read ``.npy``/``.npz`` k-space as a validated MRI measurement (see the module docstring).

    ``mask``: a bool array overriding the archive's (or the nonzero pattern); ``attrs`` override
    the archive's scalar attrs.
    """
    path = require_exists(path)
    arrays, is_npy = _load(path)
    if KSPACE not in arrays:
        raise InvalidMeasurement(path, KSPACE, "an array named 'kspace' in the .npz archive",
                                 f"arrays {sorted(arrays)}")
    name = "(array)" if is_npy else KSPACE
    values = arrays.pop(KSPACE)
    if not np.iscomplexobj(values):
        raise InvalidMeasurement(path, name, "complex k-space (complex64)", f"real-valued dtype {values.dtype}")
    if axes is None:
        if values.ndim not in DEFAULT_AXES:
            raise ShapeMismatch(path, name, "(ky, kx), (coil, ky, kx) or (slice, coil, ky, kx), or axes= naming "
                                "each axis", f"shape {values.shape}")
        axes = DEFAULT_AXES[values.ndim]
    kspace = np.ascontiguousarray(to_schema_order(values, parse_axes(axes, values.ndim, path, name), path, name))
    stored_mask = arrays.pop(MASK, None)
    if mask is None and stored_mask is not None:
        mask = np.asarray(stored_mask)
        if mask.ndim == 1:
            if mask.size != kspace.shape[2]:
                raise ShapeMismatch(path, MASK, f"a line mask of {kspace.shape[2]} ky lines", f"shape {mask.shape}")
            mask = np.broadcast_to(mask[:, None], kspace.shape[2:])
    sensitivity = arrays.pop(SENSITIVITY, None)
    reference = arrays.pop(REFERENCE, None)
    stored = {}
    for key, value in arrays.items():
        if key in ATTR_KEYS or np.ndim(value) == 0:
            stored[key] = _attr(value)
        else:
            raise InvalidMeasurement(path, key, f"one of kspace, mask, sensitivity, reference or scalar attrs "
                                     f"{ATTR_KEYS}", f"an array of shape {np.shape(value)}")
    merged = {**stored, **attrs, "format": "numpy"}
    return build_mri(kspace, mask, sensitivity=sensitivity, reference=reference, attrs=merged, source=path,
                     kspace_name=name)
