"""One region of a run: reconstruct a block of slices and write it to the store.

This is the unit of parallel work and of resume. Everything it needs comes from the recipe and
the store path; everything it produces goes into the store before the manifest records the
region as done.

Randomness is seeded per slice and per posterior sample (``SeedSequence([seed, slice, sample])``),
and every sampler call treats each (slice, sample) pair as its own item with its own generator.
So a store is the same whatever the region size, the number of samples drawn per call (which on
a GPU depends on free memory), the order of regions, or which of them were resumed.

Samples stream: each call's block is folded into a running mean and variance (Welford) and, if
the recipe keeps samples, written to the store at once; nothing holds all samples. The credible
interval is therefore Gaussian, ``mean +- z * scale * std`` (``z`` the standard normal quantile of
the credible level, ``scale`` the conformal calibration factor, 1 without calibration): exact
for the Gaussian posterior, and for diffusion posteriors the calibration step is what makes its
coverage honest. Stores say so in their ``interval_kind`` attr.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import norm

from inversa.data.store import ResultStore
from inversa.models.noise import estimate_noise_sigma
from inversa.models.uq import Welford, coverage, mcc_otsu, otsu_threshold, psnr, ssim
from inversa.tasks.measurement import (
    GridResampler, geometry_for, grid_for, load_measurement, load_reference, operator_for, resolve_device,
    working_grid,
)
from inversa.tasks.methods import build_sampler, on_device, prior_of

SAMPLE_CHUNK = 8  # CPU: posterior samples per sampler call (each times the region's slices); fixed
GPU_ITEM_LIMIT = 4096  # at most this many (slice, sample) items per call, however much memory is free
METRICS = ("psnr", "ssim", "mcc", "coverage")
INTERVAL_KIND = "gaussian"  # see the module docstring; recorded in the store's attrs
INTERVAL_DESCRIPTION = (
    "mean +- z * interval_scale * std, z the standard normal quantile of (1 + credible_level) / 2; "
    "std is the unbiased sample standard deviation of the posterior samples on the output grid"
)
OUTSIDE_VIEW_DESCRIPTION = (
    "output pixels beyond the prior's field of view: mean, samples 0 (the operator had no pixels "
    "there); std the nearest in-view value (the data said nothing there; 0 would claim certainty)"
)


class TransientError(RuntimeError):
    """An error worth retrying (I/O hiccup, device busy); anything else fails at once."""


def slice_generators(seed: int, slices: range, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per slice, for point estimates (a single draw per slice)."""
    return [_generator([int(seed), int(index)], device) for index in slices]


