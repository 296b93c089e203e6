"""Simulated CT studies with exact sinograms.

Line integrals of ellipse phantoms are computed analytically (the chord of each line through each
ellipse, times its value), exactly in the geometry of docs/conventions.md. The forward model is
thus independent of the projectors in ``models.physics``: agreement between the two is evidence,
not a tautology. Noise models: additive Gaussian, and Poisson photon counting.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from inversa.data import phantoms as ph
from inversa.data.schema import build_ct

# Counts are clipped to this before the log, so a fully absorbed ray gives a finite value.
MIN_COUNTS = 0.5
KINDS = ("htc-discs", "shepp-logan", "ellipses")
# HTC2022 scanner distances (mm), the default fan-beam geometry.
HTC_SOURCE_ORIGIN_MM = 410.66
HTC_ORIGIN_DETECTOR_MM = 553.74 - 410.66


def _chords(phantom: ph.Phantom, points: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Sum over ellipses of value times chord length of lines ``points + t directions``.

    ``points``, ``directions``: ``(..., 2)`` arrays of (x, y) in mm; directions of unit length.
    In an ellipse's frame scaled to the unit circle the line is ``q + t w``; it meets the circle
    where ``|w|^2 t^2 + 2 q.w t + |q|^2 - 1 = 0``, so the chord is ``2 sqrt(disc) / |w|^2``.
    """
    px, py = points[..., 0], points[..., 1]
    vx, vy = directions[..., 0], directions[..., 1]
    total = np.zeros(px.shape, dtype=np.float64)
    for e in phantom:
        c, s = math.cos(e.phi), math.sin(e.phi)
        # Start from the line's point nearest the centre: a far source (|q| ~ R / a) would
        # otherwise lose the chord to cancellation in the discriminant.
        along = (e.cx - px) * vx + (e.cy - py) * vy
        dx, dy = px + along * vx - e.cx, py + along * vy - e.cy
        qx, qy = (dx * c + dy * s) / e.a, (-dx * s + dy * c) / e.b
        wx, wy = (vx * c + vy * s) / e.a, (-vx * s + vy * c) / e.b
        aa = wx * wx + wy * wy
        bb = qx * wx + qy * wy
        disc = bb * bb - aa * (qx * qx + qy * qy - 1.0)
        total += e.value * 2.0 * np.sqrt(np.clip(disc, 0.0, None)) / aa
    return total


def detector_positions(n_det: int, spacing_mm: float, offset_mm: float = 0.0) -> np.ndarray:
    """``s_k = (k - (K - 1) / 2) d + o`` (mm)."""
    return (np.arange(n_det) - (n_det - 1) / 2.0) * spacing_mm + offset_mm


def project_parallel(phantom: ph.Phantom, angles: np.ndarray, n_det: int, spacing_mm: float,
                     offset_mm: float = 0.0) -> np.ndarray:
    """Exact parallel-beam sinogram ``(angle, detector)``: line ``s_k u(theta) + t r(theta)``."""
    theta = np.asarray(angles, dtype=np.float64)[:, None]
    s = detector_positions(n_det, spacing_mm, offset_mm)[None, :]
    cos, sin = np.cos(theta), np.sin(theta)
    points = np.stack(np.broadcast_arrays(s * cos, s * sin), axis=-1)
    directions = np.stack(np.broadcast_arrays(-sin + 0 * s, cos + 0 * s), axis=-1)
    return _chords(phantom, points, directions)


def project_fan(phantom: ph.Phantom, angles: np.ndarray, n_det: int, spacing_mm: float,
                source_origin_mm: float, origin_detector_mm: float, offset_mm: float = 0.0) -> np.ndarray:
    """Exact fan-beam (flat detector) sinogram ``(angle, detector)``: line from ``S = -R r`` to
    ``P_k = D r + s_k u``. The whole line's chord is used, which equals the segment's as long as
    the object lies between source and detector."""
    theta = np.asarray(angles, dtype=np.float64)[:, None]
    s = detector_positions(n_det, spacing_mm, offset_mm)[None, :]
    cos, sin = np.cos(theta), np.sin(theta)
    r_mm, d_mm = float(source_origin_mm), float(origin_detector_mm)
    sx, sy = r_mm * sin, -r_mm * cos  # S = -R r(theta), r = (-sin, cos)
    px, py = -d_mm * sin + s * cos, d_mm * cos + s * sin
    vx, vy = px - sx, py - sy
    norm = np.hypot(vx, vy)
    points = np.stack(np.broadcast_arrays(sx + 0 * s, sy + 0 * s), axis=-1)
    return _chords(phantom, points, np.stack([vx / norm, vy / norm], axis=-1))


