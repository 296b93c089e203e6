"""Posterior samplers with a VAE prior: VBLE, PnP-HVAE and latent Langevin.

All three see the image model ``x = D(z)``, ``z ~ p(z)``, through the ``VAEPrior`` protocol of
``models.priors.vae`` (``top_down``, ``encode``, ``latent_shapes_for``, ``decoder_sigma``,
``data_variance``, ``offset``, ``scale``); the prior is passed as ``vae=`` (``prior_param``), so a
plain VAE, a hierarchical one and the exact ``LinearVAEPrior`` of the tests are interchangeable.
The likelihood is ``y = A x + e``, ``e ~ N(0, noise_sigma^2 I)`` per slice.

- VBLE (Biquard et al., "Variational Bayes image restoration with compressive autoencoders"):
  Adam on a mean-field Gaussian ``q(z)`` over every latent scale, maximising
  ``E_q[log p(y | A D(z))] - KL(q || p(z))`` with reparameterised draws. For a hierarchical prior
  the KL is ``sum_l E_q[KL(q_l || p(z_l | z_<l))]``, each term in closed form at the drawn
  ``z_<l``. Returns ``n`` draws ``D(z)``, ``z ~ q``. ``fit`` returns ``q`` itself.
- PnP-HVAE (Prost et al., "Inverse problem regularization with hierarchical variational
  autoencoders", 2023): alternates an encoder step, ``z`` from the tempered posterior
  ``q(z_l | x, z_<l) p_tau(z_l | z_<l) / p(z_l | z_<l)`` (``tempered`` in the prior module), and
  a data-consistency step on ``x`` for ``||y - A x||^2 / sigma^2 + ||x - D(z)||^2 / gamma^2``
  (``cg_steps`` of CG). ``stochastic=True`` draws both steps instead of taking their modes (the
  x-step by perturb-and-optimise), which makes it a Gibbs sampler of ``p(x, z | y)`` when the
  encoder is exact; ``False`` is the paper's MAP iteration and gives ``n`` equal draws.
- Latent Langevin ("vae-langevin"): Adam to the latent MAP of ``log p(y | A D(z)) + log p(z)``,
  then Metropolis-adjusted Langevin (proposals ``z + h M grad + sqrt(2 h M) xi``, accepted by
  the Metropolis-Hastings ratio per chain) with a diagonal preconditioner
  ``M`` frozen at the MAP: the inverse of the diagonal Fisher information of the likelihood
  (``E[g^2]`` for ``g = J^T A^T xi / sigma``, ``xi ~ N(0, I)``, over ``fisher_probes`` probes)
  plus the prior precision (1 for ``N(0, I)``; ``1 / std^2`` of ``p(z_l | z_<l)`` at the MAP).
  ``h`` is then a unit-free step. The Metropolis step makes the chain exact (unadjusted Langevin
  had 5 % excess variance on a Gaussian at ``h = 0.1``, and diverged to NaN on the real HTC2022
  scans where the decoder's curvature outgrows the MAP's). The slow reference method.

Outputs are decoder means ``D(z)``: the decoder's pixel noise (``gamma``) is a training device
that models what the VAE cannot represent, not image content, so it is not added to draws.
PnP-HVAE returns ``E[x | z, y]`` at its last ``z`` (the x-step's mean), which carries data
detail that ``D(z)`` lacks.

Starting point (``init``): ``"encode"`` (default) encodes a regularised least-squares image
(``init_cg_steps`` of CG on ``(A^T A / sigma^2 + I / v) x = A^T y / sigma^2 + offset / v``,
``v`` the prior's ``data_variance``); ``"prior"`` starts at the prior's mean latents.

Shared conventions: samples ``(n, B, *image_shape)``; every random draw comes from the slice's
generator through ``standard_normal``, and all per-item work is independent (Adam and CG act per
element and per item), so a slice's draws do not depend on the batch it ran in. Nothing of a
call is kept on the sampler. ``nfe`` counts network passes (a decode, or an encode, on the whole
batch counts once); ``steps`` the outer iterations, reported to ``callback``.

Defaults, meant for 64-128 pixel CT priors (seconds on a GPU): VBLE ``n_iter=1000`` with
``mc_samples=4`` (two antithetic pairs) per step (the latent posterior of limited-angle CT is
ill-conditioned and Adam needs many steps whatever its rate: on 4 simulated discs at 60 degrees
with the shipped HVAE, 300 / 1000 / 2000 steps gave 15.5 / 20.3 / 22.5 dB; rates 0.2 or 0.5
instead of 0.05 did not help at 300); PnP-HVAE ``n_iter=50``, ``cg_steps=10``,
``temperature=1``; Langevin ``map_steps=200``, ``burn_in=300``, ``step_size=0.1``, one chain
per draw.
"""

