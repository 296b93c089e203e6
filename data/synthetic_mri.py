"""Simulated multi-coil 2-D Cartesian MRI studies with a known truth, from real brain anatomy.

The magnitude is an axial slice of the MNI152 T1 template (``data.mni``), resampled onto the
matrix with the whole brain in view; a smooth phase makes it complex (MR phase varies slowly
with B0 and the coils); smooth coil sensitivities weight it per coil; a centred orthonormal FFT
(docs/conventions.md) gives k-space; complex Gaussian noise is added and a retrospective mask
(``data.undersampling``) applied. The truth is the noise-free image, so a reconstruction can be
scored exactly, and with the true maps the SENSE combination of noiseless fully sampled k-space
gives it back to float32 round-off.

Determinism as in ``data.synthetic``: slice ``i`` depends only on ``seed`` and ``i`` (its
anatomy, phase and noise come from the ``i``-th child seed; the brain slice is the ``i``-th of a
seeded permutation), not on ``n_slices``; the coil maps and the mask are one per study.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage

from inversa.data.mni import VOXEL_MM, brain_slices
from inversa.data.mri import IMAGE_DIMS, SENSITIVITY_DIMS, build_mri, fft2c
from inversa.data.undersampling import equispaced_mask, poisson_disc_mask, random_mask

MASK_KINDS = ("equispaced", "random", "poisson")
# Brain voxels: the template's background is 0; anything above this is tissue.
_BRAIN_THRESHOLD = 0.05


def _rng(seed_or_rng) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


def _unit_grid(shape) -> tuple[np.ndarray, np.ndarray]:
    """(v, u): row and column coordinates, 0 at index ``N // 2``, +-1 near the edges."""
    ny, nx = shape
    v = (np.arange(ny) - ny // 2) / (ny / 2.0)
    u = (np.arange(nx) - nx // 2) / (nx / 2.0)
    return np.meshgrid(v, u, indexing="ij")


def smooth_phase(shape, rng, max_radians: float = math.pi / 2) -> np.ndarray:
    """A smooth random phase map ``(ny, nx)`` in radians, ``max |phase| = max_radians``.

    A random quadratic polynomial (a constant offset, linear ramps from off-centre positioning,
    curvature from B0 inhomogeneity) plus a random field smoothed over about a fifth of the
    field of view, so it varies slowly as physical MR phase does.
    """
    rng = _rng(rng)
    v, u = _unit_grid(shape)
    c = rng.normal(size=6)
    poly = c[0] + c[1] * u + c[2] * v + 0.5 * (c[3] * u * u + c[4] * u * v + c[5] * v * v)
    field = ndimage.gaussian_filter(rng.normal(size=tuple(shape)), sigma=0.2 * min(shape), mode="wrap")
    field *= 0.5 / max(float(np.abs(field).max()), 1e-12)
    phase = poly / max(float(np.abs(poly).max()), 1e-12) + field
    return (phase * (float(max_radians) / max(float(np.abs(phase).max()), 1e-12))).astype(np.float32)


def coil_maps(n_coils: int, shape, rng=None, loop_radius: float = 0.6, distance: float = 1.3) -> np.ndarray:
    """Smooth complex coil sensitivities ``(n_coils, ny, nx)`` complex64, ``sum_c |S_c|^2 = 1``.

    Model: ``n_coils`` loop coils evenly spaced on a circle of radius ``distance`` (in units of
    half the field of view: 1.3 puts them just outside the image) around the object. A coil's
    magnitude falls off as the on-axis field of a circular loop of radius ``loop_radius``,
    ``(1 + (d / a)^2)^(-3/2)`` with ``d`` the distance to the coil; its phase is a coil offset
    plus a gentle ramp along the coil's tangent (1 radian per half field of view). The maps are
    then divided by their root sum of squares, which makes ``sum_c |S_c|^2 = 1`` over the whole
    field of view (inside the object support in particular; real ESPIRiT maps are zero outside
    it, ours are defined everywhere, so the SENSE model is exact on the background too).
    ``rng`` None: deterministic; a Generator or seed: jittered angles, distances and phases.
    """
    if int(n_coils) < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    n = int(n_coils)
    v, u = _unit_grid(shape)
    angles = 2 * np.pi * np.arange(n) / n
    radii = np.full(n, float(distance))
    offsets = angles.copy()
    if rng is not None:
        rng = _rng(rng)
        angles = angles + rng.uniform(-0.5, 0.5, n) * (np.pi / n)
        radii = radii * rng.uniform(0.95, 1.1, n)
        offsets = rng.uniform(-np.pi, np.pi, n)
    maps = np.empty((n, *shape), dtype=np.complex128)
    for c in range(n):
        py, px = radii[c] * np.sin(angles[c]), radii[c] * np.cos(angles[c])
        d2 = (v - py) ** 2 + (u - px) ** 2
        magnitude = (1.0 + d2 / loop_radius ** 2) ** -1.5
        tangent = -(v - py) * np.cos(angles[c]) + (u - px) * np.sin(angles[c])
        maps[c] = magnitude * np.exp(1j * (offsets[c] + tangent))
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return maps.astype(np.complex64)


@lru_cache(maxsize=1)
def _brain_box() -> tuple[int, int, int, int]:
    """Rows and columns (first, last + 1) that hold brain in any template slice."""
    rows, cols = np.nonzero((brain_slices() > _BRAIN_THRESHOLD).any(axis=0))
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def pixel_size_mm(matrix, fill: float = 0.9) -> float:
    """The isotropic pixel size that puts the brain's bounding box in ``fill`` of the matrix."""
    r0, r1, c0, c1 = _brain_box()
    ny, nx = matrix
    return VOXEL_MM * max((r1 - r0) / (fill * ny), (c1 - c0) / (fill * nx))


def resample_slice(image: np.ndarray, matrix, pixel_mm: float) -> np.ndarray:
    """Template slice -> ``matrix`` grid of ``pixel_mm`` pixels, the brain box centred at ``N // 2``.

    Smoothed first (Gaussian of 0.45 output pixels) so downsampling does not alias; bilinear,
    zero outside, clipped at 0, float32.
    """
    r0, r1, c0, c1 = _brain_box()
    ny, nx = matrix
    scale = pixel_mm / VOXEL_MM
    source = ndimage.gaussian_filter(image.astype(np.float64), sigma=0.45 * scale) if scale > 1 else image
    centre = np.array([(r0 + r1 - 1) / 2.0, (c0 + c1 - 1) / 2.0])
    offset = centre - scale * np.array([ny // 2, nx // 2], dtype=np.float64)
    out = ndimage.affine_transform(source, [scale, scale], offset=offset, output_shape=(ny, nx), order=1,
                                   mode="constant", cval=0.0)
    return np.clip(out, 0.0, None).astype(np.float32)


def make_mask(kind: str, shape, acceleration: float, center_fraction: float, seed, calib=None) -> np.ndarray:
    """One retrospective mask ``(ny, nx)`` of ``kind`` ("equispaced" | "random" | "poisson")."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {kind!r}")
    if float(acceleration) <= 1.0:
        return np.ones(tuple(shape), dtype=bool)
    if kind == "equispaced":
        return equispaced_mask(shape, acceleration, center_fraction, seed)
    if kind == "random":
        return random_mask(shape, acceleration, center_fraction, seed)
    if calib is None:
        calib = (max(2, round(center_fraction * shape[0])), max(2, round(center_fraction * shape[1])))
    return poisson_disc_mask(shape, acceleration, calib=calib, seed=seed)


def simulate_mri_study(n_slices: int = 4, matrix=(96, 96), n_coils: int = 8, acceleration: float = 4.0,
                       center_fraction: float = 0.08, mask_kind: str = "equispaced", noise_sigma: float | None = None,
                       relative_noise: float | None = None, seed: int = 0, slice_range=(0.25, 0.75),
                       with_sensitivity: bool = True, max_phase_radians: float = math.pi / 2, fill: float = 0.9,
                       calib=None) -> tuple[xr.Dataset, xr.Dataset]:
    """Simulate a multi-coil study: (measurement in the MRI schema, truth).

    ``matrix`` ``(ny, nx)``; the brain's bounding box fills ``fill`` of it with square pixels
    (``field_of_view_mm`` follows, the template having 1 mm voxels). ``slice_range``: the part of
    the template's brain slices (fractions, inferior 0 to superior 1) to draw from.
    ``noise_sigma``: std of the real and of the imaginary part of each k-space sample;
    ``relative_noise``: the same as a fraction of the study's peak image magnitude (the
    transform being orthonormal, that is the image-domain noise per coil and pixel); neither:
    noiseless. ``mask_kind``/``acceleration``/``center_fraction`` (``calib`` for Poisson disc,
    default ``center_fraction`` of each axis): see ``data.undersampling``; acceleration 1 means
    fully sampled. ``with_sensitivity``: put the true maps into the measurement.

    Truth: ``reference(slice, y, x)`` float32 (the noise-free coil-combined magnitude), ``phase``
    float32 radians, ``image`` complex64 (``reference * exp(i phase)``) and ``sensitivity``.
    """
    ny, nx = (int(n) for n in matrix)
    if n_slices < 1 or ny < 8 or nx < 8:
        raise ValueError(f"need n_slices >= 1 and a matrix of at least 8 x 8, got {n_slices}, {matrix}")
    if noise_sigma is not None and relative_noise is not None:
        raise ValueError("give noise_sigma (absolute) or relative_noise, not both")
    if mask_kind not in MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {mask_kind!r}")
    lo, hi = (float(f) for f in slice_range)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"slice_range must be fractions 0 <= lo < hi <= 1, got {slice_range!r}")
    brains = brain_slices()
    candidates = np.arange(int(math.floor(lo * len(brains))), int(math.ceil(hi * len(brains))))
    if n_slices > candidates.size:
        raise ValueError(f"{n_slices} slices asked for, but slice_range {slice_range} holds {candidates.size}")
    study_seq, slices_seq = np.random.SeedSequence(int(seed)).spawn(2)
    order_seq, coil_seq, mask_seq = study_seq.spawn(3)
    picks = np.random.default_rng(order_seq).permutation(candidates)[:n_slices]
    maps = coil_maps(n_coils, (ny, nx), np.random.default_rng(coil_seq))
    pixel = pixel_size_mm((ny, nx), fill)
    magnitudes, phases, noise_seqs = [], [], []
    for index, child in zip(picks, slices_seq.spawn(n_slices)):
        phase_seq, noise_seq = child.spawn(2)
        magnitudes.append(resample_slice(brains[index], (ny, nx), pixel))
        phases.append(smooth_phase((ny, nx), np.random.default_rng(phase_seq), max_phase_radians))
        noise_seqs.append(noise_seq)
    magnitude = np.stack(magnitudes)
    phase = np.stack(phases)
    image = (magnitude * np.exp(1j * phase.astype(np.float64))).astype(np.complex64)
    sigma = float(noise_sigma) if noise_sigma is not None else (
        float(relative_noise) * float(magnitude.max()) if relative_noise is not None else 0.0)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"the noise level must be finite and >= 0, got {sigma}")
    kspace = fft2c(maps[None].astype(np.complex128) * image[:, None])
    if sigma > 0:
        for i, noise_seq in enumerate(noise_seqs):
            rng = np.random.default_rng(noise_seq)
            kspace[i] += sigma * (rng.standard_normal(kspace.shape[1:]) + 1j * rng.standard_normal(kspace.shape[1:]))
    mask = make_mask(mask_kind, (ny, nx), acceleration, center_fraction, mask_seq, calib)
    kspace = (kspace * mask).astype(np.complex64)
    fov = [ny * pixel, nx * pixel]
    attrs = {"field_of_view_mm": fov, "readout_oversampling": 1.0, "noise_sigma": sigma, "units": "a.u.",
             "simulated": "mni152-t1", "seed": int(seed), "mask_kind": mask_kind,
             "center_fraction": float(center_fraction), "acceleration_target": float(acceleration)}
    sensitivity = np.broadcast_to(maps[None], (n_slices, *maps.shape))
    measurement = build_mri(kspace, mask, sensitivity=sensitivity if with_sensitivity else None, attrs=attrs,
                            coords={"brain_slice": ("slice", picks.astype(np.int64))})
    truth = xr.Dataset(
        {"reference": (IMAGE_DIMS, magnitude, {"units": "a.u.", "kind": "image"}),
         "phase": (IMAGE_DIMS, phase, {"units": "radians"}),
         "image": (IMAGE_DIMS, image),
         "sensitivity": (SENSITIVITY_DIMS, np.ascontiguousarray(sensitivity))},
        coords={"slice": np.arange(n_slices), "coil": np.arange(n_coils),
                "brain_slice": ("slice", picks.astype(np.int64))},
        attrs={"field_of_view_mm": fov, "pixel_size_mm": pixel, "matrix": [ny, nx], "simulated": "mni152-t1",
               "seed": int(seed)},
    )
    return measurement, truth


def write_mri_study(directory, name: str = "study", **simulate_options) -> tuple[Path, Path]:
    """Simulate and write ``<name>.h5`` (fastMRI-style measurement, see
    ``data.readers.mri_fastmri.write_fastmri``) and ``<name>_truth.nc`` (NetCDF: float32
    ``reference(slice, y, x)`` and ``phase``), the pairing ``inversa batch`` expects."""
    from inversa.data.readers.mri_fastmri import write_fastmri

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    measurement, truth = simulate_mri_study(**simulate_options)
    measurement_path, truth_path = directory / f"{name}.h5", directory / f"{name}_truth.nc"
    write_fastmri(measurement_path, measurement)
    truth[["reference", "phase"]].to_netcdf(truth_path)
    return measurement_path, truth_path
