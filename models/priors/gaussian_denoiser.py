"""The exact denoiser of a Gaussian image distribution: a diffusion prior with a known answer.

For ``x0 ~ N(mu, C)`` and ``x_t = x0 + sigma * eps`` the posterior mean is linear,
``E[x0 | x_t] = mu + C (C + sigma^2 I)^-1 (x_t - mu)``, so a sampler fed this denoiser with a
linear operator and Gaussian noise must reproduce a Gaussian posterior that can be written down.
Only tiny images are meant (the covariance is a dense ``N x N`` matrix); its eigenbasis is kept
so any batch of noise levels costs two matrix products.
"""

from __future__ import annotations

import torch


class GaussianDenoiser:
    """``denoiser(x_t, sigma) -> x0_hat`` for ``N(mean, covariance)`` on ``(H, W)`` images.

    ``mean``: scalar or ``(H, W)``; ``covariance``: ``(H*W, H*W)`` symmetric positive
    semi-definite, pixels in row-major order. ``from_precision`` takes a GMRF precision instead.
    Differentiable in ``x_t`` (DPS backpropagates through it).
    """

    def __init__(self, mean, covariance: torch.Tensor, shape: tuple[int, int]):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"GaussianDenoiser: shape must be (H, W), got {shape}")
        n = shape[0] * shape[1]
        if not isinstance(covariance, torch.Tensor) or covariance.shape != (n, n):
            raise ValueError(f"GaussianDenoiser: covariance must be a ({n}, {n}) tensor for shape {shape}, "
                             f"got {tuple(getattr(covariance, 'shape', ()))}")
        cov = 0.5 * (covariance + covariance.T)
        evals, evecs = torch.linalg.eigh(cov)
        if float(evals.min()) < -1e-8 * float(evals.abs().max()):
            raise ValueError(f"GaussianDenoiser: covariance is not positive semi-definite (eigenvalue {float(evals.min()):.3g})")
        self.shape = shape
        self.mean = torch.broadcast_to(torch.as_tensor(mean, dtype=cov.dtype), shape).clone()
        self.covariance = cov
        self.eigenvalues = torch.clamp(evals, min=0.0)
        self.eigenvectors = evecs

    @classmethod
    def from_precision(cls, mean, precision: torch.Tensor, shape: tuple[int, int]) -> "GaussianDenoiser":
        """A GMRF prior ``N(mean, Q^-1)`` given by its (dense) precision ``Q``."""
        q = 0.5 * (precision + precision.T)
        return cls(mean, torch.linalg.inv(q), shape)

    def __call__(self, x_t: torch.Tensor, sigma) -> torch.Tensor:
        if x_t.ndim != 3 or tuple(x_t.shape[1:]) != self.shape:
            raise ValueError(f"GaussianDenoiser: x_t has shape {tuple(x_t.shape)}; expected (B, {self.shape[0]}, {self.shape[1]})")
        batch = x_t.shape[0]
        s = torch.as_tensor(sigma, dtype=x_t.dtype, device=x_t.device)
        s = s.expand(batch) if s.ndim == 0 else s.reshape(batch)
        u = self.eigenvectors.to(x_t)
        lam = self.eigenvalues.to(x_t)
        mu = self.mean.to(x_t).reshape(-1)
        coeff = (x_t.reshape(batch, -1) - mu) @ u
        gain = lam / (lam + s[:, None] ** 2)
        return (mu + (coeff * gain) @ u.T).reshape(x_t.shape)

    def __repr__(self) -> str:
        return f"GaussianDenoiser(shape={self.shape})"
