"""Posterior samplers that turn a diffusion prior into samples for any linear operator.

All three run on the variance-exploding schedule of ``models.priors.schedule`` and need only a
denoiser ``denoiser(x_t, sigma) -> x0_hat``; they differ in how the measurement enters:

- DPS (Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems"):
  ancestral reverse diffusion plus the gradient of ``||y - A x0_hat(x_t)||^2`` taken through the
  denoiser. Approximate: it treats ``x0_hat`` as if it were ``x0``.
- DDS (Chung et al., "Decomposed Diffusion Sampler for Accelerating Large-Scale Inverse
  Problems"): Tweedie denoise, a few conjugate-gradient steps on the data-consistency normal
  equations started at ``x0_hat``, then a DDIM re-noising; no backpropagation through the network.
- RED-diff (Mardani et al., "A Variational Perspective on Solving Inverse Problems with
  Diffusion Models"): Adam on the variational mean against the data term plus noise-level-weighted
  denoiser residuals. A mode seeker: its samples differ little, so its spread is not a posterior
  spread.

Every item of the flattened ``(n * B)`` batch draws its noise from its slice's generator (see
``base.standard_normal``), so a slice's samples do not depend on the batch it ran in. The cost
that matters is the network, so a result's ``nfe`` counts denoiser calls (one per call on the
whole batch); one progress step is one noise level, ``total = n_steps``. DPS and DDS report the
CG iterations of their data-consistency solves as ``iterations``; those solves are cut at
``cg_steps`` by design, not by a tolerance, so no ``residual`` is reported.
"""

from __future__ import annotations

import math

import torch

from inversa.models.priors.schedule import ddim_step, epsilon_from_x0, sigmas

from .base import (Sampler, SampleResult, StepCallback, Tally, expand_to, flat_draws, standard_normal)
from .cg import conjugate_gradient


