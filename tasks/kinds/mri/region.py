"""One MRI region: reconstruct a block of slices and write it to the store.

The store holds the posterior summary of the magnitude image: mean, std and the interval
``mean +- z * scale * std`` (``scale`` from the calibration, 1 without it), the magnitude
samples when the recipe keeps them, and the complex posterior mean when it asks for it. Metrics
against a reference (PSNR, SSIM, NRMSE of the mean, coverage of the interval) use the
reference's own peak as the data range, as fastMRI does; the data residual needs no reference.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from inversa.data.store import ResultStore
from inversa.models.uq import coverage, gaussian_interval, psnr, ssim
from inversa.tasks.core.devices import resolve_device
from inversa.tasks.core.kind import RegionProgress
from inversa.tasks.core.calibration import interval_scales
from inversa.tasks.kinds.mri.measurement import load_reference, region_batch
from inversa.tasks.kinds.mri.methods import MRI_METHODS
from inversa.tasks.kinds.mri.posterior import data_residual, draw
from inversa.tasks.kinds.mri.recipe import MRIRecipe

REFERENCE_METRICS = ("psnr", "ssim", "nrmse", "coverage")
COMPLEX_MEAN = ("mean_real", "mean_imag")


def nrmse(x: np.ndarray, reference: np.ndarray) -> float:
    """``||x - ref|| / ||ref||`` (fastMRI's NMSE, square-rooted)."""
    return float(np.linalg.norm(x - reference) / (np.linalg.norm(reference) or 1.0))


def slice_metrics(mean: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None,
                  reference: np.ndarray) -> dict[str, float]:
    data_range = float(reference.max()) or 1.0
    return {
        "psnr": float(psnr(mean, reference, data_range=data_range)),
        "ssim": float(ssim(mean, reference, data_range=data_range)),
        "nrmse": nrmse(mean, reference),
        "coverage": float(coverage(lower, upper, reference)) if lower is not None else np.nan,
    }


def reconstruct_region(store: ResultStore, index: int, recipe: MRIRecipe,
                       progress: RegionProgress | None = None) -> dict[str, Any]:
    """Reconstruct region ``index`` of ``store``; returns its manifest record."""
    started = time.perf_counter()
    start, stop = store.regions[index]
    device = resolve_device(recipe.device)
    batch = region_batch(recipe, start, stop, device)
    sampler = MRI_METHODS.build(recipe.method.name, recipe.method.params, device)

    def write_chunk(first: int, block: np.ndarray) -> None:
        store.write_samples(index, first, block)

    post = draw(sampler, batch, recipe.seed, range(start, stop), recipe.samples_drawn, device,
                on_chunk=write_chunk if recipe.store_samples else None, progress=progress)
    if post.std is None:  # a point estimate: std/lower/upper stay NaN in the store
        std = lower = upper = None
    else:
        std = post.std
        scales, scale = interval_scales(store, recipe, std)
        lower, upper = gaussian_interval(post.mean, std, recipe.credible_level, scales)

    metrics = {"data_residual": data_residual(batch, post.complex_mean)}
    reference = None
    if store.has_reference:
        reference = np.asarray(load_reference(recipe).isel(slice=slice(start, stop)).values, dtype=np.float32)
        if reference.shape != post.mean.shape:
            raise ValueError(f"{recipe.reference or recipe.input}: reference images {reference.shape[1:]} do not match "
                             f"the k-space matrix {post.mean.shape[1:]}")
        rows = [slice_metrics(post.mean[i], None if lower is None else lower[i], None if upper is None else upper[i],
                              reference[i]) for i in range(stop - start)]
        metrics.update({name: np.array([r[name] for r in rows]) for name in REFERENCE_METRICS})
    extra = ({"mean_real": post.complex_mean.real, "mean_imag": post.complex_mean.imag}
             if recipe.store_complex_mean else None)
    info = {
        "seconds": round(time.perf_counter() - started, 4),
        "nfe": post.nfe,
        "samples": post.count,
        "samples_per_call": post.chunks,
        "noise_sigma": [float(s) for s in batch.noise_sigma.cpu()],
        "scale": [float(s) for s in batch.scale.cpu()],
        "coils": int(batch.kspace.shape[1]),
        "device": str(device),
    }
    if std is not None:
        info["interval_scale"] = scale
    if post.solver_iterations:
        info["solver_max_iterations"] = post.solver_iterations
        info["solver_max_relative_residual"] = post.solver_residual
    store.write_region(index, mean=post.mean, std=std, lower=lower, upper=upper, reference=reference,
                       metrics=metrics, info=info, samples_written=recipe.store_samples, extra=extra)
    return {"index": index, "start": start, "stop": stop, **info}
