"""Variance-exploding noise levels and the DDIM step between them, with no network inside.

Convention (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
EDM): ``x_t = x0 + sigma_t * eps``. Keeping the schedule apart from the denoiser (as diffusers
keeps schedulers apart from models) lets every sampler run with any denoiser, and lets a test
swap in a prior whose denoiser is exact.
"""

from __future__ import annotations

import math

import torch


def sigmas(n_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n_steps`` EDM levels from ``sigma_max`` down to ``sigma_min``, then a final 0: ``(n_steps + 1,)``.

    ``rho`` bunches the levels near ``sigma_min``, where the image detail is decided; the
    trailing 0 makes the last step of any sampler land on a clean image.
    """
    if int(n_steps) < 1:
        raise ValueError(f"sigmas: n_steps must be >= 1, got {n_steps}")
    if not (0 < sigma_min <= sigma_max and math.isfinite(sigma_max)):
        raise ValueError(f"sigmas: need 0 < sigma_min <= sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not rho > 0:
        raise ValueError(f"sigmas: rho must be > 0, got {rho}")
    n_steps = int(n_steps)
    if n_steps == 1:
        levels = torch.tensor([float(sigma_max)], dtype=dtype)
    else:
        ramp = torch.linspace(0, 1, n_steps, dtype=dtype)
        hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        levels = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([levels, torch.zeros(1, dtype=dtype)])


def _per_item(sigma, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return s.reshape(-1, *([1] * (like.ndim - 1))) if s.ndim == 1 else s


def epsilon_from_x0(x_t: torch.Tensor, x0_hat: torch.Tensor, sigma) -> torch.Tensor:
    """The noise a denoiser implies (Tweedie): ``(x_t - x0_hat) / sigma``."""
    return (x_t - x0_hat) / _per_item(sigma, x_t)


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, sigma, sigma_next, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """Re-noise a clean estimate ``x0`` to level ``sigma_next`` (Song et al., DDIM, in VE form).

    ``eta = 0`` keeps the implied noise ``eps`` (the deterministic probability-flow step);
    ``eta = 1`` is the ancestral (DDPM) step: fresh noise of variance
    ``sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2``, which is the variance of
    ``q(x_next | x_t, x0)``, so with an exact denoiser the chain samples the prior.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim_step: eta must be in [0, 1], got {eta}")
    s = _per_item(sigma, x0)
    s_next = _per_item(sigma_next, x0)
    fresh = eta * s_next * torch.sqrt(torch.clamp(1 - (s_next / s) ** 2, min=0.0))
    kept = torch.sqrt(torch.clamp(s_next**2 - fresh**2, min=0.0))
    out = x0 + kept * eps
    if noise is not None:
        out = out + fresh * noise
    elif eta > 0 and bool(torch.any(fresh > 0)):
        raise ValueError("ddim_step: eta > 0 with sigma_next > 0 needs a noise tensor")
    return out
