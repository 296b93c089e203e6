"""Retrospective undersampling masks for 2-D Cartesian k-space, seeded, and applying them.

Line masks follow fastMRI (``fastmri.data.subsample``): whole phase-encode lines are kept
(every ``kx`` of a kept ``ky``), a fully sampled centre band of ``round(center_fraction * ny)``
lines starts at ``(ny - n_centre + 1) // 2`` (so it holds the DC line ``ny // 2``), and the other
lines are chosen so that the *overall* acceleration is the one asked for:

- ``random_mask``: each outer line is kept with the adjusted probability
  ``(ny / R - n_centre) / (ny - n_centre)`` (``RandomMaskFunc``), so the expected number of lines
  is ``ny / R``; the realised count varies with the seed;
- ``equispaced_mask``: lines every ``R' = R (n_centre - ny) / (n_centre R - ny)`` (rounded
  positions from a random offset in ``[0, round(R'))``), which is fastMRI's
  ``EquispacedMaskFractionFunc``; the plain ``EquiSpacedMaskFunc`` spaces lines by ``R`` and so
  keeps more lines than ``ny / R`` once the centre is added.

Masks are ``(ny, nx)`` bool arrays, True = sampled, rows = ``ky`` (docs/conventions.md).
``poisson_disc_mask`` is a 2-D variable-density pattern for 3-D/2-D phase encoding.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from inversa.data.errors import InvalidMeasurement, ShapeMismatch
from inversa.data.mri import KSPACE, MASK, acceleration_of, validate_mri


def _check(shape, acceleration: float) -> tuple[int, int, float]:
    if len(shape) != 2 or any(int(n) != n or n < 1 for n in shape):
        raise ValueError(f"mask shape must be two positive integers (ny, nx), got {shape!r}")
    accel = float(acceleration)
    if not (math.isfinite(accel) and accel >= 1.0):
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration!r}")
    return int(shape[0]), int(shape[1]), accel


def _centre_lines(ny: int, acceleration: float, center_fraction: float) -> tuple[int, int]:
    """(first centre line, number of centre lines), fastMRI's ``calculate_center_mask``."""
    if not 0.0 <= center_fraction < 1.0:
        raise ValueError(f"center_fraction must be in [0, 1), got {center_fraction!r}")
    n_low = int(round(center_fraction * ny))
    if acceleration > 1.0 and n_low * acceleration >= ny:
        raise ValueError(f"a centre band of {n_low} of {ny} lines alone gives acceleration {ny / max(n_low, 1):.3g}, "
                         f"not above the asked {acceleration:g}: lower center_fraction")
    return (ny - n_low + 1) // 2, n_low


def _line_mask(lines: np.ndarray, nx: int) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(lines[:, None], (lines.size, nx)))


def random_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """fastMRI ``RandomMaskFunc``: centre band plus outer lines kept with the adjusted probability.

    ``seed``: an int, a ``SeedSequence`` or a ``Generator``; the same seed gives the same mask.
    """
    ny, nx, accel = _check(shape, acceleration)
    start, n_low = _centre_lines(ny, accel, center_fraction)
    lines = np.zeros(ny, dtype=bool)
    lines[start:start + n_low] = True
    if accel > 1.0 and n_low < ny:
        prob = (ny / accel - n_low) / (ny - n_low)
        lines |= np.random.default_rng(seed).uniform(size=ny) < prob
    else:
        lines[:] = True
    return _line_mask(lines, nx)


def equispaced_mask(shape, acceleration: float, center_fraction: float = 0.08, seed=0) -> np.ndarray:
    """fastMRI ``EquispacedMaskFractionFunc``: centre band plus lines every ``R'`` (adjusted so
    the overall acceleration is ``acceleration``) from a seeded random offset."""
    ny, nx, accel = _check(shape, acceleration)
    start, n_low = _centre_lines(ny, accel, center_fraction)
    lines = np.zeros(ny, dtype=bool)
    lines[start:start + n_low] = True
    if accel <= 1.0:
        lines[:] = True
        return _line_mask(lines, nx)
    adjusted = accel * (n_low - ny) / (n_low * accel - ny)
    offset = int(np.random.default_rng(seed).integers(0, max(1, round(adjusted))))
    picks = np.around(np.arange(offset, ny - 1, adjusted)).astype(np.int64)
    lines[picks[picks < ny]] = True
    return _line_mask(lines, nx)