def add_gaussian_noise(sinogram: np.ndarray, rng: np.random.Generator, sigma: float | None = None,
                       relative_sigma: float | None = None) -> tuple[np.ndarray, float]:
    """Add N(0, sigma^2); ``relative_sigma`` sets sigma to that fraction of ``max |sinogram|``."""
    if (sigma is None) == (relative_sigma is None):
        raise ValueError("gaussian noise takes exactly one of 'sigma' (absolute) or 'relative_sigma'")
    level = float(sigma) if sigma is not None else float(relative_sigma) * float(np.abs(sinogram).max())
    if not (math.isfinite(level) and level >= 0):
        raise ValueError(f"gaussian noise sigma must be finite and >= 0, got {level}")
    return sinogram + rng.normal(0.0, level, size=sinogram.shape), level


def add_poisson_noise(sinogram: np.ndarray, rng: np.random.Generator, incident_counts: float
                      ) -> tuple[np.ndarray, float]:
    """Photon counting: ``N ~ Poisson(I0 exp(-p))``, then ``-log(max(N, 0.5) / I0)``.

    Returns the noisy sinogram and the RMS over rays of the delta-method standard deviation
    ``sqrt(exp(p) / I0)``, the single noise level the schema carries.
    """
    i0 = float(incident_counts)
    if not (math.isfinite(i0) and i0 > 0):
        raise ValueError(f"poisson noise needs a positive incident count I0, got {incident_counts}")
    counts = rng.poisson(i0 * np.exp(-sinogram)).astype(np.float64)
    noisy = -np.log(np.maximum(counts, MIN_COUNTS) / i0)
    return noisy, float(np.sqrt(np.mean(np.exp(sinogram) / i0)))


def apply_noise(sinogram: np.ndarray, rng: np.random.Generator, noise: Mapping[str, Any] | None
                ) -> tuple[np.ndarray, str | None, float]:
    """``noise``: None, ``{"model": "gaussian", "sigma" | "relative_sigma": ...}`` or
    ``{"model": "poisson", "I0": ...}``. Returns (noisy sinogram, model name, sigma)."""
    if not noise:
        return sinogram, None, 0.0
    options = dict(noise)
    model = options.pop("model", None)
    if model == "gaussian":
        unknown = set(options) - {"sigma", "relative_sigma"}
        if unknown:
            raise ValueError(f"gaussian noise takes 'sigma' or 'relative_sigma', got {sorted(options)}")
        noisy, sigma = add_gaussian_noise(sinogram, rng, **options)
    elif model == "poisson":
        unknown = set(options) - {"I0"}
        if unknown or "I0" not in options:
            raise ValueError(f"poisson noise takes exactly the key 'I0', got {sorted(options)}")
        noisy, sigma = add_poisson_noise(sinogram, rng, options["I0"])
    else:
        raise ValueError(f"noise model must be 'gaussian' or 'poisson', got {model!r}")
    return noisy, model, sigma


def _phantom(kind: str, rng: np.random.Generator, field_of_view_mm: float) -> list[ph.Ellipse]:
    if kind == "htc-discs":
        return ph.disc_with_holes(rng, diameter_mm=min(ph.HTC_DISC_DIAMETER_MM, 0.92 * field_of_view_mm))
    if kind == "shepp-logan":
        return ph.shepp_logan(field_of_view_mm, intensity=ph.HTC_DISC_MU_PER_MM)
    if kind == "ellipses":
        return ph.random_ellipses(rng, field_of_view_mm, intensity=ph.HTC_DISC_MU_PER_MM)
    raise ValueError(f"phantom kind must be one of {KINDS}, got {kind!r}")


def resolve_geometry(image_size: int, geometry: Mapping[str, Any] | None, kind: str) -> dict:
    """Fill defaults: HTC2022-like fan beam, a 76 mm field of view, and a detector of
    ``image_size`` elements whose isocentre pixel equals the image pixel (so the schema's default
    grid is the truth's grid)."""
    g = dict(geometry or {})
    unknown = set(g) - {"geometry", "n_det", "detector_spacing_mm", "detector_offset_mm",
                        "source_origin_mm", "origin_detector_mm", "pixel_size_mm", "field_of_view_mm"}
    if unknown:
        raise ValueError(f"unknown geometry keys {sorted(unknown)}")
    g.setdefault("geometry", "fan")
    if g["geometry"] not in ("parallel", "fan"):
        raise ValueError(f"geometry must be 'parallel' or 'fan', got {g['geometry']!r}")
    fov = float(g.pop("field_of_view_mm", 76.0))
    g.setdefault("pixel_size_mm", fov / image_size)
    if g["geometry"] == "fan":
        g.setdefault("source_origin_mm", HTC_SOURCE_ORIGIN_MM)
        g.setdefault("origin_detector_mm", HTC_ORIGIN_DETECTOR_MM)
        magnification = (g["source_origin_mm"] + g["origin_detector_mm"]) / g["source_origin_mm"]
    else:
        magnification = 1.0
    g.setdefault("detector_spacing_mm", g["pixel_size_mm"] * magnification)
    g.setdefault("n_det", int(image_size))
    g.setdefault("detector_offset_mm", 0.0)
    return g


