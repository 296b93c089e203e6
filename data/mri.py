"""The MRI measurement schema of docs/conventions.md ("MRI"), its validator and small k-space tools.

Every MRI reader ends in :func:`validate_mri` (usually through :func:`build_mri`), so nothing
downstream sees k-space whose dims, dtype, mask or coil maps have not been checked:

- ``kspace(slice, coil, ky, kx)`` complex64, centred (DC at index ``N // 2``), one coil for
  single-coil data; unsampled samples are 0;
- ``mask(ky, kx)`` or ``mask(slice, ky, kx)`` bool, True = sampled, broadcast over coils;
- optional ``sensitivity(slice, coil, y, x)`` complex64, same image matrix as the k-space;
- optional ``reference(slice, y, x)`` float32, a magnitude image for metrics;
- attrs ``matrix`` ``[ny, nx]`` (the k-space grid), ``field_of_view_mm`` ``[fov_y, fov_x]`` where
  the file says, ``readout_oversampling`` (the oversampling still in the data: 1.0 once removed),
  optional ``noise_sigma`` (std of the real and of the imaginary part of one sample),
  ``acceleration`` (full-grid samples / sampled ones, always computed here), ``source``, ``units``.

The transforms here are NumPy twins of ``models.physics.mri.fft2c``; ``data`` must not import
torch, and readers need them to remove readout oversampling and to make reference images.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidMeasurement, ShapeMismatch
from inversa.data.schema import check_finite

KSPACE = "kspace"
MASK = "mask"
SENSITIVITY = "sensitivity"
REFERENCE = "reference"
MRI_DIMS = ("slice", "coil", "ky", "kx")
MASK_DIMS = (("ky", "kx"), ("slice", "ky", "kx"))
SENSITIVITY_DIMS = ("slice", "coil", "y", "x")
IMAGE_DIMS = ("slice", "y", "x")
DEFAULT_UNITS = "a.u."

# 1.4826 * MAD estimates the std of a Gaussian (1 / Phi^-1(3/4)).
_MAD_TO_STD = 1.482602218505602
_MIN_NOISE_SAMPLES = 32


# ============================================================================ transforms
def fftc(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Centred orthonormal 1-D DFT along ``axis`` (DC at index ``N // 2``)."""
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(x, axes=axis), axis=axis, norm="ortho"), axes=axis)


