"""One region of a run: reconstruct a block of slices and write it to the store.

This is the unit of parallel work and of resume. Everything it needs comes from the recipe and
the store path; everything it produces goes into the store before the manifest records the
region as done. Randomness is seeded per slice (not per region or per thread), so a store is
the same whatever the region size, the order of regions, or which of them were resumed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from data.store import ResultStore
from models.noise import estimate_noise_sigma
from models.uq import Welford, coverage, credible_interval, mcc_otsu, otsu_threshold, psnr, ssim
from tasks.measurement import geometry_for, grid_for, load_measurement, load_reference, operator_for, resolve_device
from tasks.methods import build_sampler

SAMPLE_CHUNK = 8  # posterior samples drawn per sampler call; bounds memory, fixed for reproducibility
METRICS = ("psnr", "ssim", "mcc", "coverage")


class TransientError(RuntimeError):
    """An error worth retrying (I/O hiccup, device busy); anything else fails at once."""


def slice_generators(seed: int, slices: range) -> list[torch.Generator]:
    gens = []
    for index in slices:
        state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint64)
        gens.append(torch.Generator().manual_seed(int(state[0] % (2**63))))
    return gens


def load_reference_block(
    recipe: dict[str, Any], start: int, stop: int, shape: tuple[int, int]
) -> tuple[np.ndarray, str] | None:
    """The reference slices of a region and their kind ("image" or "segmentation"), if any."""
    if not recipe.get("reference"):
        return None
    ref = load_reference(recipe["reference"], recipe.get("reference_variable"))
    if tuple(ref.shape[-2:]) != tuple(shape):
        raise ValueError(
            f"{recipe['reference']}: variable {ref.name!r}: expected images of {shape[0]} x {shape[1]} "
            f"(the reconstruction grid), got {ref.shape[-2]} x {ref.shape[-1]}"
        )
    block = np.asarray(ref.isel(slice=slice(start, stop)).values, dtype=np.float32)
    return block, ref.attrs.get("kind", "image")


def slice_metrics(
    mean: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None, ref: np.ndarray, kind: str
) -> dict[str, float]:
    if kind == "segmentation":
        segmentation = ref > 0
        return {"psnr": np.nan, "ssim": np.nan, "mcc": float(mcc_otsu(mean, segmentation)), "coverage": np.nan}
    data_range = float(ref.max() - ref.min()) or 1.0
    segmentation = ref > otsu_threshold(ref)
    cov = float(coverage(lower, upper, ref)) if lower is not None else np.nan
    return {
        "psnr": float(psnr(mean, ref, data_range=data_range)),
        "ssim": float(ssim(mean, ref, data_range=data_range)),
        "mcc": float(mcc_otsu(mean, segmentation)),
        "coverage": cov,
    }


def reconstruct_region(store_path: str, index: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Reconstruct region `index` of the store at `store_path`; returns its manifest record."""
    started = time.perf_counter()
    store = ResultStore.open(store_path)
    start, stop = store.regions[index]
    measurement = load_measurement(recipe)
    grid = grid_for(recipe, measurement)
    device = resolve_device(recipe.get("device"))
    operator = operator_for(geometry_for(measurement, grid), device)

    sino = torch.as_tensor(
        np.asarray(measurement.sinogram.isel(slice=slice(start, stop)).values, dtype=np.float32), device=device
    )
    sigma_attr = measurement.attrs.get("noise_sigma")
    sigma = (
        torch.full((stop - start,), float(sigma_attr), device=device)
        if sigma_attr is not None
        else estimate_noise_sigma(sino)
    )
    method = recipe["method"]
    sampler = build_sampler(method["name"], method.get("params") or {})
    generators = slice_generators(recipe.get("seed", 0), range(start, stop))

    n_total = 1 if sampler.deterministic else int(recipe.get("samples", 16))
    keep = [] if (recipe.get("store_samples") or not sampler.deterministic) else None
    welford = Welford()
    nfe = 0
    drawn = 0
    solver = {"iterations": 0, "residual": 0.0}
    while drawn < n_total:
        n = min(SAMPLE_CHUNK, n_total - drawn)
        with torch.no_grad() if getattr(sampler, "no_grad", True) else torch.enable_grad():
            batch = sampler.sample(sino, operator, sigma, n, generators)
        nfe += int(getattr(sampler, "nfe", 0))
        # Iterative solvers report how far they got: stored so a user can see unconverged samples.
        solver["iterations"] = max(solver["iterations"], int(getattr(sampler, "cg_iterations", 0) or 0))
        solver["residual"] = max(solver["residual"], float(getattr(sampler, "cg_residual", 0.0) or 0.0))
        batch = batch.detach().to("cpu", torch.float32).numpy()
        welford.update(batch)
        if keep is not None:
            keep.append(batch)
        drawn += batch.shape[0]

    mean = welford.mean.astype(np.float32)
    if sampler.deterministic:  # a point estimate: std/lower/upper stay NaN in the store
        std = lower = upper = None
        samples = None
    else:
        samples = np.concatenate(keep, axis=0)
        std = np.sqrt(welford.variance).astype(np.float32)
        lower, upper = (a.astype(np.float32) for a in credible_interval(samples, recipe.get("credible_level", 0.9)))

    reference = load_reference_block(recipe, start, stop, mean.shape[-2:])
    metrics = None
    ref_block = None
    if reference is not None:
        ref_block, kind = reference
        rows = [
            slice_metrics(mean[i], None if lower is None else lower[i], None if upper is None else upper[i],
                          ref_block[i], kind)
            for i in range(stop - start)
        ]
        metrics = {name: np.array([r[name] for r in rows]) for name in METRICS}

    info = {
        "seconds": round(time.perf_counter() - started, 4),
        "nfe": nfe,
        "samples": drawn,
        "noise_sigma": [float(s) for s in sigma.cpu()],
        "device": str(device),
    }
    if solver["iterations"]:
        info["solver_max_iterations"] = solver["iterations"]
        info["solver_max_relative_residual"] = solver["residual"]
    store.write_region(
        index,
        mean=mean,
        std=std,
        lower=lower,
        upper=upper,
        samples=samples if recipe.get("store_samples") else None,
        reference=ref_block if store.has_reference else None,
        metrics=metrics,
        info=info,
    )
    return {"index": index, "start": start, "stop": stop, **info}