# ============================================================================ Poisson disc
def _normalised_radius(ny: int, nx: int) -> np.ndarray:
    """Distance from the k-space centre (``N // 2``), 1 at the middle of each edge."""
    ry = (np.arange(ny) - ny // 2) / (ny / 2.0)
    rx = (np.arange(nx) - nx // 2) / (nx / 2.0)
    return np.sqrt(ry[:, None] ** 2 + rx[None, :] ** 2)


def _calibration_box(ny: int, nx: int, calib) -> np.ndarray:
    cy, cx = (int(c) for c in calib)
    if not (0 <= cy <= ny and 0 <= cx <= nx):
        raise ValueError(f"calib {calib!r} must fit in the mask shape {(ny, nx)}")
    box = np.zeros((ny, nx), dtype=bool)
    if cy and cx:
        box[ny // 2 - cy // 2: ny // 2 - cy // 2 + cy, nx // 2 - cx // 2: nx // 2 - cx // 2 + cx] = True
    return box


def _dart_throw(order: np.ndarray, radius: np.ndarray, allowed: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Random sequential adsorption: visit grid points in ``order``; keep one unless a kept point
    lies closer than the kept point's radius, then block the disc of that radius around it.

    Distances are measured between jittered positions (each grid point moved by ``jitter``,
    up to half a pixel): on the bare grid only a few distances exist (1, sqrt 2, 2, ...), so the
    density would fall in steps; jittered, it falls smoothly as ``~ 1 / radius^2``.
    """
    ny, nx = radius.shape
    blocked = ~allowed
    kept = np.zeros((ny, nx), dtype=bool)
    flat_blocked = blocked.reshape(-1)
    flat_radius = radius.reshape(-1)
    pos_y = np.arange(ny)[:, None] + jitter[0]
    pos_x = np.arange(nx)[None, :] + jitter[1]
    for index in order:
        if flat_blocked[index]:
            continue
        y, x = divmod(int(index), nx)
        kept[y, x] = True
        flat_blocked[index] = True
        r = flat_radius[index]
        reach = int(math.ceil(r + 1.0))
        y0, y1 = max(0, y - reach), min(ny, y + reach + 1)
        x0, x1 = max(0, x - reach), min(nx, x + reach + 1)
        dy = pos_y[y0:y1, x0:x1] - pos_y[y, x]
        dx = pos_x[y0:y1, x0:x1] - pos_x[y, x]
        blocked[y0:y1, x0:x1] |= dy * dy + dx * dx < r * r
    return kept


def poisson_disc_mask(shape, acceleration: float, calib=(24, 24), seed=0, crop_corner: bool = True,
                      tol: float = 0.02, max_iterations: int = 40) -> np.ndarray:
    """Variable-density 2-D Poisson-disc mask ``(ny, nx)``, with a fully sampled calibration box.

    Model: the minimum distance between samples (in pixels) grows linearly from the centre,
    ``d(r) = 1 + p * r`` (sigpy's family) with ``r`` the distance from the centre normalised to
    1 at the edge midpoints, so the density ``~ 1 / d(r)^2`` falls outward; below ``p = 1``
    (accelerations of about 3 and less) ``d(r) = p * (1 + r)``, the same profile made denser,
    which joins the first at ``p = 1``. The candidates are visited in one seeded random order and
    ``p`` is bisected until the achieved acceleration (calibration box included) is within
    ``tol`` (relative) of the asked one, or the closest is returned after ``max_iterations``.
    ``crop_corner``: nothing outside the ellipse inscribed in the grid (``r > 1``), as elliptical
    scanning skips the corners, so the lowest reachable acceleration is about ``4 / pi``.
    Each evaluation visits every grid point once in Python: about 0.2 s for 96 x 96 and 0.5 s
    for 230 x 180 in all, bisection included.
    """
    ny, nx, accel = _check(shape, acceleration)
    box = _calibration_box(ny, nx, calib)
    if accel <= 1.0:
        return np.ones((ny, nx), dtype=bool)
    r = _normalised_radius(ny, nx)
    allowed = (r <= 1.0) if crop_corner else np.ones((ny, nx), dtype=bool)
    allowed &= ~box
    floor = acceleration_of(box | allowed) if (box | allowed).any() else math.inf
    if floor > accel * (1 + tol):
        raise ValueError(f"acceleration {accel:g} is below the {floor:.3g} that the calibration box and "
                         f"{'elliptical ' if crop_corner else ''}support allow at most")
    if box.sum() * accel * (1 - tol) > ny * nx:
        raise ValueError(f"a calibration box of {int(box.sum())} samples alone is more than 1/{accel:g} of the grid")
    rng = np.random.default_rng(seed)
    order = rng.permutation(ny * nx)
    jitter = rng.uniform(-0.5, 0.5, size=(2, ny, nx))

    def achieved(p: float) -> tuple[float, np.ndarray]:
        radius = p * (1.0 + r) if p <= 1.0 else 1.0 + p * r
        mask = box | _dart_throw(order, radius, allowed, jitter)
        return acceleration_of(mask), mask

    lo, hi = 0.0, 1.0
    got, mask = achieved(hi)
    while got < accel and hi < 1e4:
        lo, hi = hi, hi * 2.0
        got, mask = achieved(hi)
    best = (abs(got - accel), mask)
    for _ in range(max_iterations):
        if best[0] <= tol * accel:
            break
        mid = 0.5 * (lo + hi)
        got, mask = achieved(mid)
        if abs(got - accel) < best[0]:
            best = (abs(got - accel), mask)
        if got < accel:
            lo = mid
        else:
            hi = mid
    return best[1]


# ============================================================================ applying a mask
def undersample(ds: xr.Dataset, mask) -> xr.Dataset:
    """Keep only the samples ``mask`` selects: ``kspace * mask``, ``mask`` the combined pattern
    (a sample must have been measured and selected), ``acceleration`` recomputed.

    ``mask``: ``(ky, kx)`` or ``(slice, ky, kx)`` bool array (or DataArray with those dims).
    """
    source = ds.attrs.get("source")
    k = ds[KSPACE]
    n_slices, ny, nx = k.sizes["slice"], k.sizes["ky"], k.sizes["kx"]
    values = np.asarray(mask.values if isinstance(mask, xr.DataArray) else mask)
    if values.shape not in ((ny, nx), (n_slices, ny, nx)):
        raise ShapeMismatch(source, MASK, f"an undersampling mask of shape (ky, kx) = {(ny, nx)} or "
                            f"(slice, ky, kx) = {(n_slices, ny, nx)}", f"shape {values.shape}")
    if values.dtype != bool:
        if not np.isin(values, (0, 1)).all():
            raise InvalidMeasurement(source, MASK, "a boolean (or 0/1) undersampling mask", f"dtype {values.dtype}")
        values = values.astype(bool)
    old = np.asarray(ds[MASK].values, dtype=bool)
    if old.ndim == 3 and values.ndim == 2:
        values = values[None]
    combined = old & values if old.ndim == values.ndim else old[None] & values
    dims = ("ky", "kx") if combined.ndim == 2 else ("slice", "ky", "kx")
    out = ds.copy()
    out[MASK] = (dims, combined)
    out[KSPACE] = (k.dims, np.asarray(k.values) * (combined[None, None] if combined.ndim == 2
                                                    else combined[:, None]), dict(k.attrs))
    return validate_mri(out, source=source)
