"""Centre-of-rotation estimates for parallel-beam sinograms.

Synchrotron files (Data Exchange) do not store where the rotation axis falls on the detector,
and an error of one pixel already blurs a reconstruction. Two independent estimates are given:
the centre-of-mass fit uses every view and is the one readers apply; the opposite-view
correlation is a check that relies on a different property of the data.
"""

from __future__ import annotations

import numpy as np


def center_of_mass_fit(sinogram: np.ndarray, angles: np.ndarray) -> tuple[float, float]:
    """Axis position (pixel index along the detector) and the fit's RMS residual (pixels).

    For parallel beam the centroid of each projection is the projection of the object's
    centroid: ``c + x0 cos(theta) + y0 sin(theta)``. A least-squares fit of that sinusoid over all
    views gives ``c`` with sub-pixel precision. Valid when the object stays inside the detector
    (the projected mass is the same in every view).
    """
    sino = np.asarray(sinogram, dtype=np.float64)
    theta = np.asarray(angles, dtype=np.float64)
    k = np.arange(sino.shape[1], dtype=np.float64)
    mass = sino.sum(axis=1)
    usable = mass > 1e-9 * max(float(np.abs(mass).max()), 1e-300)
    if usable.sum() < 3:
        raise ValueError("centre-of-mass fit needs at least 3 views with positive projected mass")
    centroid = (sino[usable] * k).sum(axis=1) / mass[usable]
    t = theta[usable]
    design = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(design, centroid, rcond=None)
    residual = float(np.sqrt(np.mean((centroid - design @ coef) ** 2)))
    return float(coef[0]), residual


def _subpixel_peak(corr: np.ndarray) -> float:
    i = int(np.argmax(corr))
    if 0 < i < corr.size - 1:
        left, mid, right = corr[i - 1], corr[i], corr[i + 1]
        denom = left - 2 * mid + right
        if denom != 0:
            return i + 0.5 * (left - right) / denom
    return float(i)


def opposite_view_center(sinogram: np.ndarray, angles: np.ndarray) -> float:
    """Axis position from the pair of views closest to 180 degrees apart.

    A view at ``theta + pi`` is the mirror image of the view at ``theta`` about the axis, so the
    shift that best aligns one view with the other, reversed, is twice the axis offset
    (cross-correlation, parabolic sub-pixel refinement). Pairs only approximately opposite give a
    bias of about ``r * |delta|`` / 2 for features at radius ``r``.
    """
    sino = np.asarray(sinogram, dtype=np.float64)
    theta = np.asarray(angles, dtype=np.float64)
    diff = np.abs(((theta[None, :] - theta[:, None]) % (2 * np.pi)) - np.pi)
    i, j = np.unravel_index(int(np.argmin(diff)), diff.shape)
    a = sino[i] - sino[i].mean()
    b = sino[j][::-1] - sino[j].mean()
    n = a.size
    corr = np.correlate(b, a, mode="full")  # index m <-> shift m - (n - 1) of b relative to a
    shift = _subpixel_peak(corr) - (n - 1)
    # b[k] = p_j(n-1-k) = p_i(2c - (n-1) + k): b is a shifted left by 2c - (n-1).
    return (-shift + n - 1) / 2.0
