"""Exact samples of the Gaussian posterior of a linear problem with a Gaussian Markov random field prior.

Model: ``y = A x + e`` with ``e ~ N(0, sigma^2 I)`` and prior ``x ~ N(m, Q^-1)``,
``Q = lam_grad G^T G + lam_0 I`` (``G`` the forward-difference image gradient, in pixels).
The posterior is Gaussian with precision ``P = A^T A / sigma^2 + Q`` and mean
``P^-1 (A^T y / sigma^2 + Q m)``. Samples come by perturb-and-optimise (Papandreou & Yuille):
``x_s = mean + P^-1 w`` with ``w = A^T eps_y / sigma + sqrt(lam_grad) G^T eps_g + sqrt(lam_0) eps_0``,
whose covariance is exactly ``P`` so ``x_s`` has covariance ``P^-1``; each solve is conjugate
gradients, so nothing larger than an image is ever stored.

CT makes ``P`` badly conditioned (``||A||^2 / sigma^2`` is ~1e8 times the prior terms), so CG is
preconditioned by the prior precision itself, inverted exactly by the DCT (``preconditioners.py``).
The preconditioner changes the iterates only, never the stopping rule nor the answer; the
largest relative residual reached is returned with the samples (``SampleResult.residual``) and
stored by the pipeline, because on real CT sizes the solves may stop at ``max_iter`` before the
tolerance.

It is the first honest uncertainty of the pipeline: exact up to the CG tolerance, with no
learned component, and a check for any fancier sampler on the same data.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inversa.models.physics.base import Gradient2D

from .base import (Sampler, SampleResult, StepCallback, Tally, check_measurement, expand_to, per_slice_sigma,
                   standard_normal)
from .cg import conjugate_gradient
from .preconditioners import PriorPreconditioner, fourier_preconditioner

PRECONDITIONERS = ("prior", "fourier", "none")


def gmrf_marginal_variance_factor(correlation_length: float, grid: int = 512) -> float:
    """Marginal variance of ``N(0, (I + l^2 G^T G)^-1)`` far from the image edges.

    Averages the spectrum ``1 / (1 + l^2 lambda(w))`` of the periodic lattice Laplacian,
    ``lambda(w) = 4 sin^2(w1/2) + 4 sin^2(w2/2)``; with it the prior can be stated as a
    standard deviation and a correlation length, which users can reason about.
    """
    w = 2 * np.pi * np.fft.fftfreq(grid)
    lam = 4 * np.sin(w[:, None] / 2) ** 2 + 4 * np.sin(w[None, :] / 2) ** 2
    return float(np.mean(1.0 / (1.0 + correlation_length**2 * lam)))


class GaussianPosterior(Sampler):
    """Posterior samples for a Gaussian Markov random field prior.

    Parameters (image units; for CT, attenuation in 1/mm):

    - ``prior_mean``: constant prior mean ``m`` (default 0: air).
    - ``prior_std``: marginal prior standard deviation of a pixel (default 0.03/mm, the scale of
      plastics and light tissue at X-ray energies; HTC2022 acrylic is about 0.03-0.045/mm).
    - ``correlation_length``: in pixels (default 2): how far neighbouring pixels move together.
      From these, ``lam_0 = c(l) / prior_std^2`` and ``lam_grad = l^2 lam_0`` where ``c(l)``
      makes the marginal variance ``prior_std^2`` (``gmrf_marginal_variance_factor``).
    - ``lam_grad``, ``lam_0``: give both to set ``Q`` directly instead (``lam_0 > 0``).
    - ``tol``, ``max_iter``: CG stopping rule (relative residual) for the mean and each sample.
    - ``preconditioner``: ``"prior"`` (default; the exact inverse of ``Q`` by the DCT: data-poor
      directions such as a limited-angle wedge settle on the prior at once, so even an
      unconverged solve is a sensible image), ``"fourier"`` (circulant approximation of ``P``
      from the operator's point-spread function; fastest on full-angle parallel-beam scans,
      unreliable on limited-angle fan-beam data) or ``"none"`` (plain CG).

    A ``sample`` call makes two steps (progress ``total`` 2): the posterior mean, then one CG
    solve for all perturbations. Its result's ``nfe`` counts calls of ``A`` and ``A^T`` (two per
    CG iteration), ``iterations`` those of the slowest solve and ``residual`` the largest
    relative residual reached (the CG recursion's). The mean of the last measurement is cached,
    so drawing samples in chunks solves it once (a chunk that reuses it costs less ``nfe``);
    ``posterior_mean`` returns it.
    """

    name = "gaussian"
    deterministic = False

    def __init__(
        self,
        prior_mean: float = 0.0,
        prior_std: float = 0.03,
        correlation_length: float = 2.0,
        lam_grad: float | None = None,
        lam_0: float | None = None,
        tol: float = 1e-5,
        max_iter: int = 500,
        preconditioner: str = "prior",
    ):
        super().__init__()
        if not math.isfinite(prior_mean):
            raise ValueError(f"gaussian: prior_mean must be finite, got {prior_mean}")
        if (lam_grad is None) != (lam_0 is None):
            raise ValueError("gaussian: give both lam_grad and lam_0, or neither (then prior_std and correlation_length set them)")
        if lam_grad is None:
            if not prior_std > 0:
                raise ValueError(f"gaussian: prior_std must be > 0, got {prior_std}")
            if not correlation_length >= 0:
                raise ValueError(f"gaussian: correlation_length (pixels) must be >= 0, got {correlation_length}")
            lam_0 = gmrf_marginal_variance_factor(correlation_length) / prior_std**2
            lam_grad = correlation_length**2 * lam_0
        if not (lam_0 > 0 and lam_grad >= 0):
            raise ValueError(f"gaussian: need lam_0 > 0 and lam_grad >= 0, got lam_0={lam_0}, lam_grad={lam_grad}")
        if not tol > 0 or int(max_iter) < 1:
            raise ValueError(f"gaussian: need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"gaussian: preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}")
        self.prior_mean = float(prior_mean)
        self.prior_std = float(prior_std)
        self.correlation_length = float(correlation_length)
        self.lam_grad = float(lam_grad)
        self.lam_0 = float(lam_0)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.preconditioner = preconditioner
        # (key, y, sigma, mean) of the last mean solved: shared by calls on purpose, replaced whole.
        self._cache = None

    def params(self) -> dict:
        return {
            "prior_mean": self.prior_mean, "prior_std": self.prior_std,
            "correlation_length": self.correlation_length, "lam_grad": self.lam_grad,
            "lam_0": self.lam_0, "tol": self.tol, "max_iter": self.max_iter,
            "preconditioner": self.preconditioner,
        }

    # ------------------------------------------------------------------ the linear algebra
    def _precision(self, operator, grad: Gradient2D, inv_var: torch.Tensor, tally: Tally | None = None):
        """``x -> P x`` for a batch whose item ``i`` has noise precision ``inv_var[i]``; counted on ``tally``."""

        def apply(x: torch.Tensor) -> torch.Tensor:
            if tally is not None:
                tally.nfe += 2
            out = operator.adjoint(operator.forward(x)) * expand_to(inv_var, x)
            if self.lam_grad:
                out = out + self.lam_grad * grad.adjoint(grad.forward(x))
            return out + self.lam_0 * x

        return apply

    def _solve(self, operator, grad: Gradient2D, inv_var: torch.Tensor, rhs: torch.Tensor, tally: Tally) -> torch.Tensor:
        """``P^-1 rhs`` per item, item ``i`` with noise precision ``inv_var[i]``."""
        precondition = None
        if self.preconditioner == "fourier":
            precondition = fourier_preconditioner(operator, self.lam_grad, self.lam_0, inv_var)
        elif self.preconditioner == "prior":
            precondition = PriorPreconditioner(tuple(operator.in_shape), self.lam_grad, self.lam_0)
        result = conjugate_gradient(self._precision(operator, grad, inv_var, tally), rhs, tol=self.tol,
                                    max_iter=self.max_iter, preconditioner=precondition)
        tally.solver(result.iterations, float(result.relative_residual.max()))
        return result.x

    def posterior_mean(self, y: torch.Tensor, operator, noise_sigma) -> torch.Tensor:
        """``P^-1 (A^T y / sigma^2 + Q m)`` for every slice, ``(B, H, W)``."""
        y = check_measurement(y, operator, "gaussian")
        sigma = per_slice_sigma(noise_sigma, y.shape[0], y, "gaussian")
        grad = self._gradient(operator, y)
        return self._mean(y, operator, sigma, grad, Tally())

    def _gradient(self, operator, like: torch.Tensor) -> Gradient2D:
        shape = tuple(operator.in_shape)
        if len(shape) != 2:
            raise ValueError(f"gaussian: the operator's in_shape is {shape}; expected an image (H, W)")
        return Gradient2D(shape).to(dtype=like.dtype, device=like.device)

    def _mean(self, y, operator, sigma, grad, tally: Tally) -> torch.Tensor:
        key = (id(operator), y.dtype, y.device, tuple(y.shape))
        cache = self._cache  # read once: another thread may replace it meanwhile
        if cache is not None and cache[0] == key and torch.equal(cache[1], y) and torch.equal(cache[2], sigma):
            return cache[3]
        inv_var = sigma.reciprocal().square()
        m = torch.full((y.shape[0], *operator.in_shape), self.prior_mean, dtype=y.dtype, device=y.device)
        tally.nfe += 1
        rhs = operator.adjoint(y) * expand_to(inv_var, m) + self.lam_0 * m
        if self.lam_grad:
            rhs = rhs + self.lam_grad * grad.adjoint(grad.forward(m))
        mean = self._solve(operator, grad, inv_var, rhs, tally)
        self._cache = (key, y.clone(), sigma.clone(), mean)
        return mean

    # ------------------------------------------------------------------ the sampler
    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y = check_measurement(y, operator, "gaussian")
        if int(n) < 1:
            raise ValueError(f"gaussian: n must be >= 1, got {n}")
        n, batch = int(n), y.shape[0]
        sigma = per_slice_sigma(noise_sigma, batch, y, "gaussian")
        grad = self._gradient(operator, y)
        tally = Tally(callback, total=2)
        mean = self._mean(y, operator, sigma, grad, tally)
        tally.step()

        shape = tuple(operator.in_shape)
        eps_y = standard_normal(tuple(operator.out_shape), n, batch, generator, y)
        eps_g = standard_normal((2, *shape), n, batch, generator, y)
        eps_0 = standard_normal(shape, n, batch, generator, y)
        flat = n * batch
        sig = sigma.repeat(n)  # item (s, b) -> sigma[b], matching the (n, B) flattening
        tally.nfe += 1
        w = operator.adjoint(eps_y.reshape(flat, *operator.out_shape)) * expand_to(sig.reciprocal(), eps_0.reshape(flat, *shape))
        w = w + math.sqrt(self.lam_0) * eps_0.reshape(flat, *shape)
        if self.lam_grad:
            w = w + math.sqrt(self.lam_grad) * grad.adjoint(eps_g.reshape(flat, 2, *shape))
        delta = self._solve(operator, grad, sig.reciprocal().square(), w, tally)
        tally.step()
        return tally.result(mean.unsqueeze(0) + delta.reshape(n, batch, *shape))