class DiffusionSampler(Sampler):
    """Shared set-up: the denoiser, the schedule and the ``(n, B) -> n * B`` flattening."""

    deterministic = False
    prior_param = "denoiser"
    prior_families = ("diffusion",)

    def __init__(self, denoiser=None, n_steps: int = 50, sigma_min: float = 0.01, sigma_max: float = 80.0,
                 rho: float = 7.0):
        super().__init__()
        if denoiser is not None and not callable(denoiser):
            raise TypeError(f"{self.name}: denoiser must be callable as denoiser(x_t, sigma), got {type(denoiser).__name__}")
        if int(n_steps) < 1:
            raise ValueError(f"{self.name}: n_steps must be >= 1, got {n_steps}")
        sigmas(2, sigma_min, sigma_max, rho)  # validates the schedule parameters with a clear message
        self.denoiser = denoiser
        self.n_steps = int(n_steps)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.rho = float(rho)

    def params(self) -> dict:
        return {"denoiser": repr(self.denoiser), "n_steps": self.n_steps, "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max, "rho": self.rho}

    def _denoise(self, x: torch.Tensor, sigma, tally: Tally) -> torch.Tensor:
        tally.nfe += 1
        return self.denoiser(x, sigma)

    def _setup(self, y, operator, noise_sigma, n, callback: StepCallback | None):
        if self.denoiser is None:
            raise ValueError(f"{self.name}: no denoiser set; pass denoiser=... or set the sampler's .denoiser")
        y_flat, noise, shape, n, batch = flat_draws(y, operator, noise_sigma, n, self.name)
        levels = sigmas(self.n_steps, self.sigma_min, self.sigma_max, self.rho, dtype=y.dtype).tolist()
        return y_flat, noise, shape, n, batch, levels, Tally(callback, total=self.n_steps)

    @staticmethod
    def _normal(shape, n, batch, generator, like):
        return standard_normal(shape, n, batch, generator, like).reshape(n * batch, *shape)


def row_energy(operator, shape, like: torch.Tensor, probes: int = 16) -> torch.Tensor:
    """``diag(A A^T)`` estimated from ``probes`` Rademacher vectors (``E[(A z)^2]``), seed fixed.

    The Jacobi preconditioner of DPS's measurement-space solve needs it; ray lengths (CT) and
    Poisson variances make that system badly scaled, and plain CG then needs tens of steps.
    """
    g = torch.Generator().manual_seed(0)
    z = (torch.randint(0, 2, (probes, *shape), generator=g) * 2 - 1).to(dtype=like.dtype, device=like.device)
    return operator.forward(z).square().mean(0).clamp_min(torch.finfo(like.dtype).tiny)


class DPS(DiffusionSampler):
    """Diffusion posterior sampling: ancestral steps pushed up the likelihood of ``x0_hat(x_t)``.

    Each step adds ``guidance_scale * (sigma^2 - sigma_next^2)`` times an approximation of the
    likelihood score ``grad_{x_t} log p(y | x_t)``, taken through the denoiser (one
    vector-Jacobian product per step). ``step_rule``:

    - ``"covariance"`` (default): ``J^T A^T (S + r^2 A A^T)^-1 (y - A x0_hat)``, where ``S`` is the
      noise covariance and ``r^2`` the spread of ``x0`` given ``x_t`` (``sigma^2 v / (sigma^2 + v)``
      for prior pixel variance ``v``; the prior's own ``data_variance`` if it has one). The inverse is
      applied by ``cg_steps`` of Jacobi-preconditioned conjugate gradients in measurement space
      (see ``row_energy``). This is DPS with the
      likelihood covariance of Song et al.'s pseudoinverse guidance (PiGDM); unlike the plain rules it
      needs no retuning when the operator's scale changes (CT line integrals in 1/mm).
    - ``"gaussian"``: DPS's own likelihood, ``-grad ||y - A x0_hat||^2 / (2 noise_sigma^2)``; it
      neglects the spread of ``x0`` and over-trusts the data early on: stable only for small ``||A||``.
    - ``"chung"``: the paper's step, ``guidance_scale / ||y - A x0_hat||`` times the gradient of the
      squared misfit (``guidance_scale`` then carries image units).

    ``noise_model``: ``"gaussian"`` (variance ``noise_sigma^2``), ``"poisson"`` (emission data
    ``y = counts / counts_per_unit``, variance ``max(y, 1/counts_per_unit) / counts_per_unit``, the
    diagonal weighting Chung et al. use for Poisson noise) or ``"transmission"`` (post-log CT with
    ``counts_per_unit`` incident photons per ray, variance ``exp(y) / counts_per_unit``). The Poisson
    models need the ``covariance`` or ``gaussian`` rule.
    """

    name = "dps"
    STEP_RULES = ("covariance", "chung", "gaussian")
    NOISE_MODELS = ("gaussian", "poisson", "transmission")
    no_grad = False

    def __init__(self, denoiser=None, n_steps: int = 200, sigma_min: float = 0.01, sigma_max: float = 80.0,
                 rho: float = 7.0, guidance_scale: float = 1.0, step_rule: str = "covariance",
                 cg_steps: int = 5, prior_variance: float | None = None, noise_model: str = "gaussian",
                 counts_per_unit: float | None = None):
        super().__init__(denoiser, n_steps, sigma_min, sigma_max, rho)
        if not (guidance_scale >= 0 and math.isfinite(guidance_scale)):
            raise ValueError(f"dps: guidance_scale must be a finite number >= 0, got {guidance_scale}")
        if step_rule not in self.STEP_RULES:
            raise ValueError(f"dps: step_rule must be one of {self.STEP_RULES}, got {step_rule!r}")
        if noise_model not in self.NOISE_MODELS:
            raise ValueError(f"dps: noise_model must be one of {self.NOISE_MODELS}, got {noise_model!r}")
        if noise_model != "gaussian":
            if counts_per_unit is None or not counts_per_unit > 0:
                raise ValueError(f"dps: noise_model {noise_model!r} needs counts_per_unit > 0, got {counts_per_unit}")
            if step_rule == "chung":
                raise ValueError(f"dps: noise_model {noise_model!r} needs step_rule 'covariance' or 'gaussian'")
        if int(cg_steps) < 1:
            raise ValueError(f"dps: cg_steps must be >= 1, got {cg_steps}")
        if prior_variance is not None and not prior_variance > 0:
            raise ValueError(f"dps: prior_variance must be > 0 or None, got {prior_variance}")
        self.guidance_scale = float(guidance_scale)
        self.step_rule = step_rule
        self.cg_steps = int(cg_steps)
        self.prior_variance = None if prior_variance is None else float(prior_variance)
        self.noise_model = noise_model
        self.counts_per_unit = None if counts_per_unit is None else float(counts_per_unit)

    def params(self) -> dict:
        return {**super().params(), "guidance_scale": self.guidance_scale, "step_rule": self.step_rule,
                "cg_steps": self.cg_steps, "prior_variance": self.prior_variance, "noise_model": self.noise_model,
                "counts_per_unit": self.counts_per_unit}

    def noise_variance(self, y_flat: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-measurement noise variance, broadcastable against ``y_flat``."""
        if self.noise_model == "gaussian":
            return expand_to(noise.square(), y_flat)
        c = self.counts_per_unit
        if self.noise_model == "poisson":
            return torch.clamp(y_flat, min=1.0 / c) / c
        return torch.exp(y_flat) / c

    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        if self.noise_model != "gaussian" and noise_sigma is None:
            noise_sigma = 1.0  # the Poisson models take their variance from the data, not from noise_sigma
        y_flat, noise, shape, n, batch, levels, tally = self._setup(y, operator, noise_sigma, n, callback)
        variance = self.noise_variance(y_flat, noise)
        data_var = self.prior_variance or getattr(self.denoiser, "data_variance", None)
        rows = row_energy(operator, shape, y) if self.step_rule == "covariance" else None
        x = levels[0] * self._normal(shape, n, batch, generator, y) + getattr(self.denoiser, "offset", 0.0)
        for sigma, sigma_next in zip(levels[:-1], levels[1:]):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                x0 = self._denoise(x_in, sigma, tally)
                residual = (y_flat - operator.forward(x0)).detach()
                if self.step_rule == "covariance":
                    r2 = sigma**2 if data_var is None else sigma**2 * data_var / (sigma**2 + data_var)

                    def apply(u, r2=r2):
                        return variance * u + r2 * operator.forward(operator.adjoint(u))

                    jacobi = (variance + r2 * rows).reciprocal()
                    solved = conjugate_gradient(apply, residual, x0=residual * 0, tol=1e-6, max_iter=self.cg_steps,
                                                preconditioner=lambda v, jacobi=jacobi: v * jacobi)
                    tally.solver(solved.iterations)
                    direction = operator.adjoint(solved.x)
                    weight = self.guidance_scale * (sigma**2 - sigma_next**2)
                elif self.step_rule == "gaussian":
                    direction = operator.adjoint(residual / variance)
                    weight = self.guidance_scale * (sigma**2 - sigma_next**2)
                else:
                    norm = residual.flatten(1).square().sum(1).sqrt().clamp_min(1e-12)
                    direction = 2 * operator.adjoint(residual)
                    weight = expand_to(self.guidance_scale / norm, residual)
                (grad,) = torch.autograd.grad((x0 * direction).sum(), x_in)
            x0, grad = x0.detach(), grad.detach()
            z = self._normal(shape, n, batch, generator, y) if sigma_next > 0 else None
            x_next = ddim_step(x0, epsilon_from_x0(x, x0, sigma), sigma, sigma_next, 1.0, z)
            x = x_next + weight * grad
            tally.step()
        return tally.result(x.reshape(n, batch, *shape))


class DDS(DiffusionSampler):
    """Decomposed diffusion sampling: denoise, a few CG steps towards the data, re-noise.

    The data-consistency step solves, from ``x0_hat`` and for ``cg_steps`` iterations,
    ``(A^T A / noise_sigma^2 + I / r^2) x = A^T y / noise_sigma^2 + x0_hat / r^2``: the
    posterior mean of ``x0`` if ``x0`` given ``x_t`` were ``N(x0_hat, r^2 I)``. ``r^2 = sigma^2``
    by default; with ``prior_variance = v`` (the pixel variance of the data) it is
    ``sigma^2 v / (sigma^2 + v)`` (default: the prior's ``data_variance`` if it states one), the exact spread for white data, which keeps early steps from
    over-trusting a still-blurry ``x0_hat``. ``eta`` sets the fresh noise of the DDIM
    re-noising (1: ancestral); the re-noising keeps the denoiser's implied noise.
    ``consistency="krylov"`` drops the ``I / r^2`` term, as the DDS paper does: ``cg_steps`` of CG on
    ``A^T A x = A^T y`` started at ``x0_hat``, where the early stop (the Krylov subspace around
    ``x0_hat``) is the only regulariser.
    """

    name = "dds"
    CONSISTENCY = ("posterior", "krylov")

    def __init__(self, denoiser=None, n_steps: int = 50, sigma_min: float = 0.01, sigma_max: float = 80.0,
                 rho: float = 7.0, cg_steps: int = 5, eta: float = 1.0, prior_variance: float | None = None,
                 consistency: str = "posterior"):
        super().__init__(denoiser, n_steps, sigma_min, sigma_max, rho)
        if consistency not in self.CONSISTENCY:
            raise ValueError(f"dds: consistency must be one of {self.CONSISTENCY}, got {consistency!r}")
        self.consistency = consistency
        if int(cg_steps) < 0:
            raise ValueError(f"dds: cg_steps must be >= 0, got {cg_steps}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"dds: eta must be in [0, 1], got {eta}")
        if prior_variance is not None and not prior_variance > 0:
            raise ValueError(f"dds: prior_variance must be > 0 or None, got {prior_variance}")
        self.cg_steps = int(cg_steps)
        self.eta = float(eta)
        self.prior_variance = None if prior_variance is None else float(prior_variance)

    def params(self) -> dict:
        return {**super().params(), "cg_steps": self.cg_steps, "eta": self.eta, "prior_variance": self.prior_variance,
                "consistency": self.consistency}

    def _spread(self, sigma: float) -> float:
        v = self.prior_variance or getattr(self.denoiser, "data_variance", None)
        if v is None:
            return sigma**2
        return sigma**2 * v / (sigma**2 + v)

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y_flat, noise, shape, n, batch, levels, tally = self._setup(y, operator, noise_sigma, n, callback)
        inv_noise_var = noise.reciprocal().square()
        aty = operator.adjoint(y_flat) * expand_to(inv_noise_var, y_flat.new_zeros(y_flat.shape[0], *shape))
        x = levels[0] * self._normal(shape, n, batch, generator, y) + getattr(self.denoiser, "offset", 0.0)
        for sigma, sigma_next in zip(levels[:-1], levels[1:]):
            x0 = self._denoise(x, sigma, tally)
            eps = epsilon_from_x0(x, x0, sigma)
            if self.cg_steps:
                inv_r2 = 1.0 / self._spread(sigma) if self.consistency == "posterior" else 0.0

                def apply(v, inv_r2=inv_r2):
                    return operator.adjoint(operator.forward(v)) * expand_to(inv_noise_var, v) + inv_r2 * v

                result = conjugate_gradient(apply, aty + inv_r2 * x0, x0=x0, tol=1e-12, max_iter=self.cg_steps)
                tally.solver(result.iterations)
                x0 = result.x
            z = self._normal(shape, n, batch, generator, y) if (sigma_next > 0 and self.eta > 0) else None
            x = ddim_step(x0, eps, sigma, sigma_next, self.eta, z)
            tally.step()
        return tally.result(x.reshape(n, batch, *shape))


class REDDiff(DiffusionSampler):
    """RED-diff: Adam on the mean ``mu`` of a variational posterior, one noise level per step.

    Loss gradient at level ``sigma`` with fresh noise ``eps`` and ``x0_hat = D(mu + sigma eps, sigma)``:
    ``A^T (A mu - y) / noise_sigma^2 + lam * w(sigma) * (mu - x0_hat)``. ``weighting``:
    ``"score"`` (``w = 1 / sigma^2``: the residual becomes the score of the noised prior, so for a
    Gaussian prior the fixed point is the MAP of a prior smoothed by ``sigma``) or ``"sigma"``
    (``w = 1``, the paper's ``lambda_t = lam * sigma_t`` on the noise residual, i.e. weight
    ``1 / sqrt(SNR)``). Levels go from ``sigma_max`` to ``sigma_min`` (the trailing 0 of the
    schedule is skipped); Adam's steps are in pixel units, so ``lr`` and ``lr_final`` are in units
    of the prior's data scale (the denoiser's ``scale`` attribute; 1 when it has none, as for
    images of unit range) and one setting serves images in 1/mm and normalised ones alike. The
    learning rate falls linearly from ``lr`` to ``lr_final`` so the
    last iterates settle. Samples differ only through their start and noise: a mode seeker.
    """

    name = "reddiff"
    WEIGHTINGS = ("score", "sigma")

    def __init__(self, denoiser=None, n_steps: int = 200, sigma_min: float = 0.01, sigma_max: float = 1.0,
                 rho: float = 7.0, lr: float = 0.05, lr_final: float = 0.001, lam: float = 1.0,
                 weighting: str = "score"):
        super().__init__(denoiser, n_steps, sigma_min, sigma_max, rho)
        if not (lr > 0 and lr_final > 0):
            raise ValueError(f"reddiff: lr and lr_final must be > 0, got {lr}, {lr_final}")
        if not lam >= 0:
            raise ValueError(f"reddiff: lam must be >= 0, got {lam}")
        if weighting not in self.WEIGHTINGS:
            raise ValueError(f"reddiff: weighting must be one of {self.WEIGHTINGS}, got {weighting!r}")
        self.lr, self.lr_final, self.lam, self.weighting = float(lr), float(lr_final), float(lam), weighting

    def params(self) -> dict:
        return {**super().params(), "lr": self.lr, "lr_final": self.lr_final, "lam": self.lam, "weighting": self.weighting}

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y_flat, noise, shape, n, batch, levels, tally = self._setup(y, operator, noise_sigma, n, callback)
        levels = levels[:-1]
        inv_noise_var = noise.reciprocal().square()
        # Start from the denoised pure noise: a draw near the prior's centre, different per sample.
        start = levels[0] * self._normal(shape, n, batch, generator, y) + getattr(self.denoiser, "offset", 0.0)
        mu = self._denoise(start, levels[0], tally).clone()
        mu.requires_grad_(False)
        param = torch.nn.Parameter(mu)
        unit = float(getattr(self.denoiser, "scale", 1.0))
        optimiser = torch.optim.Adam([param], lr=self.lr * unit)
        total = len(levels)
        for k, sigma in enumerate(levels):
            eps = self._normal(shape, n, batch, generator, y)
            x0 = self._denoise(param.data + sigma * eps, sigma, tally)
            weight = self.lam / sigma**2 if self.weighting == "score" else self.lam
            misfit = operator.adjoint(operator.forward(param.data) - y_flat) * expand_to(inv_noise_var, x0)
            param.grad = misfit + weight * (param.data - x0)
            frac = k / max(total - 1, 1)
            for group in optimiser.param_groups:
                group["lr"] = unit * (self.lr + frac * (self.lr_final - self.lr))
            optimiser.step()
            tally.step()
        return tally.result(param.data.detach().clone().reshape(n, batch, *shape))
