"""One CT region: reconstruct a block of slices and write it to the store.

Everything it needs comes from the recipe and the store; everything it produces goes into the
store before the manifest records the region as done. Samples stream through Welford
(models/streaming.py) and, if the recipe keeps them, into the store as they are drawn.

The credible interval is Gaussian, ``mean +- z * scale * std`` (``z`` the standard normal
quantile of the credible level, ``scale`` the conformal calibration factor of the
pixel's std band, 1 without calibration): exact for the Gaussian posterior, and for diffusion posteriors the calibration
step is what makes its coverage honest. Stores say so in their ``interval_kind`` attr.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from inversa.data.store import ResultStore
from inversa.models.streaming import stream_posterior
from inversa.models.uq import coverage, gaussian_interval, mcc_otsu, otsu_threshold, psnr, ssim
from inversa.tasks.core.kind import RegionProgress
from inversa.tasks.core.calibration import interval_scales
from inversa.tasks.kinds.ct.measurement import noise_levels, reference_block
from inversa.tasks.kinds.ct.recipe import CTRecipe
from inversa.tasks.kinds.ct.setup import setup_for

METRICS = ("psnr", "ssim", "mcc", "coverage")


def slice_metrics(
    mean: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None, ref: np.ndarray, kind: str
) -> dict[str, float]:
    """PSNR, SSIM, MCC of an Otsu segmentation and interval coverage against one reference slice
    (a segmentation reference gives only the MCC)."""
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


def reconstruct_region(store: ResultStore, index: int, recipe: CTRecipe,
                       progress: RegionProgress | None = None) -> dict[str, Any]:
    """Reconstruct region ``index`` of ``store``; returns its manifest record."""
    started = time.perf_counter()
    start, stop = store.regions[index]
    setup = setup_for(recipe)
    resampler, device = setup.resampler, setup.device
    sino = torch.as_tensor(
        np.asarray(setup.measurement.sinogram.isel(slice=slice(start, stop)).values, dtype=np.float32), device=device
    )
    sigma = noise_levels(setup.measurement, sino)
    keep_samples = recipe.store_samples

    def write_chunk(first: int, block: np.ndarray) -> None:
        store.write_samples(index, first, block)

    post = stream_posterior(
        setup.sampler, setup.operator(), sino, sigma, recipe.seed, range(start, stop), recipe.samples_drawn,
        resampler, device, on_chunk=write_chunk if keep_samples else None, progress=progress,
    )
    mean = post.mean
    if post.std is None:  # a point estimate: std/lower/upper stay NaN in the store
        std = lower = upper = None
    else:
        std = resampler.extend_std(post.std)
        scales, scale = interval_scales(store, recipe, std)
        lower, upper = gaussian_interval(mean, std, recipe.credible_level, scales)

    reference = reference_block(recipe, start, stop, mean.shape[-2:])
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
        "nfe": post.nfe,
        "samples": post.count,
        "samples_per_call": post.chunks,
        "noise_sigma": [float(s) for s in sigma.cpu()],
        "device": str(device),
    }
    if setup.prior is not None or setup.work != setup.grid:
        info["working_grid"] = {"size": setup.work.size, "pixel_size_mm": setup.work.pixel_size_mm}
    if std is not None:
        info["interval_scale"] = scale
    if post.solver_iterations:
        info["solver_max_iterations"] = post.solver_iterations
        info["solver_max_relative_residual"] = post.solver_residual
    store.write_region(
        index,
        mean=mean,
        std=std,
        lower=lower,
        upper=upper,
        reference=ref_block if store.has_reference else None,
        metrics=metrics,
        info=info,
        samples_written=keep_samples,
    )
    return {"index": index, "start": start, "stop": stop, **info}
