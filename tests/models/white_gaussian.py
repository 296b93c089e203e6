"""The white Gaussian test problem that samplers of every prior family are checked against.

``x0 ~ N(PRIOR_MEAN, PRIOR_VAR I)`` on 6 x 6 images, a random 18 x 36 matrix ``A`` and Gaussian
noise per slice: the posterior ``N(m, S)`` is known in closed form (``posterior``), and
``posterior_errors`` measures draws against it (max |z| of the sample mean in posterior standard
deviations, the range of per-pixel variance ratios, and how far the prior mean lies from ``m``).
"""

import math

import torch

from inversa.models.physics.base import MatrixOperator

H = W = 6
N_PIX, N_MEAS = H * W, 18
PRIOR_MEAN, PRIOR_VAR = 0.5, 0.25
NOISE = torch.tensor([0.05, 0.1], dtype=torch.float64)
N_SAMPLES = 1000


def linear_problem():
    """``(A, operator, y)`` for two slices, seeded."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(N_MEAS, N_PIX, generator=g, dtype=torch.float64) / math.sqrt(N_PIX)
    op = MatrixOperator(a, (H, W), (N_MEAS,))
    x = PRIOR_MEAN + math.sqrt(PRIOR_VAR) * torch.randn(2, N_PIX, generator=g, dtype=torch.float64)
    y = x @ a.T + NOISE[:, None] * torch.randn(2, N_MEAS, generator=g, dtype=torch.float64)
    return a, op, y


def posterior(a, y, noise):
    c = PRIOR_VAR * torch.eye(N_PIX, dtype=torch.float64)
    gain = c @ a.T @ torch.linalg.inv(a @ c @ a.T + noise**2 * torch.eye(N_MEAS, dtype=torch.float64))
    mean = PRIOR_MEAN + gain @ (y - a @ torch.full((N_PIX,), PRIOR_MEAN, dtype=torch.float64))
    return mean, c - gain @ a @ c


def posterior_errors(x: torch.Tensor, a, y0):
    """``(max |z|, min ratio, max ratio, prior mean's smallest max |z|)`` of draws ``x`` ``(n, 2, H, W)``."""
    n = x.shape[0]
    assert x.shape == (n, 2, H, W)
    z_max, ratios, prior_z = 0.0, [], []
    for b in range(2):
        mean, cov = posterior(a, y0[b], NOISE[b])
        sd = torch.sqrt(torch.diag(cov))
        flat = x[:, b].reshape(n, -1)
        z_max = max(z_max, float(((flat.mean(0) - mean) / sd).abs().max()))
        ratios.append(flat.var(0) / torch.diag(cov))
        prior_z.append(float(((PRIOR_MEAN - mean) / sd).abs().max()))
    ratios = torch.cat(ratios)
    return z_max, float(ratios.min()), float(ratios.max()), min(prior_z)
