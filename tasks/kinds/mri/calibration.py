"""Calibrating an MRI run's magnitude intervals on simulated pairs before its regions run.

The pairs are brain slices of the MNI152 template (data/synthetic_mri.py: a smooth random phase,
simulated coils) at the run's own matrix and coil count, undersampled with the run's own masks
and noised at the run's own relative noise level (its noise sigma over its scale), their
sensitivities found the way the run finds them (ESPIRiT when the run estimates them, else the
simulation's true maps). They are reconstructed with the very sampler and sample count of the
run and the interval scale is chosen conformally (tasks/core/calibration.py). The reconstructed
pairs are cached on disk under what determines them (method and prior, matrix, coils, masks,
how sensitivities are found, the relative noise level rounded to a step of 25 %).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from inversa.data.synthetic_mri import simulate_mri_study
from inversa.data.store import ResultStore
from inversa.tasks.core.calibration import calibration_record, pair_posteriors, reusable_record, save_record
from inversa.tasks.core.calibration_cache import cached_pairs, rounded_noise
from inversa.tasks.core.devices import resolve_device
from inversa.tasks.kinds.mri.measurement import espirit_map, load_measurement, maps_source, region_batch, slice_batch
from inversa.tasks.kinds.mri.methods import MRI_METHODS
from inversa.tasks.kinds.mri.posterior import draw
from inversa.tasks.kinds.mri.recipe import MRIRecipe

PAIRS_PER_CALL = 4  # simulated slices reconstructed together (times the samples per call)
PAIRS_PER_STUDY = 40  # slices one simulated study draws without repeats (the template has ~90 usable)
SEED_TAG = 0xC0115  # keeps calibration draws apart from the run's own (slice, sample) streams
NOISE_SLICES = 4  # slices the relative noise level is measured on
CACHE_VERSION = 1  # bump when the simulation or reconstruction of pairs changes


def simulate_pairs(recipe: MRIRecipe, masks: np.ndarray, relative_noise: float, maps_from: str,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(k-space, masks, maps, noise sigma, truth magnitude) of ``pairs`` simulated slices."""
    pairs = recipe.calibration_pairs
    ds = load_measurement(recipe)
    matrix, coils = (ds.sizes["ky"], ds.sizes["kx"]), ds.sizes["coil"]
    kspace, maps, truth = [], [], []
    for first in range(0, pairs, PAIRS_PER_STUDY):
        count = min(PAIRS_PER_STUDY, pairs - first)
        study_seed = int(np.random.SeedSequence([seed, first]).generate_state(1)[0])
        measurement, reference = simulate_mri_study(n_slices=count, matrix=matrix, n_coils=coils, acceleration=1.0,
                                                    seed=study_seed, slice_range=(0.1, 0.9), with_sensitivity=True)
        kspace.append(np.asarray(measurement["kspace"].values))
        maps.append(np.asarray(measurement["sensitivity"].values))
        truth.append(np.asarray(reference["reference"].values))
    kspace, maps, truth = np.concatenate(kspace), np.concatenate(maps), np.concatenate(truth)
    pair_masks = masks[np.arange(pairs) % len(masks)]
    rng = np.random.default_rng(np.random.SeedSequence([seed, SEED_TAG]))
    sigma = relative_noise * np.percentile(truth.reshape(pairs, -1), 99, axis=1)
    noise = rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)
    full = (kspace + sigma[:, None, None, None] * noise).astype(np.complex64)
    kspace = full * pair_masks[:, None]
    if maps_from != "file":  # estimated as the run estimates its own
        calibrated = full if maps_from == "prescan" else kspace
        calibrated_masks = np.ones_like(pair_masks) if maps_from == "prescan" else pair_masks
        spec = recipe.sensitivity
        maps = np.stack([espirit_map(spec, calibrated[i], calibrated_masks[i]) for i in range(pairs)])
    return kspace, pair_masks, maps, sigma, truth


def cache_key(recipe: MRIRecipe, ds, masks: np.ndarray, relative_noise: float, maps_from: str) -> dict[str, Any]:
    """What the calibration pairs depend on (not the dataset's own k-space)."""
    payload = recipe.digest_payload()
    return {
        "kind": "mri", "version": CACHE_VERSION, "method": payload["method"],
        "prior_weights_sha256": payload.get("prior_weights_sha256"), "sensitivity": payload.get("sensitivity"),
        "samples": recipe.calibration_samples, "pairs": recipe.calibration_pairs, "seed": recipe.calibration.seed,
        "matrix": [ds.sizes["ky"], ds.sizes["kx"]], "coils": ds.sizes["coil"],
        "masks_sha256": hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest(),
        "relative_noise": relative_noise, "maps_from": maps_from,
    }


def calibrate(store: ResultStore, recipe: MRIRecipe) -> dict[str, Any]:
    """Run the calibration study once per store (its pairs once per setting, on disk); returns
    (and stores) its record."""
    existing = reusable_record(store, recipe)
    if existing is not None:
        return existing
    started = time.perf_counter()
    device = resolve_device(recipe.device)
    ds = load_measurement(recipe)
    measured = region_batch(recipe, 0, min(NOISE_SLICES, ds.sizes["slice"]), device)
    measured_noise = float((measured.noise_sigma / measured.scale).median())
    relative_noise = rounded_noise(measured_noise)
    masks = np.broadcast_to(np.asarray(ds["mask"].values, dtype=bool), (ds.sizes["slice"], ds.sizes["ky"], ds.sizes["kx"]))
    maps_from = maps_source(recipe, ds)
    seed, samples = recipe.calibration.seed, recipe.calibration_samples

    def compute() -> dict[str, Any]:
        kspace, pair_masks, maps, sigma, truth = simulate_pairs(recipe, masks, relative_noise, maps_from, seed)
        sampler = MRI_METHODS.build(recipe.method.name, recipe.method.params, device)

        def posterior(first: int, stop: int):
            batch = slice_batch(kspace[first:stop], pair_masks[first:stop], maps[first:stop], sigma[first:stop],
                                device)
            post = draw(sampler, batch, (seed, SEED_TAG), range(first, stop), samples, device)
            return post.mean, post.std, post.nfe

        return {**pair_posteriors(len(truth), PAIRS_PER_CALL, posterior), "truth": truth}

    arrays, cached = cached_pairs(cache_key(recipe, ds, masks, relative_noise, maps_from), compute)
    record = calibration_record(arrays["mean"], arrays["std"], arrays["truth"], recipe,
                                simulated="MNI152 T1 slices, smooth phase, simulated coils",
                                relative_noise=relative_noise, measured_relative_noise=measured_noise,
                                sensitivities=maps_from if maps_from != "file" else "true maps",
                                nfe=0 if cached else int(arrays["nfe"]), cached=cached,
                                seconds=round(time.perf_counter() - started, 3), device=str(device))
    return save_record(store, record)
