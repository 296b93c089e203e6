"""Posterior draws for a batch of MRI slices, summarised as magnitude images.

The sampler sees the scaled problem (tasks/kinds/mri/measurement.py) in the real view: images
``(2, H, W)``, k-space ``(C, H, W, 2)``. What the store keeps is the magnitude ``|x|`` of every
draw (its mean, std and interval), back at the data's scale, and the mean of the complex draws
for the data residual (and for the store when asked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from inversa.models.physics.mri import channels_to_image
from inversa.models.samplers import Sampler
from inversa.models.streaming import Progress, stream_posterior
from inversa.tasks.kinds.mri.measurement import SliceBatch


def magnitude(draws: torch.Tensor) -> torch.Tensor:
    """``(k, B, 2, H, W)`` real and imaginary channels -> ``(k, B, H, W)`` magnitudes."""
    return torch.linalg.vector_norm(draws, dim=-3)


@dataclass
class SlicePosterior:
    """At the data's scale: the magnitude's mean and std (None for a point estimate), the complex
    mean, and what the draws cost."""

    mean: np.ndarray  # (B, H, W)
    std: np.ndarray | None
    complex_mean: np.ndarray  # complex64 (B, H, W)
    count: int
    nfe: int
    chunks: list[int]
    solver_iterations: int
    solver_residual: float


def draw(sampler: Sampler, batch: SliceBatch, seed: int | tuple[int, ...], slices: range, n_samples: int,
         device: torch.device, on_chunk: Callable[[int, np.ndarray], None] | None = None,
         progress: Progress | None = None) -> SlicePosterior:
    """Stream ``n_samples`` draws per slice (``on_chunk`` gets magnitude blocks at the data's scale)."""
    scale = batch.scale.detach().cpu().numpy().astype(np.float32)
    per_slice = scale[None, :, None, None]

    def scaled_chunk(first: int, block: np.ndarray) -> None:
        on_chunk(first, block * per_slice)

    post = stream_posterior(sampler, batch.operator(), batch.measurement(), batch.scaled_noise, seed, slices,
                            n_samples, magnitude, device, on_chunk=scaled_chunk if on_chunk else None,
                            progress=progress, keep_raw_mean=True)
    raw = torch.from_numpy(post.raw_mean)
    complex_mean = (channels_to_image(raw).numpy() * scale[:, None, None]).astype(np.complex64)
    return SlicePosterior(
        mean=post.mean * scale[:, None, None],
        std=None if post.std is None else post.std * scale[:, None, None],
        complex_mean=complex_mean, count=post.count, nfe=post.nfe, chunks=post.chunks,
        solver_iterations=post.solver_iterations, solver_residual=post.solver_residual,
    )


def data_residual(batch: SliceBatch, complex_mean: np.ndarray) -> np.ndarray:
    """Per slice, ``||A x - y|| / (noise_sigma sqrt(2 m))`` over the ``m`` sampled k-space values of
    all coils: about 1 when the mean explains the data to the noise level, below 1 when it also
    fits the noise, far above 1 when it does not fit the data."""
    x = torch.as_tensor(complex_mean, device=batch.kspace.device)
    misfit = batch.operator().forward_complex(x) - batch.kspace * batch.mask[:, None]
    sampled = batch.mask.reshape(batch.mask.shape[0], -1).sum(1) * batch.kspace.shape[1]
    norm = torch.linalg.vector_norm(misfit.reshape(misfit.shape[0], -1), dim=1)
    return (norm / (batch.noise_sigma * torch.sqrt(2.0 * sampled))).double().cpu().numpy()