from __future__ import annotations

import math

import torch

from inversa.models.priors.vae import gaussian_kl

from .base import Sampler, SampleResult, StepCallback, Tally, check_measurement, expand_to, per_slice_sigma, standard_normal
from .cg import conjugate_gradient

INITS = ("encode", "prior")
PROTOCOL = ("top_down", "encode", "latent_shapes_for", "decoder_sigma", "data_variance", "offset", "scale")


def _integer(method: str, name: str, value, minimum: int = 1) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{method}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(method: str, name: str, value) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{method}: {name} must be a finite number > 0, got {value}")
    return float(value)


def _repeat(t: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, ...) -> (n * B, ...)``: item ``s * B + b`` is copy ``s`` of item ``b``."""
    return t.repeat(n, *([1] * (t.ndim - 1)))


def _per_item_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


class VAESampler(Sampler):
    """Shared set-up: the prior, the start, the likelihood and the per-slice noise."""

    prior_param = "vae"
    prior_families = ("vae", "hvae")  # a plain VAE is a one-scale ladder to every method here
    deterministic = False
    no_grad = False

    def __init__(self, vae=None, init: str = "encode", init_cg_steps: int = 10):
        super().__init__()
        if vae is not None:
            lacking = [a for a in PROTOCOL if not hasattr(vae, a)]
            if lacking:
                raise TypeError(f"{self.name}: vae must be a VAE prior (models.priors.vae.VAEPrior); "
                                f"{type(vae).__name__} lacks {lacking}")
        if init not in INITS:
            raise ValueError(f"{self.name}: init must be one of {INITS}, got {init!r}")
        self.vae = vae
        self.init = init
        self.init_cg_steps = _integer(self.name, "init_cg_steps", init_cg_steps, 0)

    def params(self) -> dict:
        return {"vae": repr(self.vae), "init": self.init, "init_cg_steps": self.init_cg_steps}

    # -- set-up ----------------------------------------------------------------------------
    def _setup(self, y, operator, noise_sigma, n, total: int, callback):
        if self.vae is None:
            raise ValueError(f"{self.name}: no VAE prior set; pass vae=... or set the sampler's .vae")
        y = check_measurement(y, operator, self.name)
        n = _integer(self.name, "n", n)
        shape = tuple(operator.in_shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"{self.name}: the operator's in_shape is {shape}; expected an image (H, W) or "
                             "(channels, H, W)")
        latent_shapes = [tuple(s) for s in self.vae.latent_shapes_for(shape)]
        noise = per_slice_sigma(noise_sigma, y.shape[0], y, self.name)
        return y, noise, shape, n, latent_shapes, Tally(callback, total=total)

    @staticmethod
    def _normals(shapes, n, batch, generator, like) -> list[torch.Tensor]:
        """One ``(n * B, *shape)`` draw per shape, each slice's from its own generator."""
        return [standard_normal(s, n, batch, generator, like).reshape(n * batch, *s) for s in shapes]

    @staticmethod
    def _misfit(x, y, operator, noise) -> torch.Tensor:
        """``||y - A x||^2 / (2 sigma^2)`` per item (``-log p(y | x)`` up to a constant)."""
        return 0.5 * _per_item_sum((operator.forward(x) - y) ** 2) / noise**2

    def _start_image(self, y, operator, noise, shape) -> torch.Tensor:
        """A regularised least-squares image: ``init_cg_steps`` of CG towards the MAP under ``N(offset, v I)``."""
        offset = float(self.vae.offset)
        start = torch.full((y.shape[0], *shape), offset, dtype=y.dtype, device=y.device)
        if not self.init_cg_steps:
            return start
        inv_v = 1.0 / float(self.vae.data_variance)
        inv_noise = expand_to(noise.reciprocal().square(), start)

        def apply(v):
            return operator.adjoint(operator.forward(v)) * inv_noise + inv_v * v

        rhs = operator.adjoint(y) * inv_noise + inv_v * offset
        return conjugate_gradient(apply, rhs, x0=start, tol=1e-12, max_iter=self.init_cg_steps).x

    @torch.no_grad()
    def _start_latents(self, y, operator, noise, shape, tally: Tally):
        """Per-item latent means and log-stds to start from (``init``)."""
        if self.init == "encode":
            enc = self.vae.encode(self._start_image(y, operator, noise, shape))
            tally.nfe += 1
            return [m.detach().clone() for m, _ in enc.params], [s.detach().clone() for _, s in enc.params]
        shapes = self.vae.latent_shapes_for(shape)
        # The prior's mean latents, scale by scale: a lower scale's prior depends on the ones above.
        latents = [torch.zeros((y.shape[0], *s), dtype=y.dtype, device=y.device) for s in shapes]
        for l in range(len(shapes)):
            _, priors = self.vae.top_down(latents, shape)
            tally.nfe += 1
            latents[l] = priors[l][0].detach().clone()
        return latents, [log_std.detach().clone() for _, log_std in priors]

    def _neg_log_posterior(self, latents, y, operator, noise, shape, tally: Tally):
        """``-log p(y | A D(z)) - log p(z)`` per item (up to constants), the decoded images and prior params."""
        x, priors = self.vae.top_down(latents, shape)
        tally.nfe += 1
        neg_prior = sum(_per_item_sum(0.5 * ((z - m) * torch.exp(-s)) ** 2 + s) for z, (m, s) in zip(latents, priors))
        return self._misfit(x, y, operator, noise) + neg_prior, x, priors


