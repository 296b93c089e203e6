"""Total-variation reconstruction, ``min 0.5 ||A x - y||^2 + lam TV(x)`` subject to ``x >= 0``.

Solved by the primal-dual algorithm of Chambolle & Pock (2011) with isotropic TV on
forward differences. TV keeps edges sharp while removing noise, which is what piecewise
constant objects (the HTC2022 discs, most industrial parts) need from limited data.
"""

from __future__ import annotations

import math

import torch

from inversa.models.noise import estimate_noise_sigma
from inversa.models.physics.base import Gradient2D

from .base import Sampler, SampleResult, StepCallback, Tally, batch_dot, check_measurement, expand_to, per_slice_sigma


def column_rms(operator, like: torch.Tensor, seed: int = 0) -> float:
    """Root-mean-square column norm of ``A``: ``||A^T e|| / sqrt(n_pixels)`` for white ``e``.

    ``E ||A^T e||^2 = trace(A^T A)``; one probe is precise for images of any real size.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    e = torch.randn((1, *operator.out_shape), generator=gen, dtype=like.dtype).to(like.device)
    back = operator.adjoint(e)
    return float(torch.linalg.vector_norm(back) / math.sqrt(back[0].numel()))


class TV(Sampler):
    """Deterministic TV-regularised reconstruction.

    - ``lam``: regularisation strength relative to the noise: the weight used is
      ``lam * noise_sigma * column_rms(A)`` per slice, i.e. ``lam`` times the typical size of
      the back-projected noise ``A^T e`` at a pixel, which is what the TV term has to outweigh.
      ``lam = 1`` smooths noise while keeping edges; larger gives flatter regions. When
      ``noise_sigma`` is None it is estimated from the sinogram (``models.noise``).
    - ``max_iter``, ``tol``: stop a slice when the relative change of its image per iteration
      falls below ``tol`` (each slice stops on its own, so batching does not change results).
    - ``nonneg``: constrain ``x >= 0`` (attenuation cannot be negative).

    The result's ``steps`` are the primal-dual iterations of the slowest slice (the progress
    ``total`` is ``max_iter``); there is no inner solver, so ``iterations`` is 0.
    """

    name = "tv"
    deterministic = True

    def __init__(self, lam: float = 1.0, max_iter: int = 300, tol: float = 1e-4, nonneg: bool = True):
        super().__init__()
        if not lam >= 0:
            raise ValueError(f"tv: lam must be >= 0, got {lam}")
        if int(max_iter) < 1 or not tol >= 0:
            raise ValueError(f"tv: need max_iter >= 1 and tol >= 0, got {max_iter}, {tol}")
        self.lam = float(lam)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.nonneg = bool(nonneg)

    def params(self) -> dict:
        return {"lam": self.lam, "max_iter": self.max_iter, "tol": self.tol, "nonneg": self.nonneg}

    def weight(self, y: torch.Tensor, operator, noise_sigma) -> torch.Tensor:
        """The absolute TV weight per slice, ``(B,)``."""
        if noise_sigma is None:
            if y.ndim != 3:
                raise ValueError("tv: noise_sigma is None and can only be estimated from sinograms (B, n_angles, n_det)")
            sigma = estimate_noise_sigma(y).to(y.dtype)
        else:
            sigma = per_slice_sigma(noise_sigma, y.shape[0], y, "tv")
        return self.lam * sigma * column_rms(operator, y)

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y = check_measurement(y, operator, "tv")
        shape = tuple(operator.in_shape)
        if len(shape) != 2:
            raise ValueError(f"tv: the operator's in_shape is {shape}; expected an image (H, W)")
        lam = self.weight(y, operator, noise_sigma)
        grad = Gradient2D(shape).to(dtype=y.dtype, device=y.device)
        # Scale the gradient to the operator so both blocks of K = [A; c G] weigh alike.
        a_norm = operator.norm()
        c = a_norm / math.sqrt(8.0) if a_norm > 0 else 1.0
        tally = Tally(callback, total=self.max_iter, nfe=1)
        k_norm = self._norm(operator, grad, c, y, tally) * 1.05  # margin: power iteration underestimates
        tau = sigma = 1.0 / k_norm
        radius = expand_to(lam / c, torch.empty(y.shape[0], 1, 1, 1))  # ball radius of the TV dual

        x = torch.zeros((y.shape[0], *shape), dtype=y.dtype, device=y.device)
        x_bar = x.clone()
        p = torch.zeros_like(y)
        q = torch.zeros((y.shape[0], 2, *shape), dtype=y.dtype, device=y.device)
        active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        while bool(active.any()) and tally.steps < self.max_iter:
            p_new = (p + sigma * (operator.forward(x_bar) - y)) / (1 + sigma)
            q_new = q + (sigma * c) * grad.forward(x_bar)
            size = torch.linalg.vector_norm(q_new, dim=1, keepdim=True)
            q_new = q_new / torch.clamp(size / radius, min=1.0)
            x_new = x - tau * (operator.adjoint(p_new) + c * grad.adjoint(q_new))
            if self.nonneg:
                x_new = x_new.clamp(min=0.0)
            tally.nfe += 2
            change = torch.sqrt(batch_dot(x_new - x, x_new - x))
            scale = torch.sqrt(batch_dot(x_new, x_new))
            keep = expand_to(active, x)
            p = torch.where(expand_to(active, p), p_new, p)
            q = torch.where(expand_to(active, q), q_new, q)
            x_bar = torch.where(keep, 2 * x_new - x, x_bar)
            x = torch.where(keep, x_new, x)
            tally.step()
            if self.tol > 0 and tally.steps > 10:
                active = active & ~(change <= self.tol * torch.clamp(scale, min=torch.finfo(x.dtype).tiny))
        return tally.result(x.unsqueeze(0))

    def _norm(self, operator, grad, c, like, tally: Tally, n_iter: int = 30) -> float:
        """``||[A; c G]||`` by power iteration on ``A^T A + c^2 G^T G``; its operator calls go on ``tally``."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn((1, *operator.in_shape), generator=gen, dtype=like.dtype).to(like.device)
        v = v / torch.linalg.vector_norm(v)
        value = 0.0
        for _ in range(n_iter):
            w = operator.adjoint(operator.forward(v)) + c**2 * grad.adjoint(grad.forward(v))
            tally.nfe += 2
            new = float(torch.sqrt(torch.clamp((v * w).sum(), min=0.0)))
            v = w / torch.linalg.vector_norm(w)
            if value > 0 and abs(new - value) <= 1e-4 * new:
                value = new
                break
            value = new
        return value