def simulate_ct_study(kind: str = "htc-discs", n_slices: int = 1, image_size: int = 128,
                      geometry: Mapping[str, Any] | None = None, angles=None,
                      noise: Mapping[str, Any] | None = None, seed: int = 0,
                      pixel_size_mm: float | None = None) -> tuple[xr.Dataset, xr.Dataset]:
    """Simulate a CT study: (measurement in the schema, truth with ``reference`` and ``segmentation``).

    ``geometry`` keys: ``geometry`` ("fan" default, or "parallel"), ``n_det``, ``detector_spacing_mm``,
    ``detector_offset_mm``, ``source_origin_mm``, ``origin_detector_mm``, ``pixel_size_mm``,
    ``field_of_view_mm`` (default 76 mm, used when no pixel size is given); see
    :func:`resolve_geometry` for the defaults. ``pixel_size_mm`` here overrides the geometry's.

    ``angles``: radians, or an int count spread over a full turn (fan) or half turn (parallel);
    default 360 views. Slice ``i`` depends only on ``seed`` and ``i`` (one child seed per slice,
    split between phantom and noise), not on ``n_slices``.
    """
    if kind not in KINDS:
        raise ValueError(f"phantom kind must be one of {KINDS}, got {kind!r}")
    if n_slices < 1 or image_size < 2:
        raise ValueError("n_slices must be >= 1 and image_size >= 2")
    if pixel_size_mm is not None:
        geometry = {**(geometry or {}), "pixel_size_mm": float(pixel_size_mm)}
    g = resolve_geometry(image_size, geometry, kind)
    fan = g["geometry"] == "fan"
    if angles is None or np.ndim(angles) == 0:
        count = 360 if angles is None else int(angles)
        angles = np.linspace(0.0, 2 * np.pi if fan else np.pi, count, endpoint=False)
    angles = np.asarray(angles, dtype=np.float64)
    pixel = float(g["pixel_size_mm"])
    fov = pixel * image_size
    sinos, refs, segs = [], [], []
    noise_model, sigmas = None, []
    for child in np.random.SeedSequence(int(seed)).spawn(int(n_slices)):
        phantom_seed, noise_seed = child.spawn(2)
        phantom = _phantom(kind, np.random.default_rng(phantom_seed), fov)
        if fan:
            clean = project_fan(phantom, angles, g["n_det"], g["detector_spacing_mm"],
                                g["source_origin_mm"], g["origin_detector_mm"], g["detector_offset_mm"])
        else:
            clean = project_parallel(phantom, angles, g["n_det"], g["detector_spacing_mm"],
                                     g["detector_offset_mm"])
        noisy, noise_model, sigma = apply_noise(clean, np.random.default_rng(noise_seed), noise)
        sinos.append(noisy)
        sigmas.append(sigma)
        refs.append(ph.rasterize(phantom, image_size, pixel))
        segs.append(ph.segmentation(phantom, image_size, pixel))
    attrs = {
        "geometry": g["geometry"],
        "detector_spacing_mm": float(g["detector_spacing_mm"]),
        "detector_offset_mm": float(g["detector_offset_mm"]),
        "image_size": int(image_size),
        "pixel_size_mm": pixel,
        "noise_sigma": float(np.sqrt(np.mean(np.square(sigmas)))),
        "units": "1",
        "simulated": kind,
        "seed": int(seed),
    }
    if fan:
        attrs["source_origin_mm"] = float(g["source_origin_mm"])
        attrs["origin_detector_mm"] = float(g["origin_detector_mm"])
    if noise_model is not None:
        attrs["noise_model"] = noise_model
    measurement = build_ct(np.stack(sinos), angles, attrs)
    truth = xr.Dataset(
        {"reference": (("slice", "y", "x"), np.stack(refs), {"units": "1/mm"}),
         "segmentation": (("slice", "y", "x"), np.stack(segs))},
        coords={"slice": np.arange(n_slices)},
        attrs={"pixel_size_mm": pixel, "image_size": int(image_size), "simulated": kind, "seed": int(seed)},
    )
    return measurement, truth


def write_study(directory, name: str = "study", **simulate_options) -> tuple[Path, Path]:
    """Simulate and write ``<name>.nc`` (measurement) and ``<name>_truth.nc`` (truth) as NetCDF."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    measurement, truth = simulate_ct_study(**simulate_options)
    measurement_path, truth_path = directory / f"{name}.nc", directory / f"{name}_truth.nc"
    measurement.to_netcdf(measurement_path)
    truth.to_netcdf(truth_path)
    return measurement_path, truth_path
