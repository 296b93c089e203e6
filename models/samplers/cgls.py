"""Tikhonov-regularised least squares, ``min ||A x - y||^2 + alpha ||x||^2``, by CGLS.

CGLS runs conjugate gradients on the normal equations ``(A^T A + alpha I) x = A^T y`` without
forming them, through ``A`` and ``A^T`` only; it is the least-squares baseline that works with
any operator (no geometry needed, unlike FBP). Each slice has its own step sizes and stop.
"""

from __future__ import annotations

import torch

from .base import Sampler, SampleResult, StepCallback, Tally, batch_dot, check_measurement, expand_to


class Tikhonov(Sampler):
    """Deterministic Tikhonov reconstruction.

    - ``alpha``: regularisation weight relative to ``||A||^2`` (the absolute weight is
      ``alpha * ||A||^2``), so the default 1e-2 damps singular values below about 10 % of the
      largest whatever the operator's scale. ``alpha = 0`` gives plain CGLS, regularised by
      stopping early.
    - ``max_iter``, ``tol``: stop after ``max_iter`` iterations or when the normal-equation
      residual ``||A^T (y - A x) - alpha x||`` is below ``tol * ||A^T y||``.
    - ``warm_start``: start from ``x0`` passed to ``sample`` (e.g. an FBP) instead of zero.

    The result's ``iterations`` and ``steps`` are the CGLS iterations of the slowest slice (the
    progress ``total`` is ``max_iter``), ``residual`` the largest final normal-equation residual
    relative to ``||A^T y||``: above ``tol`` means a slice stopped at ``max_iter`` unconverged.
    """

    name = "tikhonov"
    deterministic = True

    def __init__(self, alpha: float = 1e-2, max_iter: int = 100, tol: float = 1e-6, warm_start: bool = False):
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"tikhonov: alpha must be >= 0, got {alpha}")
        if int(max_iter) < 1 or not tol > 0:
            raise ValueError(f"tikhonov: need max_iter >= 1 and tol > 0, got {max_iter}, {tol}")
        self.alpha = float(alpha)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.warm_start = bool(warm_start)

    def params(self) -> dict:
        return {"alpha": self.alpha, "max_iter": self.max_iter, "tol": self.tol, "warm_start": self.warm_start}

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None, x0: torch.Tensor | None = None) -> SampleResult:
        y = check_measurement(y, operator, "tikhonov")
        alpha = self.alpha * operator.norm() ** 2 if self.alpha else 0.0
        shape = (y.shape[0], *operator.in_shape)
        # The stop is relative to ||A^T y||, the residual at x = 0, so a warm start that is
        # already good stops at once instead of chasing rounding noise.
        back = operator.adjoint(y)
        tally = Tally(callback, total=self.max_iter, nfe=1)
        target = (self.tol**2) * batch_dot(back, back)
        if self.warm_start and x0 is not None:
            if tuple(x0.shape) != shape:
                raise ValueError(f"tikhonov: warm start x0 has shape {tuple(x0.shape)}; expected {shape}")
            x = x0.to(dtype=y.dtype, device=y.device).clone()
            r = y - operator.forward(x)
            s = operator.adjoint(r) - alpha * x
            tally.nfe += 2
        else:
            x = torch.zeros(shape, dtype=y.dtype, device=y.device)
            r = y.clone()
            s = back.clone()
        p = s.clone()
        gamma = batch_dot(s, s)
        active = gamma > target
        while bool(active.any()) and tally.steps < self.max_iter:
            q = operator.forward(p)
            delta = batch_dot(q, q) + alpha * batch_dot(p, p)
            step = torch.where(active & (delta > 0), gamma / torch.where(delta > 0, delta, torch.ones_like(delta)),
                               torch.zeros_like(delta))
            x = x + expand_to(step, x) * p
            r = r - expand_to(step, r) * q
            s = operator.adjoint(r) - alpha * x
            tally.nfe += 2
            gamma_new = batch_dot(s, s)
            beta = torch.where(active, gamma_new / torch.where(gamma > 0, gamma, torch.ones_like(gamma)),
                               torch.zeros_like(gamma))
            p = s + expand_to(beta, p) * p
            gamma = torch.where(active, gamma_new, gamma)
            active = active & (gamma > target)
            tally.step()
        back_norm = torch.sqrt(batch_dot(back, back))
        relative = torch.sqrt(gamma) / torch.where(back_norm > 0, back_norm, torch.ones_like(back_norm))
        tally.solver(tally.steps, float(relative.max()))
        return tally.result(x.unsqueeze(0))
