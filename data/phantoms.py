"""Ellipse phantoms: images whose line integrals are known exactly.

A phantom is a list of :class:`Ellipse` with additive values, in mm, on the image plane of
docs/conventions.md (``x`` along columns, ``y`` along rows, origin at the image centre). The same
list is rasterised here (anti-aliased by supersampling) and projected analytically in
:mod:`data.synthetic`, so simulated studies never share code, or errors, with the projector under
test.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np


class Ellipse(NamedTuple):
    """``value`` added inside; centre ``(cx, cy)`` mm; semi-axes ``a`` along direction ``phi``
    (radians, from the +x axis towards +y) and ``b`` perpendicular to it."""

    value: float
    cx: float
    cy: float
    a: float
    b: float
    phi: float = 0.0


Phantom = Sequence[Ellipse]

# Modified Shepp-Logan (Toft's contrast) on [-1, 1]^2: value, cx, cy, a, b, phi (degrees),
# in the textbook frame where +y points up.
_MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.0, 0.0, 0.69, 0.92, 0.0),
    (-0.8, 0.0, -0.0184, 0.6624, 0.874, 0.0),
    (-0.2, 0.22, 0.0, 0.11, 0.31, -18.0),
    (-0.2, -0.22, 0.0, 0.16, 0.41, 18.0),
    (0.1, 0.0, 0.35, 0.21, 0.25, 0.0),
    (0.1, 0.0, 0.1, 0.046, 0.046, 0.0),
    (0.1, 0.0, -0.1, 0.046, 0.046, 0.0),
    (0.1, -0.08, -0.605, 0.046, 0.023, 0.0),
    (0.1, 0.0, -0.605, 0.023, 0.023, 0.0),
    (0.1, 0.06, -0.605, 0.023, 0.046, 0.0),
)

# HTC2022 discs: 70 mm acrylic. Attenuation from the measured solid disc: its central line
# integral (2.21) over a 70 mm chord, and the organisers' FBP (0.0048 per 0.1483 mm pixel), both
# give about 0.032 per mm.
HTC_DISC_DIAMETER_MM = 70.0
HTC_DISC_MU_PER_MM = 0.032


def pixel_centres(image_size: int, pixel_size_mm: float) -> np.ndarray:
    """Pixel-centre coordinates (mm) along one axis: ``(i - (n - 1) / 2) * p``."""
    return (np.arange(image_size) - (image_size - 1) / 2.0) * pixel_size_mm


def _inside(ellipse: Ellipse, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c, s = math.cos(ellipse.phi), math.sin(ellipse.phi)
    dx, dy = x - ellipse.cx, y - ellipse.cy
    u = (dx * c + dy * s) / ellipse.a
    v = (-dx * s + dy * c) / ellipse.b
    return u * u + v * v <= 1.0


def rasterize(phantom: Phantom, image_size: int, pixel_size_mm: float, supersample: int = 4) -> np.ndarray:
    """Image ``(H, W)`` float32 of the phantom; each pixel is the mean over ``supersample**2``
    sub-pixel points (area-weighted edges, so a sinogram of the image and the analytic one agree)."""
    if image_size < 1 or pixel_size_mm <= 0 or supersample < 1:
        raise ValueError("image_size and supersample must be >= 1 and pixel_size_mm > 0")
    n, p = int(image_size), float(pixel_size_mm)
    centres = pixel_centres(n, p)
    sub = ((np.arange(supersample) + 0.5) / supersample - 0.5) * p
    image = np.zeros((n, n), dtype=np.float64)
    for e in phantom:
        if e.a <= 0 or e.b <= 0:
            raise ValueError(f"ellipse semi-axes must be positive, got {e}")
        reach = max(e.a, e.b) + p
        cols = np.flatnonzero(np.abs(centres - e.cx) <= reach)
        rows = np.flatnonzero(np.abs(centres - e.cy) <= reach)
        if cols.size == 0 or rows.size == 0:
            continue
        xs = (centres[cols][:, None] + sub[None, :]).reshape(-1)
        ys = (centres[rows][:, None] + sub[None, :]).reshape(-1)
        inside = _inside(e, xs[None, :], ys[:, None])
        coverage = inside.reshape(rows.size, supersample, cols.size, supersample).mean(axis=(1, 3))
        image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] += e.value * coverage
    return image.astype(np.float32)


def segmentation(phantom: Phantom, image_size: int, pixel_size_mm: float, threshold: float | None = None,
                 supersample: int = 4) -> np.ndarray:
    """Binary mask ``(H, W)`` uint8: pixels whose anti-aliased value exceeds ``threshold``
    (default: half the phantom's maximum, i.e. more than half covered for a binary phantom)."""
    image = rasterize(phantom, image_size, pixel_size_mm, supersample)
    if threshold is None:
        threshold = 0.5 * float(image.max())
    return (image > threshold).astype(np.uint8)


def shepp_logan(field_of_view_mm: float, intensity: float = 1.0) -> list[Ellipse]:
    """Modified Shepp-Logan phantom filling a square of ``field_of_view_mm``, peak ``intensity``.

    Displayed with row 0 at the top (y grows downwards here) it looks like the textbook image.
    """
    half = field_of_view_mm / 2.0
    return [
        Ellipse(v * intensity, cx * half, -cy * half, a * half, b * half, -math.radians(phi))
        for v, cx, cy, a, b, phi in _MODIFIED_SHEPP_LOGAN
    ]


def random_ellipses(rng: np.random.Generator, field_of_view_mm: float, n_ellipses: int = 8,
                    intensity: float = 1.0) -> list[Ellipse]:
    """A body ellipse and ``n_ellipses`` smaller ones inside it, non-negative overall.

    Inner values lie in ``[-0.5, 0.5] * intensity`` but the body is ``intensity``, and the inner
    ellipses are kept apart, so the image stays within ``[0, 1.5 * intensity]``.
    """
    half = field_of_view_mm / 2.0
    body_a, body_b = rng.uniform(0.6, 0.85, size=2) * half
    body = Ellipse(intensity, 0.0, 0.0, float(body_a), float(body_b), float(rng.uniform(0, math.pi)))
    out = [body]
    placed: list[tuple[float, float, float]] = []
    for _ in range(50 * n_ellipses):
        if len(out) > n_ellipses:
            break
        a, b = rng.uniform(0.04, 0.25, size=2) * half
        r = max(a, b)
        t, rho = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
        cx = rho * (body_a - r) * math.cos(t)
        cy = rho * (body_b - r) * math.sin(t)
        if min(body_a, body_b) <= r or any(math.hypot(cx - x, cy - y) < r + q for x, y, q in placed):
            continue
        placed.append((cx, cy, r))
        out.append(Ellipse(float(rng.uniform(-0.5, 0.5) * intensity), cx, cy, float(a), float(b),
                           float(rng.uniform(0, math.pi))))
    return out


def disc_with_holes(rng: np.random.Generator, diameter_mm: float = HTC_DISC_DIAMETER_MM,
                    mu: float = HTC_DISC_MU_PER_MM, n_holes: tuple[int, int] = (1, 6),
                    slot_probability: float = 0.25, max_offset_mm: float = 1.0,
                    wall_mm: float = 1.5, gap_mm: float = 1.5) -> list[Ellipse]:
    """An HTC2022-like object: a disc of attenuation ``mu`` with 1-6 holes cut through it.

    Holes are ellipses of value ``-mu`` (some thin slots), each fully inside the disc (at least
    ``wall_mm`` from its rim) and at least ``gap_mm`` from each other (bounding circles), so the
    image takes only the values 0 and ``mu``.
    """
    radius = diameter_mm / 2.0
    ox, oy = rng.uniform(-max_offset_mm, max_offset_mm, size=2)
    disc = Ellipse(float(mu), float(ox), float(oy), radius, radius, 0.0)
    wanted = int(rng.integers(n_holes[0], n_holes[1] + 1))
    placed: list[tuple[float, float, float]] = []
    holes: list[Ellipse] = []
    for _ in range(200 * wanted):
        if len(holes) == wanted:
            break
        if rng.uniform() < slot_probability:
            a, b = rng.uniform(0.12, 0.35) * radius, rng.uniform(0.6, 1.5)
        else:
            a = rng.uniform(0.06, 0.35) * radius
            b = a * rng.uniform(0.35, 1.0)
        r = max(a, b)
        reach = radius - wall_mm - r
        if reach <= 0:
            continue
        t, rho = rng.uniform(0, 2 * math.pi), reach * math.sqrt(rng.uniform(0, 1))
        cx, cy = ox + rho * math.cos(t), oy + rho * math.sin(t)
        if any(math.hypot(cx - x, cy - y) < r + q + gap_mm for x, y, q in placed):
            continue
        placed.append((cx, cy, r))
        holes.append(Ellipse(-float(mu), float(cx), float(cy), float(a), float(b), float(rng.uniform(0, math.pi))))
    return [disc, *holes]
