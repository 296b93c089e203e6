"""What the MRI readers share: turning header geometry into schema attrs, removing readout
oversampling the same way for every format, and parsing an ``axes`` option.

Kept apart from the readers so that the fastMRI and ISMRMRD readers (both driven by an
ISMRMRD header) cannot drift apart in how they crop the readout or compute the field of view.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from inversa.data.errors import InvalidMeasurement
from inversa.data.mri import remove_readout_oversampling
from inversa.data.readers.ismrmrd_header import Encoding

AXIS_ALIASES = {
    "ky": "ky", "kx": "kx", "y": "ky", "x": "kx", "row": "ky", "rows": "ky", "col": "kx", "column": "kx",
    "columns": "kx", "phase": "ky", "pe": "ky", "read": "kx", "readout": "kx",
    "coil": "coil", "coils": "coil", "channel": "coil", "channels": "coil", "c": "coil",
    "slice": "slice", "slices": "slice", "z": "z", "kz": "z", "partition": "z",
}


def parse_axes(axes, ndim: int, source, variable: str, display_order: bool = False) -> list[str]:
    """``"x y z coil"`` (spaces or commas) -> canonical names (``ky``, ``kx``, ``coil``, ``slice``,
    ``z``), one per array axis, each at most once, the two in-plane axes required.

    ``display_order`` (MATLAB): in-plane axes called ``x``/``y`` are placed as MATLAB shows an
    array, the first of them (in the file's axis order) as rows (``ky``) and the second as
    columns (``kx``), whatever their names; ``ky``/``kx`` (and the other aliases) keep their meaning.
    """
    tokens = axes.replace(",", " ").split() if isinstance(axes, str) else [str(a) for a in axes]
    names = [AXIS_ALIASES.get(t.lower()) for t in tokens]
    plain = [i for i, t in enumerate(tokens) if t.lower() in ("x", "y")]
    if display_order and len(plain) == 2:
        names[plain[0]], names[plain[1]] = "ky", "kx"
    if len(tokens) != ndim or None in names or len(set(names)) != len(names) \
            or not {"ky", "kx"} <= set(names):
        raise InvalidMeasurement(source, variable, f"axes naming each of the array's {ndim} axes once, two of them "
                                 f"in-plane (ky/kx, y/x) and the others from coil, slice, z",
                                 f"axes {axes!r}")
    return names


def to_schema_order(array: np.ndarray, names: list[str], source, variable: str) -> np.ndarray:
    """Transpose an array with named axes to ``(slice, coil, ky, kx)``, adding missing ones.

    A partition axis ``z`` must have length 1: 3-D k-space needs an inverse FFT along ``kz``
    first, which is the caller's decision (it is exact only for fully sampled ``kz``).
    """
    if "z" in names:
        size = array.shape[names.index("z")]
        if size != 1:
            raise InvalidMeasurement(source, variable, "2-D k-space: a partition (z, kz) axis of length 1 (for "
                                     "3-D k-space inverse-FFT along kz first and name that axis 'slice')",
                                     f"{size} partitions")
        array = np.take(array, 0, axis=names.index("z"))
        names = [n for n in names if n != "z"]
    for name in ("slice", "coil"):
        if name not in names:
            array = array[None]
            names = [name, *names]
    return np.transpose(array, [names.index(n) for n in ("slice", "coil", "ky", "kx")])


def cartesian_attrs_and_crop(kspace: np.ndarray, mask: np.ndarray | None, encoding: Encoding, source,
                             remove_oversampling: bool, variable: str = "kspace"
                             ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Crop readout oversampling (when asked and the header shows some) and derive the geometry attrs.

    ``kspace``: ``(slice, coil, ky, kx)`` with ``kx`` the encoded readout. The field of view of
    the delivered grid: ``fov_y`` from the encoded space, ``fov_x`` the encoded one scaled by the
    readout samples kept. The scanner's recon matrix and field of view are kept as
    ``recon_matrix``/``recon_field_of_view_mm`` (fastMRI's 320 x 320 display crop).
    """
    enc_x = encoding.encoded_matrix[0]
    factor = max(1.0, encoding.readout_oversampling)
    attrs: dict[str, Any] = {}
    if remove_oversampling and factor > 1.0:
        kspace, mask = remove_readout_oversampling(kspace, mask, encoding.recon_matrix[0], source, variable)
        attrs["readout_oversampling"] = 1.0
        attrs["readout_oversampling_removed"] = float(factor)
    else:
        attrs["readout_oversampling"] = float(factor)
    nx = kspace.shape[-1]
    if encoding.encoded_fov_mm is not None:
        attrs["field_of_view_mm"] = [float(encoding.encoded_fov_mm[1]), float(encoding.encoded_fov_mm[0]) * nx / enc_x]
    if encoding.recon_matrix is not None:
        attrs["recon_matrix"] = [int(encoding.recon_matrix[1]), int(encoding.recon_matrix[0])]
    if encoding.recon_fov_mm is not None:
        attrs["recon_field_of_view_mm"] = [float(encoding.recon_fov_mm[1]), float(encoding.recon_fov_mm[0])]
    return kspace, mask, attrs


def plain_attrs(attrs: Mapping[str, Any], skip=()) -> dict[str, Any]:
    """File attributes as Python scalars, strings or lists of numbers; anything else dropped."""
    out = {}
    for key, value in attrs.items():
        if key in skip:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            if value.ndim > 1 or value.size > 16 or not np.issubdtype(value.dtype, np.number):
                continue
            value = value.tolist() if value.ndim else value.item()
        if isinstance(value, (str, int, float, bool, list)):
            out[str(key)] = value
    return out
