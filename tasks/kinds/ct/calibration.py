"""Calibrating a CT run's credible intervals on simulated pairs before its regions run.

The recipe's ``calibration`` block asks for a conformal fix (tasks/core/calibration.py):
simulate ``pairs`` held-out phantoms of the prior's kind in this measurement's geometry, angles
and noise level, reconstruct them with the very sampler, sample count and grids of the run, and
scale the interval half-widths so that the expected fraction of uncovered pixels is ``alpha``.

The pairs are held out from training: a prior's images come from ``SeedSequence([seed, step])``
batches, these from ``data.synthetic``'s per-slice children of ``SeedSequence(calibration seed)``.

The reconstructed pairs are cached on disk (tasks/core/calibration_cache.py) under what
determines them: the prior's weights and the method, the geometry and wedge, the grid and the
noise level rounded to a step of 25 % (the simulation uses the rounded level, so datasets of one
scanner and protocol share their pairs).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch

from inversa.data.store import ResultStore
from inversa.data.synthetic import simulate_ct_study
from inversa.models.resampling import Grid
from inversa.models.streaming import stream_posterior
from inversa.tasks.core.calibration import calibration_record, pair_posteriors, reusable_record, save_record
from inversa.tasks.core.calibration_cache import cached_pairs, rounded_noise
from inversa.tasks.kinds.ct.measurement import geometry_for, noise_levels
from inversa.tasks.kinds.ct.recipe import CTRecipe
from inversa.tasks.kinds.ct.setup import setup_for

DEFAULT_KIND = "htc-discs"  # phantoms for methods without a trained prior
PAIRS_PER_CALL = 8  # simulated slices reconstructed together (times the samples per call)
SEED_TAG = 0xCA11B  # keeps calibration draws apart from the run's own (slice, sample) streams
NOISE_SLICES = 8  # slices the noise level is estimated from when the measurement does not give it
CACHE_VERSION = 1  # bump when the simulation or reconstruction of pairs changes


def phantom_kind(prior) -> str:
    """The kind of phantom the prior learned (``config["data"]["kind"]``), else HTC-like discs."""
    if prior is None:
        return DEFAULT_KIND
    return str((prior.config.get("data") or {}).get("kind") or DEFAULT_KIND)


def measurement_noise_sigma(measurement) -> float:
    """One noise level for the simulation: the measurement's, else estimated from a few slices."""
    if measurement.attrs.get("noise_sigma") is not None:
        return float(measurement.attrs["noise_sigma"])
    count = min(NOISE_SLICES, int(measurement.sizes["slice"]))
    sino = torch.as_tensor(np.asarray(measurement.sinogram.isel(slice=slice(0, count)).values, dtype=np.float32))
    return float(noise_levels(measurement, sino).square().mean().sqrt())


def simulate_pairs(measurement, grid: Grid, kind: str, pairs: int, seed: int, noise_sigma: float):
    """``pairs`` phantoms and their noisy sinograms in the measurement's geometry and angles."""
    geometry = geometry_for(measurement, grid)
    spec = {
        "geometry": geometry.kind,
        "n_det": geometry.n_det,
        "detector_spacing_mm": geometry.det_spacing,
        "detector_offset_mm": geometry.det_offset,
        "pixel_size_mm": grid.pixel_size_mm,
    }
    if geometry.kind == "fan":
        spec["source_origin_mm"] = geometry.source_origin
        spec["origin_detector_mm"] = geometry.origin_detector
    sim, truth = simulate_ct_study(
        kind=kind, n_slices=pairs, image_size=grid.size, geometry=spec, angles=geometry.angles,
        noise={"model": "gaussian", "sigma": noise_sigma}, seed=seed,
    )
    return (np.asarray(sim.sinogram.values, dtype=np.float32),
            np.asarray(truth.reference.values, dtype=np.float32))


def cache_key(recipe: CTRecipe, geometry, grid: Grid, kind: str, noise_sigma: float) -> dict[str, Any]:
    """What the calibration pairs depend on (not the dataset, its reference or its output)."""
    payload = recipe.digest_payload()
    return {
        "kind": "ct", "version": CACHE_VERSION, "phantoms": kind,
        "method": payload["method"], "prior_weights_sha256": payload.get("prior_weights_sha256"),
        "samples": recipe.calibration_samples, "pairs": recipe.calibration_pairs, "seed": recipe.calibration.seed,
        "geometry": geometry.kind, "angles_sha256": hashlib.sha256(geometry.angles.tobytes()).hexdigest(),
        "n_det": geometry.n_det, "detector_spacing_mm": geometry.det_spacing,
        "detector_offset_mm": geometry.det_offset, "source_origin_mm": geometry.source_origin,
        "origin_detector_mm": geometry.origin_detector, "grid": [grid.size, grid.pixel_size_mm],
        "noise_sigma": noise_sigma,
    }


def calibrate(store: ResultStore, recipe: CTRecipe) -> dict[str, Any]:
    """Run the calibration study once per store (its pairs once per setting, on disk); returns
    (and stores) its record."""
    existing = reusable_record(store, recipe)
    if existing is not None:
        return existing
    started = time.perf_counter()
    setup = setup_for(recipe)
    operator, resampler, device = setup.operator(), setup.resampler, setup.device
    pairs, seed, samples = recipe.calibration_pairs, recipe.calibration.seed, recipe.calibration_samples
    kind = phantom_kind(setup.prior)
    measured_sigma = measurement_noise_sigma(setup.measurement)
    noise_sigma = rounded_noise(measured_sigma)
    key = cache_key(recipe, geometry_for(setup.measurement, setup.grid), setup.grid, kind, noise_sigma)

    def compute() -> dict[str, Any]:
        sinograms, truth = simulate_pairs(setup.measurement, setup.grid, kind, pairs, seed, noise_sigma)

        def posterior(first: int, stop: int):
            sino = torch.as_tensor(sinograms[first:stop], device=device)
            sigma = torch.full((stop - first,), noise_sigma, device=device)
            post = stream_posterior(setup.sampler, operator, sino, sigma, (seed, SEED_TAG), range(first, stop),
                                    samples, resampler, device)
            return post.mean, resampler.extend_std(post.std), post.nfe

        return {**pair_posteriors(pairs, PAIRS_PER_CALL, posterior), "truth": truth}

    arrays, cached = cached_pairs(key, compute)
    record = calibration_record(arrays["mean"], arrays["std"], arrays["truth"], recipe, phantom_kind=kind,
                                noise_sigma=noise_sigma, measured_noise_sigma=measured_sigma,
                                nfe=0 if cached else int(arrays["nfe"]), cached=cached,
                                seconds=round(time.perf_counter() - started, 3), device=str(device))
    return save_record(store, record)
