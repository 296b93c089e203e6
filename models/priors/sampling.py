"""Draws from a diffusion prior alone, to see what it has learned (training previews)."""

from __future__ import annotations

import torch

from .schedule import ddim_step, epsilon_from_x0, sigmas


@torch.no_grad()
def ancestral_samples(prior, n: int, seed: int = 0, n_steps: int = 32) -> torch.Tensor:
    """``n`` unconditional draws by ancestral DDIM over the prior's own noise range, on the CPU."""
    g = torch.Generator().manual_seed(int(seed))
    device = next(prior.denoiser.parameters()).device
    levels = sigmas(n_steps, prior.sigma_min, prior.sigma_max).tolist()
    x = prior.offset + levels[0] * torch.randn((n, *prior.shape), generator=g).to(device)
    for s, s_next in zip(levels[:-1], levels[1:]):
        x0 = prior(x, s)
        noise = torch.randn((n, *prior.shape), generator=g).to(device) if s_next > 0 else None
        x = ddim_step(x0, epsilon_from_x0(x, x0, s), s, s_next, 1.0, noise)
    return x.cpu()