def sample_generators(seed: int | tuple[int, ...], slices: range, samples: range,
                      device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per (sample, slice) item, sample-major: item ``s * len(slices) + b``.

    Generators live on the device the samplers draw on (torch cannot draw CUDA tensors from a
    CPU generator); a store made on a GPU therefore differs from a CPU one by its random draws.
    """
    prefix = [int(v) for v in (seed if isinstance(seed, tuple) else (seed,))]
    return [_generator([*prefix, int(index), int(s)], device) for s in samples for index in slices]


def _generator(entropy: list[int], device: torch.device | str = "cpu") -> torch.Generator:
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] % (2**63)))


def choose_batch(free_bytes: float, bytes_per_item: float, limit: int, headroom: float = 0.8) -> int:
    """How many items one call may take: ``headroom`` of the free memory over the cost of one.

    At least 1 (one item is the least a call can do, and it has been seen to fit when it was
    measured) and at most ``limit`` (the items left, or a cap).
    """
    if limit < 1:
        raise ValueError(f"choose_batch: limit must be >= 1, got {limit}")
    if not bytes_per_item > 0:
        raise ValueError(f"choose_batch: bytes_per_item must be > 0, got {bytes_per_item}")
    if not 0 < headroom <= 1:
        raise ValueError(f"choose_batch: headroom must be in (0, 1], got {headroom}")
    fits = int(max(float(free_bytes), 0.0) * headroom // float(bytes_per_item))
    return int(min(max(fits, 1), int(limit)))


def interval_z(level: float) -> float:
    """Half-width of the central ``level`` interval of a standard normal."""
    if not 0 < level < 1:
        raise ValueError(f"credible_level must lie in (0, 1), got {level}")
    return float(norm.ppf((1.0 + level) / 2.0))


def gaussian_interval(mean: np.ndarray, std: np.ndarray, level: float, scale: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    half = (interval_z(level) * float(scale)) * std
    return (mean - half).astype(np.float32), (mean + half).astype(np.float32)


# Measured cost of one (slice, sample) item per sampler call on a GPU, by what decides it.
_item_bytes: dict[tuple, float] = {}
_item_lock = threading.Lock()


def _cost_key(sampler, operator, device) -> tuple:
    return (type(sampler).__name__, repr(sorted(sampler.params().items())), tuple(operator.in_shape),
            tuple(operator.out_shape), str(device))


@dataclass
class Posterior:
    """What a streamed posterior leaves: summaries on the output grid and the cost of getting them."""

    mean: np.ndarray
    std: np.ndarray | None
    count: int
    nfe: int = 0
    chunks: list[int] = field(default_factory=list)
    solver_iterations: int = 0
    solver_residual: float = 0.0


def stream_posterior(
    sampler,
    operator,
    sino: torch.Tensor,
    sigma: torch.Tensor,
    seed: int | tuple[int, ...],
    slices: range,
    n_samples: int,
    resampler: GridResampler,
    device: torch.device,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
) -> Posterior:
    """Draw ``n_samples`` per slice in chunks; fold each into Welford; hand each to ``on_chunk``.

    ``on_chunk(first_sample, block)`` gets ``(k, B, H, W)`` on the output grid. On the CPU a chunk
    is ``SAMPLE_CHUNK`` samples; on a GPU the first chunk is one sample per slice, whose peak
    memory sets the size of the rest (``choose_batch``), remembered for later regions.
    """
    batch = sino.shape[0]
    if sampler.deterministic:
        with _grad_mode(sampler):
            out = sampler.sample(sino, operator, sigma, 1, slice_generators(int(seed), slices, device))
        block = resampler(out[:1]).detach().to("cpu", torch.float32).numpy()
        if on_chunk is not None:
            on_chunk(0, block)
        return Posterior(mean=block[0], std=None, count=1, nfe=int(getattr(sampler, "nfe", 0)), chunks=[1],
                         **_solver_state(sampler, 0, 0.0))
    welford = Welford()
    post = Posterior(mean=np.empty(0), std=None, count=0)
    cuda = torch.device(device).type == "cuda"
    key = _cost_key(sampler, operator, device) if cuda else None
    drawn = 0
    while drawn < n_samples:
        left = n_samples - drawn
        if not cuda:
            k = min(SAMPLE_CHUNK, left)
        else:
            with _item_lock:
                per_item = _item_bytes.get(key)
            if per_item is None:
                k = 1
            else:
                free, _ = torch.cuda.mem_get_info(device)
                k = max(1, choose_batch(free, per_item, min(left * batch, GPU_ITEM_LIMIT)) // batch)
        items = sample_generators(seed, slices, range(drawn, drawn + k), device)
        y = sino.repeat(k, 1, 1)
        s = sigma.repeat(k)
        if cuda and per_item is None:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        with _grad_mode(sampler):
            out = sampler.sample(y, operator, s, 1, items)
        if cuda and per_item is None:
            peak = torch.cuda.max_memory_allocated(device) - base
            with _item_lock:
                _item_bytes[key] = max(float(peak) / (k * batch), 1.0)
        block = resampler(out.reshape(k, batch, *out.shape[-2:]))
        block = block.detach().to("cpu", torch.float32).numpy()
        del out
        welford.update(block)
        if on_chunk is not None:
            on_chunk(drawn, block)
        post.nfe += int(getattr(sampler, "nfe", 0))
        post.chunks.append(k)
        state = _solver_state(sampler, post.solver_iterations, post.solver_residual)
        post.solver_iterations, post.solver_residual = state["solver_iterations"], state["solver_residual"]
        drawn += k
    post.mean = welford.mean.astype(np.float32)
    post.std = np.sqrt(welford.variance).astype(np.float32)
    post.count = drawn
    return post


def _grad_mode(sampler):
    """No autograd graph unless the sampler differentiates through its network (DPS says so)."""
    return torch.no_grad() if getattr(sampler, "no_grad", True) else torch.enable_grad()


def _solver_state(sampler, iterations: int, residual: float) -> dict[str, Any]:
    """Iterative solvers report how far they got: stored so a user can see unconverged samples."""
    return {
        "solver_iterations": max(iterations, int(getattr(sampler, "cg_iterations", 0) or 0)),
        "solver_residual": max(residual, float(getattr(sampler, "cg_residual", 0.0) or 0.0)),
    }


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


def noise_levels(measurement, sino: torch.Tensor) -> torch.Tensor:
    """Per-slice noise sigma: the measurement's, else estimated from the sinogram."""
    sigma_attr = measurement.attrs.get("noise_sigma")
    if sigma_attr is not None:
        return torch.full((sino.shape[0],), float(sigma_attr), device=sino.device)
    return estimate_noise_sigma(sino)


def interval_scale(store: ResultStore, recipe: dict[str, Any]) -> float:
    """The calibration's interval factor (1 without calibration)."""
    if not recipe.get("calibration"):
        return 1.0
    from inversa.tasks.calibration import CALIBRATION_FILE  # calibration reuses this module's streaming

    record = store.read_meta_json(CALIBRATION_FILE)
    if record is None or "scale" not in record:
        raise ValueError(
            f"{store.path}: the recipe asks for calibration but {CALIBRATION_FILE} is missing from the store; "
            "the calibrate task must run before the regions"
        )
    return float(record["scale"])


def reconstruct_region(store_path: str, index: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Reconstruct region `index` of the store at `store_path`; returns its manifest record."""
    if recipe.get("kind") == "field":
        from inversa.tasks.field_run import reconstruct_field_region

        return reconstruct_field_region(store_path, index, recipe)
    started = time.perf_counter()
    store = ResultStore.open(store_path)
    start, stop = store.regions[index]
    measurement = load_measurement(recipe)
    grid = grid_for(recipe, measurement)
    device = resolve_device(recipe.get("device"))
    method = recipe["method"]
    sampler = on_device(build_sampler(method["name"], method.get("params") or {}), device)
    prior = prior_of(sampler)
    work = working_grid(prior, grid) if prior is not None else grid
    operator = operator_for(geometry_for(measurement, work), device)
    resampler = GridResampler(work, grid)
    scale = interval_scale(store, recipe)

    sino = torch.as_tensor(
        np.asarray(measurement.sinogram.isel(slice=slice(start, stop)).values, dtype=np.float32), device=device
    )
    sigma = noise_levels(measurement, sino)
    n_total = 1 if sampler.deterministic else int(recipe.get("samples", 16))
    keep_samples = bool(recipe.get("store_samples"))

    def write_chunk(first: int, block: np.ndarray) -> None:
        store.write_samples(index, first, block)

    post = stream_posterior(
        sampler, operator, sino, sigma, int(recipe.get("seed", 0)), range(start, stop), n_total, resampler,
        device, on_chunk=write_chunk if keep_samples else None,
    )
    mean = post.mean
    if post.std is None:  # a point estimate: std/lower/upper stay NaN in the store
        std = lower = upper = None
    else:
        std = resampler.extend_std(post.std)
        lower, upper = gaussian_interval(mean, std, float(recipe.get("credible_level", 0.9)), scale)

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
        "nfe": post.nfe,
        "samples": post.count,
        "samples_per_call": post.chunks,
        "noise_sigma": [float(s) for s in sigma.cpu()],
        "device": str(device),
    }
    if prior is not None:
        info["working_grid"] = {"size": work.size, "pixel_size_mm": work.pixel_size_mm}
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