def ifftc(k: np.ndarray, axis: int = -1) -> np.ndarray:
    """Inverse (and adjoint) of :func:`fftc`."""
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=axis), axis=axis, norm="ortho"), axes=axis)


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D DFT over the last two axes: ``fftshift(fft2(ifftshift(x)))``."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def ifft2c(k: np.ndarray) -> np.ndarray:
    """Inverse (and adjoint) of :func:`fft2c`."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)


def centre_crop(x: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
    """The ``size`` samples around index ``N // 2`` along ``axis``, keeping that index at ``size // 2``
    (so a centred image stays centred in the centred-FFT convention)."""
    n = x.shape[axis]
    if not 0 < size <= n:
        raise ValueError(f"centre_crop: size {size} must be in 1..{n}")
    start = n // 2 - size // 2
    return np.take(x, np.arange(start, start + size), axis=axis)


# ============================================================================ masks
def acceleration_of(mask: np.ndarray) -> float:
    """Samples in the full grid / samples kept (``inf`` for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    kept = int(np.count_nonzero(mask))
    return math.inf if kept == 0 else float(mask.size) / kept


def nonzero_mask(kspace: np.ndarray, lines: bool = False) -> np.ndarray:
    """The sampling pattern of zero-filled k-space ``(slice, coil, ky, kx)``.

    A sample is sampled where any coil holds a nonzero value (as BART's ``pics`` assumes).
    ``lines=True``: a whole ``ky`` line counts as sampled when any of its samples is nonzero (as
    fastMRI's line masks; a partial echo's zero-filled tail then counts as sampled). Returns
    ``(ky, kx)`` when every slice has the same pattern, else ``(slice, ky, kx)``.
    """
    k = np.asarray(kspace)
    sampled = np.any(k != 0, axis=1)  # (slice, ky, kx)
    if lines:
        sampled = np.broadcast_to(sampled.any(axis=-1, keepdims=True), sampled.shape)
    if sampled.shape[0] == 1 or bool((sampled == sampled[:1]).all()):
        return np.ascontiguousarray(sampled[0])
    return np.ascontiguousarray(sampled)


def remove_readout_oversampling(kspace: np.ndarray, mask: np.ndarray | None, nx: int, source=None,
                                name: str = KSPACE) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop readout oversampling as fastMRI does: inverse FFT along ``kx`` (the last axis), keep the
    central ``nx`` image columns, FFT back. Orthonormal transforms keep the noise std per sample.

    ``mask`` (``(..., ky, kx)``) must be the same for every ``kx`` of a line: after the crop each
    new sample mixes all old ones of its line, so only whole lines survive the operation.
    """
    k = np.asarray(kspace)
    n_in = k.shape[-1]
    if nx == n_in:
        return k, mask
    if not 0 < nx < n_in:
        raise ShapeMismatch(source, name, f"a readout of more than the {nx} recon samples to remove oversampling from",
                            f"{n_in} samples")
    cropped = fftc(centre_crop(ifftc(k, axis=-1), nx, axis=-1), axis=-1).astype(np.complex64)
    if mask is None:
        return cropped, None
    mask = np.asarray(mask, dtype=bool)
    if not bool((mask == mask[..., :1]).all()):
        raise InvalidMeasurement(source, MASK, "a line mask (the same for every kx of a ky line) when readout "
                                 "oversampling is removed", "a mask that varies along the readout")
    return cropped, np.ascontiguousarray(np.broadcast_to(mask[..., :1], (*mask.shape[:-1], nx)))


# ============================================================================ validation
def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _pair(value, source, name: str, integer: bool) -> list:
    try:
        items = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        items = None
    kind = "integers" if integer else "numbers"
    if items is None or len(items) != 2 or not all(math.isfinite(v) and v > 0 for v in items):
        raise InvalidMeasurement(source, name, f"two positive {kind} [y, x]", repr(value))
    if integer:
        if any(v != int(v) for v in items):
            raise InvalidMeasurement(source, name, f"two positive {kind} [y, x]", repr(value))
        return [int(v) for v in items]
    return items


def _validated_attrs(attrs: Mapping[str, Any], source, shape: tuple[int, int]) -> dict:
    out = {k: _plain(v) for k, v in attrs.items()}
    if out.get("matrix") is not None:
        matrix = _pair(out["matrix"], source, "matrix", integer=True)
        if tuple(matrix) != shape:
            raise ShapeMismatch(source, "matrix", f"the k-space grid [ny, nx] = {list(shape)}", f"{matrix}")
    out["matrix"] = [int(shape[0]), int(shape[1])]
    if out.get("field_of_view_mm") is not None:
        out["field_of_view_mm"] = _pair(out["field_of_view_mm"], source, "field_of_view_mm", integer=False)
    else:
        out.pop("field_of_view_mm", None)
    factor = out.get("readout_oversampling", 1.0)
    try:
        factor = float(factor)
    except (TypeError, ValueError):
        factor = math.nan
    if not (math.isfinite(factor) and factor >= 1.0):
        raise InvalidMeasurement(source, "readout_oversampling", "a number >= 1 (1.0 once removed)",
                                 repr(out.get("readout_oversampling")))
    out["readout_oversampling"] = factor
    if out.get("noise_sigma") is not None:
        try:
            sigma = float(out["noise_sigma"])
        except (TypeError, ValueError):
            sigma = math.nan
        if not (math.isfinite(sigma) and sigma >= 0):
            raise InvalidMeasurement(source, "noise_sigma", "a non-negative finite number", repr(out["noise_sigma"]))
        out["noise_sigma"] = sigma
    else:
        out.pop("noise_sigma", None)
    out.setdefault("units", DEFAULT_UNITS)
    if source is not None and "source" not in out:
        out["source"] = str(source)
    return out


def _kspace_values(ds: xr.Dataset, source) -> xr.DataArray:
    if KSPACE not in ds.data_vars:
        raise InvalidMeasurement(source, KSPACE, f"a data variable {KSPACE!r} with dims {MRI_DIMS}",
                                 f"variables {sorted(map(str, ds.data_vars))}")
    k = ds[KSPACE]
    if k.dims not in (MRI_DIMS, MRI_DIMS[1:], MRI_DIMS[2:]):
        raise ShapeMismatch(source, KSPACE, f"dims {MRI_DIMS} (or without slice, or without slice and coil)",
                            f"dims {k.dims}")
    if not np.iscomplexobj(k):
        raise InvalidMeasurement(source, KSPACE, "complex k-space (complex64)",
                                 f"real-valued dtype {k.dtype} (magnitude images are not k-space)")
    if any(n == 0 for n in k.shape):
        raise ShapeMismatch(source, KSPACE, "a non-empty (slice, coil, ky, kx) array", f"shape {k.shape}")
    return k


def _mask_values(ds: xr.Dataset, source, kshape: tuple[int, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    n_slices, _, ny, nx = kshape
    if MASK not in ds.data_vars:
        raise InvalidMeasurement(source, MASK, "a data variable 'mask' (True = sampled) with dims (ky, kx) or "
                                 "(slice, ky, kx)", f"variables {sorted(map(str, ds.data_vars))}")
    m = ds[MASK]
    wanted = {("ky", "kx"): (ny, nx), ("slice", "ky", "kx"): (n_slices, ny, nx)}
    if m.dims not in wanted or tuple(m.shape) != wanted[m.dims]:
        raise ShapeMismatch(source, MASK, f"dims (ky, kx) of shape {(ny, nx)} or (slice, ky, kx) of shape "
                            f"{(n_slices, ny, nx)}, broadcastable to kspace {kshape}",
                            f"dims {m.dims} of shape {tuple(m.shape)}")
    values = np.asarray(m.values)
    if values.dtype != bool:
        if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)) \
                or not np.isin(values, (0, 1)).all():
            raise InvalidMeasurement(source, MASK, "booleans (or 0/1 values)", f"dtype {values.dtype}")
        values = values.astype(bool)
    if not values.any():
        raise InvalidMeasurement(source, MASK, "at least one sampled k-space location", "a mask with no sample")
    if values.ndim == 3:
        empty = np.flatnonzero(~values.any(axis=(1, 2)))
        if empty.size:
            raise InvalidMeasurement(source, MASK, "at least one sampled location in every slice",
                                     f"no sample in slice(s) {empty[:5].tolist()}")
    return values, m.dims


def _image_variable(ds: xr.Dataset, name: str, dims: tuple[str, ...], source, kshape, complex_: bool):
    if name not in ds.data_vars:
        return None
    n_slices, n_coils, ny, nx = kshape
    var = ds[name]
    if var.dims == dims[1:]:
        var = var.expand_dims(slice=n_slices)
    if var.dims != dims:
        raise ShapeMismatch(source, name, f"dims {dims}", f"dims {var.dims}")
    sizes = dict(zip(dims, var.shape))
    if name == SENSITIVITY and sizes["coil"] != n_coils:
        raise ShapeMismatch(source, name, f"{n_coils} coils (as kspace)", f"{sizes['coil']} coils")
    if (sizes["y"], sizes["x"]) != (ny, nx):
        raise ShapeMismatch(source, name, f"an image of the k-space matrix (y, x) = {(ny, nx)}",
                            f"(y, x) = {(sizes['y'], sizes['x'])}")
    if sizes["slice"] != n_slices:
        raise ShapeMismatch(source, name, f"{n_slices} slices (as kspace)", f"{sizes['slice']} slices")
    values = np.asarray(var.values)
    if complex_:
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise InvalidMeasurement(source, name, "complex coil sensitivities", f"dtype {values.dtype}")
        values = values.astype(np.complex64)
    else:
        if np.iscomplexobj(values) or not np.issubdtype(values.dtype, np.number):
            raise InvalidMeasurement(source, name, "a real (magnitude) image, float32", f"dtype {values.dtype}")
        values = values.astype(np.float32)
    check_finite(values, source, name)
    return values, dict(var.attrs)


def validate_mri(ds: xr.Dataset, source=None) -> xr.Dataset:
    """Check an MRI measurement against the schema and return it normalised.

    Normalisation: ``kspace`` cast to complex64, gaining ``slice`` (and ``coil``) dims of length 1
    when absent; ``mask`` cast to bool; k-space outside the mask set to 0 (the mask is what was
    measured); ``sensitivity``/``reference`` without a ``slice`` dim repeated over the slices;
    integer ``slice``/``coil`` coordinates where absent; ``matrix`` set to the k-space grid,
    ``readout_oversampling`` defaulting to 1.0, ``acceleration`` computed from the mask, ``units``
    defaulting to "a.u."; numeric attrs become Python numbers. ``source`` (a path) is used in
    error messages and recorded in ``attrs['source']``.
    """
    if source is None and isinstance(ds, xr.Dataset):
        source = ds.attrs.get("source")
    if not isinstance(ds, xr.Dataset):
        raise InvalidMeasurement(source, KSPACE, "an xarray.Dataset", type(ds).__name__)
    k = _kspace_values(ds, source)
    if k.dims != MRI_DIMS:
        ds = ds.copy()
        missing = [d for d in MRI_DIMS[:2] if d not in k.dims]
        ds[KSPACE] = k.expand_dims(missing)
        k = ds[KSPACE]
    kshape = tuple(int(n) for n in k.shape)
    values = np.asarray(k.values).astype(np.complex64, copy=True)
    check_finite(values, source, KSPACE)
    mask, mask_dims = _mask_values(ds, source, kshape)
    values *= (mask[None, None] if mask.ndim == 2 else mask[:, None])
    energy = np.abs(values).reshape(kshape[0], -1).max(axis=1)
    if not energy.any():
        raise InvalidMeasurement(source, KSPACE, "nonzero k-space at the sampled locations", "all-zero k-space")
    if not energy.all():
        raise InvalidMeasurement(source, KSPACE, "nonzero k-space in every slice",
                                 f"all-zero k-space in slice(s) {np.flatnonzero(energy == 0)[:5].tolist()}")
    out = ds.copy()
    out[KSPACE] = (MRI_DIMS, values, dict(k.attrs))
    out[MASK] = (mask_dims, mask, dict(ds[MASK].attrs))
    for name, dims, complex_ in ((SENSITIVITY, SENSITIVITY_DIMS, True), (REFERENCE, IMAGE_DIMS, False)):
        checked = _image_variable(ds, name, dims, source, kshape, complex_)
        if checked is not None:
            out[name] = (dims, checked[0], checked[1])
    coords = {}
    if "slice" not in out.coords:
        coords["slice"] = np.arange(kshape[0])
    if "coil" not in out.coords:
        coords["coil"] = np.arange(kshape[1])
    out = out.assign_coords(coords)
    attrs = _validated_attrs(ds.attrs, source, kshape[2:])
    attrs["acceleration"] = acceleration_of(mask)
    out.attrs = attrs
    return out


def build_mri(kspace, mask=None, *, sensitivity=None, reference=None, attrs: Mapping[str, Any] | None = None,
              source=None, kspace_name: str = KSPACE, lines: bool = False, coords: Mapping[str, Any] | None = None
              ) -> xr.Dataset:
    """Assemble and validate an MRI measurement from arrays in schema order.

    ``kspace``: ``(slice, coil, ky, kx)``; ``mask``: ``(ky, kx)`` or ``(slice, ky, kx)``, or None
    for the nonzero pattern (:func:`nonzero_mask`, whole lines if ``lines``); ``sensitivity``:
    ``(slice, coil, y, x)`` or ``(coil, y, x)``; ``reference``: ``(slice, y, x)`` or ``(y, x)``.
    ``kspace_name`` is the name in the source file, used in error messages.
    """
    k = np.asarray(kspace)
    if k.ndim != 4:
        raise ShapeMismatch(source, kspace_name, "a (slice, coil, ky, kx) array", f"shape {k.shape}")
    if not np.iscomplexobj(k):
        raise InvalidMeasurement(source, kspace_name, "complex k-space (complex64)", f"real-valued dtype {k.dtype}")
    if mask is None:
        check_finite(k, source, kspace_name)
        mask = nonzero_mask(k, lines=lines)
    n_slices, n_coils, ny, nx = k.shape
    mask = np.asarray(mask)
    if mask.shape not in ((ny, nx), (n_slices, ny, nx)):
        raise ShapeMismatch(source, MASK, f"dims (ky, kx) of shape {(ny, nx)} or (slice, ky, kx) of shape "
                            f"{(n_slices, ny, nx)}, broadcastable to kspace {k.shape}", f"shape {mask.shape}")
    data = {KSPACE: (MRI_DIMS, k), MASK: (MASK_DIMS[0] if mask.ndim == 2 else MASK_DIMS[1], mask)}
    for name, values, dims in ((SENSITIVITY, sensitivity, SENSITIVITY_DIMS), (REFERENCE, reference, IMAGE_DIMS)):
        if values is None:
            continue
        values = np.asarray(values)
        if values.ndim not in (len(dims), len(dims) - 1):
            raise ShapeMismatch(source, name, f"dims {dims} (or without slice)", f"shape {values.shape}")
        wanted = dict(zip(dims, (n_slices, n_coils, ny, nx) if name == SENSITIVITY else (n_slices, ny, nx)))
        got = dict(zip(dims[-values.ndim:], values.shape))
        for dim in dims[-values.ndim:]:
            if got[dim] != wanted[dim]:
                what = {"coil": "coils (as kspace)", "slice": "slices (as kspace)"}.get(dim)
                if what is not None:
                    raise ShapeMismatch(source, name, f"{wanted[dim]} {what}", f"{got[dim]} {dim}s")
                raise ShapeMismatch(source, name, f"an image of the k-space matrix (y, x) = {(ny, nx)}",
                                    f"(y, x) = {(got['y'], got['x'])}")
        data[name] = (dims[-values.ndim:], values)
    ds = xr.Dataset(data, coords={"slice": np.arange(k.shape[0]), "coil": np.arange(k.shape[1]), **(coords or {})},
                    attrs=dict(attrs or {}))
    return validate_mri(ds, source=source)


# ============================================================================ derived quantities
def coil_combined(ds: xr.Dataset, allow_undersampled: bool = False) -> xr.DataArray:
    """Root-sum-of-squares magnitude ``sqrt(sum_c |F^H k_c|^2)`` as float32 ``(slice, y, x)``.

    Meant for references from fully sampled k-space; undersampled data give an aliased image, so
    they are refused unless ``allow_undersampled`` (a zero-filled preview).
    """
    source = ds.attrs.get("source")
    mask = np.asarray(ds[MASK].values, dtype=bool)
    if not allow_undersampled and not mask.all():
        raise InvalidMeasurement(source, MASK, "fully sampled k-space for a coil-combined reference",
                                 f"acceleration {acceleration_of(mask):.3g} (pass allow_undersampled=True "
                                 "for a zero-filled image)")
    k = np.asarray(ds[KSPACE].values)
    rss = np.sqrt(np.sum(np.abs(ifft2c(k)) ** 2, axis=1)).astype(np.float32)
    return xr.DataArray(rss, dims=IMAGE_DIMS, coords={"slice": ds["slice"].values}, name=REFERENCE,
                        attrs={"kind": "image", "combination": "root-sum-of-squares",
                               "units": ds.attrs.get("units", DEFAULT_UNITS)})


def outer_kspace_region(shape: tuple[int, int], fraction: float = 0.1) -> np.ndarray:
    """Bool ``(ny, nx)``: samples in the outer ``fraction`` of either axis (``fraction / 2`` of
    the axis at each end), the part of k-space farthest from the centre."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    ny, nx = shape
    ry = np.abs(np.arange(ny) - ny // 2) / (ny / 2.0)
    rx = np.abs(np.arange(nx) - nx // 2) / (nx / 2.0)
    return (ry[:, None] >= 1.0 - fraction) | (rx[None, :] >= 1.0 - fraction)


def noise_sigma_from_outer_kspace(kspace, mask=None, fraction: float = 0.1) -> float:
    """Noise std (of the real and of the imaginary part of one sample) from outer k-space.

    Assumption: far from the centre, k-space holds almost only noise. Image energy falls off
    fast with spatial frequency, so in the outer ``fraction`` of each axis (see
    :func:`outer_kspace_region`) the signal is small next to thermal noise at any realistic SNR;
    what signal remains (sharp edges) sits in few samples, which the median absolute deviation
    ignores: ``sigma = 1.4826 * median(|v - median(v)|)`` over the real and imaginary parts ``v``
    of the sampled outer samples of all slices and coils. It overestimates where edges are
    strong and the noise weak, and underestimates where the scanner's readout filter damps the
    band edge (oversampled readouts cropped as fastMRI does are fine: their edge is inside the band).

    ``kspace``: ``(..., ky, kx)`` complex; ``mask``: broadcastable bool (None: nonzero samples).
    """
    k = np.asarray(kspace)
    if not np.iscomplexobj(k) or k.ndim < 2:
        raise InvalidMeasurement(None, KSPACE, "complex k-space (..., ky, kx)", f"dtype {k.dtype}, shape {k.shape}")
    sampled = (k != 0) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), k.shape)
    region = np.broadcast_to(outer_kspace_region(k.shape[-2:], fraction), k.shape)
    samples = k[sampled & region]
    if samples.size < _MIN_NOISE_SAMPLES:
        raise InvalidMeasurement(None, MASK, f"at least {_MIN_NOISE_SAMPLES} sampled k-space samples in the outer "
                                 f"{fraction:.0%} of each axis to estimate noise", f"{samples.size}")
    v = np.concatenate([samples.real, samples.imag]).astype(np.float64)
    return float(_MAD_TO_STD * np.median(np.abs(v - np.median(v))))
