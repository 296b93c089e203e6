"""The CT measurement schema of docs/conventions.md, and its validator.

Every reader ends in :func:`validate_ct` (usually through :func:`build_ct`), so that nothing
downstream ever sees an array whose dims, dtype, angles or geometry have not been checked.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidMeasurement, MissingGeometry, NonFiniteValues, ShapeMismatch

SINOGRAM = "sinogram"
CT_DIMS = ("slice", "angle", "detector")
GEOMETRIES = ("parallel", "fan")
NOISE_MODELS = ("gaussian", "poisson")

# A span of more than two turns is almost certainly degrees passed as radians.
_TURN = 2.0 * math.pi  # a CT scan covers at most one turn (plus a view or two where both ends are kept)


def _positive_float(value: Any, source, name: str, error=InvalidMeasurement) -> float:
    try:
        number = float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise error(source, name, "a positive number", repr(value)) from None
    if not math.isfinite(number) or number <= 0:
        raise error(source, name, "a positive finite number", repr(number))
    return number


def _finite_float(value: Any, source, name: str) -> float:
    try:
        number = float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise InvalidMeasurement(source, name, "a finite number", repr(value)) from None
    if not math.isfinite(number):
        raise InvalidMeasurement(source, name, "a finite number", repr(number))
    return number


def check_finite(values: np.ndarray, source, name: str) -> None:
    """Raise NonFiniteValues naming how many and where the first bad value is."""
    check_finite_blocks([(0, values)], source, name)


def check_finite_blocks(blocks, source, name: str) -> None:
    """``check_finite`` over ``(first index along axis 0, block)`` pairs, holding one block at a time."""
    bad, first = 0, None
    for start, values in blocks:
        finite = np.isfinite(values)
        if finite.all():
            continue
        bad += int(values.size - np.count_nonzero(finite))
        if first is None:
            where = np.argwhere(~finite)[0]
            first = (int(where[0]) + start, *(int(i) for i in where[1:]))
    if bad:
        raise NonFiniteValues(
            source, name, "finite values only", f"{bad} NaN/Inf value(s), first at index {first}"
        )


def _slice_blocks(sino: xr.DataArray, target_bytes: int = 16 * 2**20):
    """``(first slice, block)`` over the sinogram, each block about ``target_bytes`` of float32."""
    per_slice = max(1, sino.sizes["angle"] * sino.sizes["detector"] * 4)
    step = max(1, target_bytes // per_slice)
    for first in range(0, sino.sizes["slice"], step):
        yield first, np.asarray(sino.isel(slice=slice(first, first + step)).values, dtype=np.float32)


def _validated_angles(angle, n_views: int, source) -> np.ndarray:
    angles = np.asarray(angle, dtype=np.float64)
    if angles.ndim != 1 or angles.size != n_views:
        raise ShapeMismatch(
            source, "angle", f"a 1D coordinate with {n_views} values (one per view)",
            f"shape {angles.shape}",
        )
    check_finite(angles, source, "angle")
    if n_views > 1:
        steps = np.diff(angles)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise InvalidMeasurement(
                source, "angle", "strictly monotonic view angles (no repeated views)",
                "angles that repeat or change direction",
            )
        span = float(abs(angles[-1] - angles[0]))
        if span > _TURN + 2.0 * span / (n_views - 1) + 1e-6:
            raise InvalidMeasurement(
                source, "angle", "angles in radians, spanning at most one turn (2 pi = 6.283)",
                f"a span of {span:.4g}, which looks like degrees ({math.degrees(span):.4g} degrees if it were "
                f"radians); convert with numpy.deg2rad",
            )
    return angles


def _plain(value: Any) -> Any:
    # NetCDF/zarr round trips hand back numpy scalars; keep attrs as plain Python values.
    return value.item() if isinstance(value, np.generic) else value


def _validated_attrs(attrs: Mapping[str, Any], source) -> dict:
    out = {k: _plain(v) for k, v in attrs.items()}
    geometry = out.get("geometry")
    if geometry not in GEOMETRIES:
        raise MissingGeometry(
            source, "geometry", "attribute 'geometry' equal to 'parallel' or 'fan'", repr(geometry)
        )
    if "detector_spacing_mm" not in out:
        raise MissingGeometry(source, "detector_spacing_mm", "a positive detector spacing in mm", "none")
    out["detector_spacing_mm"] = _positive_float(out["detector_spacing_mm"], source, "detector_spacing_mm")
    out["detector_offset_mm"] = _finite_float(out.get("detector_offset_mm", 0.0), source, "detector_offset_mm")
    if geometry == "fan":
        for name in ("source_origin_mm", "origin_detector_mm"):
            if out.get(name) is None:
                raise MissingGeometry(
                    source, name, f"attribute {name!r} (a positive distance in mm) for fan beam", "none"
                )
            out[name] = _positive_float(out[name], source, name, MissingGeometry)
    if out.get("noise_sigma") is not None:
        sigma = _finite_float(out["noise_sigma"], source, "noise_sigma")
        if sigma < 0:
            raise InvalidMeasurement(source, "noise_sigma", "a non-negative number", repr(sigma))
        out["noise_sigma"] = sigma
    if out.get("noise_model") is not None and out["noise_model"] not in NOISE_MODELS:
        raise InvalidMeasurement(source, "noise_model", f"one of {NOISE_MODELS}", repr(out["noise_model"]))
    if out.get("image_size") is not None:
        size = out["image_size"]
        if isinstance(size, (bool, np.bool_)) or int(size) != size or int(size) <= 0:
            raise InvalidMeasurement(source, "image_size", "a positive integer", repr(size))
        out["image_size"] = int(size)
    if out.get("pixel_size_mm") is not None:
        out["pixel_size_mm"] = _positive_float(out["pixel_size_mm"], source, "pixel_size_mm")
    if source is not None and "source" not in out:
        out["source"] = str(source)
    return out


def validate_ct(ds: xr.Dataset, source=None, lazy: bool = False) -> xr.Dataset:
    """Check a CT measurement against the schema and return it normalised.

    Normalisation: ``sinogram`` cast to float32; a 2D ``(angle, detector)`` sinogram gains a
    ``slice`` dim of length 1; ``angle`` becomes float64; ``slice`` gets an integer coordinate if
    it has none; ``detector_offset_mm`` defaults to 0; numeric attrs become Python numbers.
    ``source`` (a path) is used in error messages and recorded in ``attrs['source']``.
    ``lazy``: the sinogram is backed by an open file; it is checked a block of slices at a time
    and left unread (and in its stored dtype: readers of a block cast it to float32).
    """
    if source is None and isinstance(ds, xr.Dataset):
        source = ds.attrs.get("source")
    if not isinstance(ds, xr.Dataset):
        raise InvalidMeasurement(source, SINOGRAM, "an xarray.Dataset", type(ds).__name__)
    if SINOGRAM not in ds.data_vars:
        raise InvalidMeasurement(
            source, SINOGRAM, f"a data variable {SINOGRAM!r} with dims {CT_DIMS}",
            f"variables {sorted(map(str, ds.data_vars))}",
        )
    sino = ds[SINOGRAM]
    if sino.dims == CT_DIMS[1:]:
        ds = ds.expand_dims("slice")
        sino = ds[SINOGRAM]
    if sino.dims != CT_DIMS:
        raise ShapeMismatch(source, SINOGRAM, f"dims {CT_DIMS}", f"dims {sino.dims}")
    if not (np.issubdtype(sino.dtype, np.floating) or np.issubdtype(sino.dtype, np.integer)):
        raise InvalidMeasurement(source, SINOGRAM, "real numbers (cast to float32)", f"dtype {sino.dtype}")
    if any(n == 0 for n in sino.shape):
        raise ShapeMismatch(source, SINOGRAM, "a non-empty (slice, angle, detector) array", f"shape {sino.shape}")
    if lazy:
        # Read once, a block of slices at a time, and keep nothing: the input may not fit in memory.
        nonzero = [False]

        def blocks():
            for first, block in _slice_blocks(sino):
                nonzero[0] = nonzero[0] or bool(np.any(block))
                yield first, block

        check_finite_blocks(blocks(), source, SINOGRAM)
        values, anything = None, nonzero[0]
    else:
        values = np.asarray(sino.values, dtype=np.float32)
        check_finite(values, source, SINOGRAM)
        anything = bool(np.any(values))
    if not anything:
        raise InvalidMeasurement(source, SINOGRAM, "measured line integrals (some nonzero)",
                                 f"all {sino.size} values zero: an empty or failed acquisition")
    if "angle" not in ds.coords:
        raise InvalidMeasurement(source, "angle", "a coordinate 'angle' (radians) along the angle dim", "none")
    angles = _validated_angles(ds["angle"].values, sino.sizes["angle"], source)
    attrs = _validated_attrs(ds.attrs, source)
    out = ds.copy()
    if values is not None:
        out[SINOGRAM] = (CT_DIMS, values, dict(sino.attrs))
    out = out.assign_coords(angle=("angle", angles, {**ds["angle"].attrs, "units": "radians"}))
    if "slice" not in out.coords:
        out = out.assign_coords(slice=np.arange(sino.sizes["slice"]))
    out.attrs = attrs
    return out


def build_ct(sinogram, angles, attrs: Mapping[str, Any], source=None, sinogram_name: str = SINOGRAM,
             angles_name: str = "angle") -> xr.Dataset:
    """Assemble and validate a CT measurement from plain arrays.

    ``sinogram``: ``(slice, angle, detector)`` or ``(angle, detector)``; ``angles`` in radians.
    ``sinogram_name``/``angles_name`` are the names in the source file, used in error messages.
    """
    sino = np.asarray(sinogram)
    if sino.ndim == 2:
        sino = sino[None]
    if sino.ndim != 3:
        raise ShapeMismatch(
            source, sinogram_name, "a 2D (angle, detector) or 3D (slice, angle, detector) array",
            f"shape {np.shape(sinogram)}",
        )
    if not (np.issubdtype(sino.dtype, np.floating) or np.issubdtype(sino.dtype, np.integer)):
        raise InvalidMeasurement(source, sinogram_name, "real numbers", f"dtype {sino.dtype}")
    check_finite(sino, source, sinogram_name)
    angles = np.asarray(angles, dtype=np.float64).reshape(-1) if np.ndim(angles) <= 1 else np.asarray(angles)
    if angles.ndim != 1 or angles.size != sino.shape[1]:
        raise ShapeMismatch(
            source, angles_name, f"{sino.shape[1]} angles (one per sinogram view, axis 1 of {sino.shape})",
            f"shape {np.shape(angles)}",
        )
    ds = xr.Dataset(
        {SINOGRAM: (CT_DIMS, sino.astype(np.float32, copy=False))},
        coords={"angle": ("angle", angles), "slice": np.arange(sino.shape[0])},
        attrs=dict(attrs),
    )
    return validate_ct(ds, source=source)


def default_grid(ds: xr.Dataset) -> tuple[int, float]:
    """The reconstruction grid ``(image_size, pixel_size_mm)`` when the recipe gives none.

    Attrs ``image_size``/``pixel_size_mm`` win; otherwise the detector count and the detector
    pixel at the isocentre (``d`` for parallel beam, ``d R / (R + D)`` for fan beam).
    """
    attrs = ds.attrs
    size = attrs.get("image_size")
    image_size = int(size) if size is not None else int(ds.sizes["detector"])
    pixel = attrs.get("pixel_size_mm")
    if pixel is not None:
        return image_size, float(pixel)
    d = float(attrs["detector_spacing_mm"])
    if attrs.get("geometry") == "fan":
        r = float(attrs["source_origin_mm"])
        return image_size, d * r / (r + float(attrs["origin_detector_mm"]))
    return image_size, d