class VBLE(VAESampler):
    """Variational Bayes latent estimation: a mean-field Gaussian ``q(z)`` fitted by Adam.

    ``n_iter`` Adam steps on ``(mean, log_std)`` of ``q``, each on ``mc_samples`` reparameterised
    draws; ``antithetic`` pairs every draw ``eps`` with ``-eps``, which cancels the noise of the
    mean's gradient wherever the decoder is close to linear (needs an even ``mc_samples``). The
    learning rate follows a cosine from ``lr`` to ``lr_final`` (latent units: the prior's latents
    have unit scale), and the returned ``q`` averages the iterates of the last ``average`` fraction
    of the steps (Polyak), which removes most of what the gradient noise leaves in the last iterate.
    """

    name = "vble"

    def __init__(self, vae=None, n_iter: int = 1000, lr: float = 0.05, lr_final: float = 0.005,
                 mc_samples: int = 4, antithetic: bool = True, average: float = 0.5, init: str = "encode",
                 init_cg_steps: int = 10):
        super().__init__(vae, init, init_cg_steps)
        self.n_iter = _integer(self.name, "n_iter", n_iter)
        self.lr = _positive(self.name, "lr", lr)
        self.lr_final = _positive(self.name, "lr_final", lr_final)
        self.mc_samples = _integer(self.name, "mc_samples", mc_samples)
        if not isinstance(antithetic, bool):
            raise ValueError(f"{self.name}: antithetic must be True or False, got {antithetic!r}")
        if antithetic and self.mc_samples % 2:
            raise ValueError(f"{self.name}: antithetic draws come in pairs; mc_samples must be even, got {mc_samples}")
        if not 0 <= average < 1:
            raise ValueError(f"{self.name}: average must be a fraction in [0, 1), got {average}")
        self.antithetic = antithetic
        self.average = float(average)

    def params(self) -> dict:
        return {**super().params(), "n_iter": self.n_iter, "lr": self.lr, "lr_final": self.lr_final,
                "mc_samples": self.mc_samples, "antithetic": self.antithetic, "average": self.average}

    def _rate(self, k: int) -> float:
        frac = k / max(self.n_iter - 1, 1)
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1 + math.cos(math.pi * frac))

    def _draws(self, shapes, batch, generator, like) -> list[torch.Tensor]:
        if not self.antithetic:
            return self._normals(shapes, self.mc_samples, batch, generator, like)
        half = self._normals(shapes, self.mc_samples // 2, batch, generator, like)
        return [torch.cat([e, -e]) for e in half]

    def _fit(self, y, operator, noise, shape, latent_shapes, generator, tally: Tally):
        batch, mc = y.shape[0], self.mc_samples
        means, log_stds = self._start_latents(y, operator, noise, shape, tally)
        params = [t.detach().clone().requires_grad_(True) for t in (*means, *log_stds)]
        means, log_stds = params[:len(means)], params[len(means):]
        optimiser = torch.optim.Adam(params, lr=self.lr)
        y_rep, noise_rep = _repeat(y, mc), noise.repeat(mc)
        first_averaged = min(int(self.n_iter * (1 - self.average)), self.n_iter - 1)
        averages = [p.detach().clone() for p in params]
        for k in range(self.n_iter):
            eps = self._draws(latent_shapes, batch, generator, y)
            with torch.enable_grad():
                latents = [_repeat(m, mc) + torch.exp(_repeat(s, mc)) * e for m, s, e in zip(means, log_stds, eps)]
                x, priors = self.vae.top_down(latents, shape)
                tally.nfe += 1
                kl = sum(_per_item_sum(gaussian_kl(_repeat(m, mc), _repeat(s, mc), pm, ps))
                         for m, s, (pm, ps) in zip(means, log_stds, priors))
                loss = (self._misfit(x, y_rep, operator, noise_rep) + kl).reshape(mc, batch).mean(0).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
            for group in optimiser.param_groups:
                group["lr"] = self._rate(k)
            optimiser.step()
            tally.step()
            if k >= first_averaged:  # running mean of the iterates since first_averaged
                for avg, p in zip(averages, params):
                    avg.lerp_(p.detach(), 1.0 / (k - first_averaged + 1))
        return averages[:len(means)], averages[len(means):]

    def fit(self, y, operator, noise_sigma=None, generator=None,
            callback: StepCallback | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fitted ``q``: per scale ``(mean, log_std)``, each ``(B, *latent_shape)``.

        Takes the same draws as ``sample`` does before its final ones, so ``sample`` with the same
        generators decodes draws of exactly this ``q``."""
        y, noise, shape, _, latent_shapes, tally = self._setup(y, operator, noise_sigma, 1, self.n_iter, callback)
        means, log_stds = self._fit(y, operator, noise, shape, latent_shapes, generator, tally)
        tally.result(y)
        return list(zip(means, log_stds))

    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y, noise, shape, n, latent_shapes, tally = self._setup(y, operator, noise_sigma, n, self.n_iter, callback)
        batch = y.shape[0]
        means, log_stds = self._fit(y, operator, noise, shape, latent_shapes, generator, tally)
        eps = self._normals(latent_shapes, n, batch, generator, y)
        with torch.no_grad():
            latents = [_repeat(m, n) + torch.exp(_repeat(s, n)) * e for m, s, e in zip(means, log_stds, eps)]
            x = self.vae.decode(latents, shape)
        tally.nfe += 1
        return tally.result(x.reshape(n, batch, *shape))


class PnPHVAE(VAESampler):
    """PnP-HVAE: alternate a tempered encoder step on ``z`` and a data-consistency step on ``x``.

    Each of ``n_iter`` iterations encodes the current ``x`` (one network pass, which also gives
    ``D(z)``) with the prior at ``temperature`` tau, then solves
    ``(A^T A / sigma^2 + I / gamma^2) x = A^T y / sigma^2 + D(z) / gamma^2`` by ``cg_steps`` of CG
    started at ``D(z)``. ``gamma``: in units of the prior's ``scale``; None takes the decoder's
    std, which makes the splitting the VAE's own model ``x ~ N(D(z), gamma^2)``. With
    ``stochastic=True`` ``z`` is drawn from the tempered posterior and ``x`` by perturb-and-optimise
    (right-hand side ``A^T (y + sigma xi_1) / sigma^2 + (D(z) + gamma xi_2) / gamma^2``); the
    output is the unperturbed x-step at the last ``z``. tau = 1 targets the model's posterior;
    Prost et al. use tau < 1 for sharper MAP-like reconstructions.
    """

    name = "pnp-hvae"
    no_grad = True

    def __init__(self, vae=None, n_iter: int = 50, temperature: float = 1.0, gamma: float | None = None,
                 cg_steps: int = 10, stochastic: bool = True, init_cg_steps: int = 10):
        super().__init__(vae, "encode", init_cg_steps)
        self.n_iter = _integer(self.name, "n_iter", n_iter)
        self.temperature = _positive(self.name, "temperature", temperature)
        self.gamma = None if gamma is None else _positive(self.name, "gamma", gamma)
        self.cg_steps = _integer(self.name, "cg_steps", cg_steps)
        if not isinstance(stochastic, bool):
            raise ValueError(f"{self.name}: stochastic must be True or False, got {stochastic!r}")
        self.stochastic = stochastic

    def params(self) -> dict:
        return {**super().params(), "n_iter": self.n_iter, "temperature": self.temperature, "gamma": self.gamma,
                "cg_steps": self.cg_steps, "stochastic": self.stochastic}

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y, noise, shape, n, latent_shapes, tally = self._setup(y, operator, noise_sigma, n, self.n_iter, callback)
        batch = y.shape[0]
        gamma = float(self.vae.decoder_sigma) if self.gamma is None else self.gamma * float(self.vae.scale)
        y_flat, noise_flat = _repeat(y, n), noise.repeat(n)
        x = _repeat(self._start_image(y, operator, noise, shape), n)
        inv_noise = expand_to(noise_flat.reciprocal().square(), x)
        inv_g2 = 1.0 / gamma**2

        def apply(v):
            return operator.adjoint(operator.forward(v)) * inv_noise + inv_g2 * v

        for k in range(self.n_iter):
            last = k == self.n_iter - 1
            noises = self._normals(latent_shapes, n, batch, generator, y) if self.stochastic else None
            decoded = self.vae.encode(x, noises, self.temperature).decoded
            tally.nfe += 1
            data, anchor = y_flat, decoded
            if self.stochastic and not last:
                xi_y = standard_normal(tuple(operator.out_shape), n, batch, generator, y).reshape(y_flat.shape)
                xi_x = standard_normal(shape, n, batch, generator, y).reshape(decoded.shape)
                data = y_flat + expand_to(noise_flat, y_flat) * xi_y
                anchor = decoded + gamma * xi_x
            rhs = operator.adjoint(data) * inv_noise + inv_g2 * anchor
            solved = conjugate_gradient(apply, rhs, x0=decoded, tol=1e-10, max_iter=self.cg_steps)
            tally.solver(solved.iterations)
            x = solved.x
            tally.step()
        return tally.result(x.reshape(n, batch, *shape))


class LatentLangevin(VAESampler):
    """Latent MAP by Adam, then Fisher-preconditioned Metropolis-adjusted Langevin in latent space.

    ``map_steps`` Adam steps (``map_lr``) from ``init``; the preconditioner is frozen at the MAP
    (module docstring). ``chains`` parallel chains per slice (None: one per draw) start at the
    MAP; after ``burn_in`` steps each gives a draw every ``thin`` steps until ``n`` are collected.
    ``step_size`` is the starting ``h`` in the preconditioned metric; each chain adapts its own
    during burn-in (towards 57 % acceptance) and keeps it fixed afterwards.
    """

    name = "vae-langevin"

    def __init__(self, vae=None, map_steps: int = 200, map_lr: float = 0.05, step_size: float = 0.1,
                 burn_in: int = 300, thin: int = 10, chains: int | None = None, fisher_probes: int = 8,
                 init: str = "encode", init_cg_steps: int = 10):
        super().__init__(vae, init, init_cg_steps)
        self.map_steps = _integer(self.name, "map_steps", map_steps, 0)
        self.map_lr = _positive(self.name, "map_lr", map_lr)
        self.step_size = _positive(self.name, "step_size", step_size)
        if not self.step_size < 2:
            raise ValueError(f"{self.name}: step_size must be < 2 (Langevin diverges beyond), got {step_size}")
        self.burn_in = _integer(self.name, "burn_in", burn_in, 0)
        self.thin = _integer(self.name, "thin", thin)
        self.chains = None if chains is None else _integer(self.name, "chains", chains)
        self.fisher_probes = _integer(self.name, "fisher_probes", fisher_probes)

    def params(self) -> dict:
        return {**super().params(), "map_steps": self.map_steps, "map_lr": self.map_lr, "step_size": self.step_size,
                "burn_in": self.burn_in, "thin": self.thin, "chains": self.chains, "fisher_probes": self.fisher_probes}

    def _plan(self, n: int) -> tuple[int, int, int]:
        """``(chains, rounds, langevin_steps)`` for ``n`` draws per slice."""
        chains = min(self.chains or n, n)
        rounds = math.ceil(n / chains)
        return chains, rounds, self.burn_in + (rounds - 1) * self.thin

    def _map(self, y, operator, noise, shape, tally):
        means, _ = self._start_latents(y, operator, noise, shape, tally)
        latents = [m.detach().clone().requires_grad_(True) for m in means]
        optimiser = torch.optim.Adam(latents, lr=self.map_lr)
        for _ in range(self.map_steps):
            with torch.enable_grad():
                loss = self._neg_log_posterior(latents, y, operator, noise, shape, tally)[0].sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
            optimiser.step()
            tally.step()
        return [z.detach() for z in latents]

    def _preconditioner(self, z_map, y, operator, noise, shape, generator, tally) -> list[torch.Tensor]:
        """``M = 1 / (diag Fisher + prior precision)`` per latent element, ``(B, *shape)`` per scale."""
        probes, batch = self.fisher_probes, y.shape[0]
        xi = standard_normal(tuple(operator.out_shape), probes, batch, generator, y).reshape(probes * batch, *y.shape[1:])
        with torch.enable_grad():
            latents = [_repeat(z, probes).requires_grad_(True) for z in z_map]
            x, priors = self.vae.top_down(latents, shape)
            tally.nfe += 1
            score = _per_item_sum(operator.forward(x) * xi) / noise.repeat(probes)
            grads = torch.autograd.grad(score.sum(), latents)
        out = []
        for g, (_, log_std) in zip(grads, priors):
            fisher = g.detach().reshape(probes, batch, *g.shape[1:]).square().mean(0)
            precision = torch.exp(-2 * log_std.detach()[:batch])
            out.append((fisher + precision).reciprocal())
        return out

    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        chains, rounds, steps = self._plan(_integer(self.name, "n", n))
        y, noise, shape, n, latent_shapes, tally = self._setup(y, operator, noise_sigma, n, self.map_steps + steps,
                                                                callback)
        batch = y.shape[0]
        z_map = self._map(y, operator, noise, shape, tally)
        metric = [_repeat(m, chains) for m in self._preconditioner(z_map, y, operator, noise, shape, generator, tally)]
        y_rep, noise_rep = _repeat(y, chains), noise.repeat(chains)

        def energy(state):
            """``-log p(z | y)`` per item, its gradient and the decoded image at ``state``."""
            with torch.enable_grad():
                latents = [t.detach().requires_grad_(True) for t in state]
                loss, x, _ = self._neg_log_posterior(latents, y_rep, operator, noise_rep, shape, tally)
                grads = torch.autograd.grad(loss.sum(), latents)
            return loss.detach(), [g.detach() for g in grads], x.detach()

        # One step size per chain, adapted during burn-in towards MALA's optimal acceptance rate
        # (0.574) and frozen after it, so the draws come from a fixed, exact kernel: the MAP's diagonal
        # Fisher metric misses the posterior's correlations, and on real data a fixed h = 0.1 was
        # rejected every time (a chain that never moves reports zero spread).
        h = torch.full((chains * batch,), self.step_size, dtype=y.dtype, device=y.device)

        def log_proposal(to, start, grads):
            """``log q(to | start)`` per item, up to a constant: ``N(start - h M g, 2 h M)``."""
            return -sum(_per_item_sum((t - a + expand_to(h, t) * m * g) ** 2 / (4 * expand_to(h, t) * m))
                        for t, a, m, g in zip(to, start, metric, grads))

        z = [_repeat(m, chains) for m in z_map]
        loss, grads, x = energy(z)
        draws = []
        for k in range(steps + 1):
            if k >= self.burn_in and (k - self.burn_in) % self.thin == 0:
                draws.append(x.reshape(chains, batch, *shape))
            if k == steps:
                break
            xi = self._normals(latent_shapes, chains, batch, generator, y)
            proposal = [t - expand_to(h, t) * m * g + torch.sqrt(2 * expand_to(h, t) * m) * e
                        for t, m, g, e in zip(z, metric, grads, xi)]
            p_loss, p_grads, p_x = energy(proposal)
            # Metropolis correction (module docstring); a rejected item keeps its state.
            log_ratio = (loss - p_loss + log_proposal(z, proposal, p_grads) - log_proposal(proposal, z, grads))
            u = torch.special.ndtr(standard_normal((), chains, batch, generator, y).reshape(-1))
            accept = torch.isfinite(p_loss) & (torch.log(u) < log_ratio.nan_to_num(nan=-math.inf))
            if k < self.burn_in:
                h = h * torch.exp(0.5 * (accept.to(h.dtype) - 0.574))

            def pick(new, old):
                return torch.where(expand_to(accept, new), new, old)

            z = [pick(a, b) for a, b in zip(proposal, z)]
            grads = [pick(a, b) for a, b in zip(p_grads, grads)]
            loss, x = pick(p_loss, loss), pick(p_x, x)
            tally.step()
        return tally.result(torch.cat(draws, dim=0)[:n])
