"""Reader for bare NumPy arrays (.npy) and archives (.npz).

A bare array carries no angles or geometry, so they must come from the caller; nothing is
guessed, because a guessed geometry gives a plausible-looking but wrong reconstruction.
"""

from __future__ import annotations

import zipfile

import numpy as np

from inversa.data.errors import CorruptFile, InvalidMeasurement, MissingGeometry
from inversa.data.readers.sniff import NUMPY_MAGIC, require_exists
from inversa.data.schema import build_ct

GEOMETRY_KEYS = ("geometry", "detector_spacing_mm", "detector_offset_mm", "source_origin_mm",
                 "origin_detector_mm", "noise_sigma", "noise_model", "image_size", "pixel_size_mm", "units")


def _scalar(value):
    arr = np.asarray(value)
    if arr.ndim != 0:
        return value
    item = arr.item()
    return item.decode() if isinstance(item, bytes) else item


def _required_geometry(path, options: dict, where: str) -> None:
    missing = []
    if options.get("angles") is None:
        missing.append("angles")
    if options.get("geometry") is None:
        missing.append("geometry")
    if options.get("detector_spacing_mm") is None:
        missing.append("detector_spacing_mm")
    if options.get("geometry") == "fan":
        missing += [k for k in ("source_origin_mm", "origin_detector_mm") if options.get(k) is None]
    if missing:
        raise MissingGeometry(
            path, ", ".join(missing),
            f"{', '.join(missing)} given {where} (angles in radians, distances in mm)", "none",
        )


def read_numpy(path, **options):
    """Read ``.npy`` (array only) or ``.npz`` (``sinogram``, ``angles``, optional scalar geometry).

    Options (``angles`` in radians, ``geometry``, ``detector_spacing_mm``, for fan
    ``source_origin_mm``/``origin_detector_mm``, and the other schema attrs) override entries of
    an ``.npz``; for ``.npy`` they are required.
    """
    path = require_exists(path)
    with open(path, "rb") as f:
        is_npy = f.read(6) == NUMPY_MAGIC
    try:
        loaded = np.load(path, allow_pickle=False)
        if is_npy:
            sino, stored = loaded, {}
        else:
            with loaded:
                if "sinogram" not in loaded.files:
                    raise InvalidMeasurement(path, "sinogram", "an array named 'sinogram' in the .npz archive",
                                             f"arrays {sorted(loaded.files)}")
                sino = loaded["sinogram"]
                stored = {k: _scalar(loaded[k]) for k in loaded.files if k != "sinogram"}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        if isinstance(err, InvalidMeasurement):
            raise
        raise CorruptFile(path, "(NumPy file)", "a complete .npy or .npz file", f"{type(err).__name__}: {err}") from None
    merged = {**stored, **{k: v for k, v in options.items() if v is not None}}
    _required_geometry(path, merged, "as options" if is_npy else "in the .npz or as options")
    angles = np.asarray(merged.pop("angles"), dtype=np.float64)
    attrs = {k: merged[k] for k in GEOMETRY_KEYS if k in merged}
    attrs["format"] = "numpy"
    return build_ct(sino, angles, attrs, source=path, sinogram_name="sinogram" if not is_npy else "(array)",
                    angles_name="angles")
