"""The exact velocity field of a Gaussian image distribution: a flow prior with a known answer.

On the path ``x_t = (1 - t) x0 + t n`` with ``x0 ~ N(mu, C)`` and noise ``n ~ N(offset, scale^2 I)``
(``FlowPrior``'s convention in physical units), ``x_t`` is Gaussian and both ends given ``x_t`` have
linear means: with ``K_t = (1 - t)^2 C + t^2 scale^2 I`` and ``m_t = (1 - t) mu + t offset``,

    E[x0 | x_t] = mu     + (1 - t) C K_t^-1 (x_t - m_t),
    E[n  | x_t] = offset + t scale^2  K_t^-1 (x_t - m_t),

and the velocity is their difference. A flow sampler fed this field with a linear operator and
Gaussian noise must reproduce a Gaussian posterior that can be written down, as ``GaussianDenoiser``
does for the diffusion samplers. Only tiny images are meant (``C`` is a dense ``N x N`` matrix);
its eigenbasis is kept, so any batch of times costs two matrix products.
"""

from __future__ import annotations

import torch


class GaussianFlow:
    """``velocity(x_t, t)`` and ``split(x_t, t) -> (x0_hat, n_hat)`` for ``N(mean, covariance)`` on ``(H, W)`` images.

    ``mean``: scalar or ``(H, W)``; ``covariance``: ``(H*W, H*W)`` symmetric positive definite,
    pixels in row-major order; ``offset``/``scale``: the noise end ``N(offset, scale^2 I)``, as for a
    ``FlowPrior`` with that normalisation. ``data_variance`` is the mean pixel variance
    ``trace(C) / N`` (exact for a white prior), which samplers use as the spread of ``x0`` at ``t = 1``.
    """

    channels = 1

    def __init__(self, mean, covariance: torch.Tensor, shape: tuple[int, int], offset: float = 0.0,
                 scale: float = 1.0):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"GaussianFlow: shape must be (H, W), got {shape}")
        n = shape[0] * shape[1]
        if not isinstance(covariance, torch.Tensor) or covariance.shape != (n, n):
            raise ValueError(f"GaussianFlow: covariance must be a ({n}, {n}) tensor for shape {shape}, "
                             f"got {tuple(getattr(covariance, 'shape', ()))}")
        if not scale > 0:
            raise ValueError(f"GaussianFlow: scale must be > 0, got {scale}")
        cov = 0.5 * (covariance + covariance.T)
        evals, evecs = torch.linalg.eigh(cov)
        if not float(evals.min()) > 0:
            raise ValueError("GaussianFlow: covariance must be positive definite "
                             f"(smallest eigenvalue {float(evals.min()):.3g})")
        self.shape = shape
        self.mean = torch.broadcast_to(torch.as_tensor(mean, dtype=cov.dtype), shape).clone()
        self.covariance = cov
        self.eigenvalues = evals
        self.eigenvectors = evecs
        self.offset = float(offset)
        self.scale = float(scale)
        self.data_variance = float(torch.diagonal(cov).mean())

    def split(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[x0 | x_t], E[n | x_t])``; ``x_t`` is ``(B, H, W)``, ``t`` a scalar or ``(B,)`` in [0, 1]."""
        if x_t.ndim != 3 or tuple(x_t.shape[1:]) != self.shape:
            raise ValueError(f"GaussianFlow: x_t has shape {tuple(x_t.shape)}; "
                             f"expected (B, {self.shape[0]}, {self.shape[1]})")
        batch = x_t.shape[0]
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        t = (t.expand(batch) if t.ndim == 0 else t.reshape(batch))[:, None]
        if not bool(torch.all((t >= 0) & (t <= 1))):
            raise ValueError(f"GaussianFlow: t must lie in [0, 1], got {t.flatten().tolist()}")
        u = self.eigenvectors.to(x_t)
        lam = self.eigenvalues.to(x_t)
        mu = self.mean.to(x_t).reshape(-1)
        k = (1 - t) ** 2 * lam + t**2 * self.scale**2  # K_t's eigenvalues, > 0 for every t
        coeff = (x_t.reshape(batch, -1) - (1 - t) * mu - t * self.offset) @ u
        x0 = mu + (coeff * ((1 - t) * lam / k)) @ u.T
        n = self.offset + (coeff * (t * self.scale**2 / k)) @ u.T
        return x0.reshape(x_t.shape), n.reshape(x_t.shape)

    def velocity(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """``dx_t/dt = E[n - x0 | x_t]``."""
        x0, n = self.split(x_t, t)
        return n - x0

    def __repr__(self) -> str:
        return f"GaussianFlow(shape={self.shape})"
