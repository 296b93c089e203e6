"""Exact Gaussian-process regression of a 2-D field from scattered, noisy observations.

Why this design:

* **Standardised units.** Coordinates are centred and scaled per axis, values centred and
  scaled to unit std, before GPyTorch sees them, so one set of initial hyperparameters and one
  noise floor work for metres, degrees, mGal or kelvin. The offsets and scales are recorded and
  every number handed back (predictions, hyperparameters, log marginal likelihood) is in the
  caller's original units.
* **Exact inference, float64.** Hyperparameters maximise the exact marginal likelihood with
  L-BFGS (strong Wolfe line search: a handful of parameters, smooth objective, no learning-rate
  tuning, deterministic). GPyTorch switches to conjugate gradients and stochastic Lanczos above
  ``max_cholesky_size`` (800 by default); here it is raised to ``MAX_EXACT_POINTS`` so the
  likelihood and its gradient come from a Cholesky factor: exact and reproducible, at O(n^3)
  per evaluation, which on a 2-core CPU limits this solver to about 20,000 observations.
  ``fit_max_points`` optimises hyperparameters on a seeded random subset when n is large; the
  posterior is then still conditioned on all observations.
* **Cached Cholesky for prediction, not LOVE.** After fitting, ``L = chol(K + noise)`` and
  ``alpha = (K + noise)^-1 (y - m)`` are computed once. Each tile of query points needs the
  cross-covariance ``K*x`` (tile x n), the mean ``m + K*x alpha`` and the exact latent variance
  ``k** - |L^-1 Kx*|^2``. LOVE (``gpytorch.settings.fast_pred_var``) would be faster for large
  grids but is a low-rank approximation whose variance error is not bounded; the uncertainty is
  the product here, so the exact variance is the default and its cost (O(n^2) per query point)
  is stated in the benchmark. ``return_std=False`` gives the mean alone at O(n) per point.
* **Tiles.** Memory for prediction is O(n * tile_size) whatever the grid size, so a 500 x 500
  grid is as safe as a 50 x 50 one.
* **Device.** ``device="cuda"`` keeps the observations, the Cholesky factor and each tile on the
  GPU (still float64: the variance is a difference of nearly equal numbers); inputs and outputs
  stay numpy arrays, so callers do not change.
* **Saved fits** (``FieldSolver`` interface, base.py). ``state()`` holds the fitted raw GPyTorch
  parameters as float64 arrays (and the hyperparameters in original units, readable, in its
  metadata); ``restore`` re-conditions on the same observations with exactly those parameters,
  so the Cholesky factor, and every prediction, is the original's bit for bit.
"""

from __future__ import annotations

import copy
import math
import time

import gpytorch
import numpy as np
import torch
from linear_operator.utils.errors import NanError, NotPSDError

from .base import FieldSolver, SolverState, check_n, check_settings, check_state
from .gp_common import Standardisation, kernel_matrix, kernel_terms, load_raw_parameters, scaled_kernel
from .inputs import digest as _digest
from .inputs import distinct as _distinct
from .inputs import fail as _fail
from .inputs import noise_stds as _noise_stds
from .inputs import points as _points
from .inputs import query as _query
from .inputs import values as _values

MAX_EXACT_POINTS = 25_000
"""Cholesky (not CG/Lanczos) is used in GPyTorch up to this many observations."""

STATE_FORMAT = "inversa.exact_gp/1"
"""Tag in ``state()`` metadata; ``restore`` refuses anything else."""

RESTORE_SETTINGS = ("kernel", "noise_floor")
"""Settings that change what the saved raw parameters mean: a restoring solver must share them."""

FIT_RECORD = ("n_fit", "iterations", "function_evaluations", "fit_seconds", "optimiser_note")
"""Entries of ``info`` that describe the optimisation: a restored fit reports the original's."""


class _ExactGPModel(gpytorch.models.ExactGP):
    """Constant mean + ScaleKernel(ARD Matern 5/2, Matern 3/2 or RBF), or a sum of them, over two
    standardised coordinates."""

    def __init__(self, x, y, likelihood, terms: tuple[str, ...]):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        scaled = [scaled_kernel(t) for t in terms]
        self.covar_module = scaled[0] if len(scaled) == 1 else gpytorch.kernels.AdditiveKernel(*scaled)

    def scaled_terms(self) -> list:
        """The ScaleKernel of each term of the covariance."""
        c = self.covar_module
        return list(c.kernels) if isinstance(c, gpytorch.kernels.AdditiveKernel) else [c]

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class ExactGPSolver(FieldSolver):
    """Exact GP field solver: ``fit`` scattered observations, then ``predict`` or ``predict_grid``.

    ``noise_floor`` is the smallest noise variance allowed, in standardised units (a fraction of
    the data variance), keeping ``K + noise`` well conditioned. ``max_iter`` bounds the L-BFGS
    iterations, ``tol`` is the change of the per-observation negative log marginal likelihood
    at which it stops, ``lr`` the L-BFGS step scale, ``seed`` fixes the subset drawn when
    ``fit_max_points`` is smaller than n. ``kernel`` is ``"matern52"``, ``"matern32"``, ``"rbf"`` or a sum such
    as ``"matern52+matern52"``; a sum's hyperparameters ``lengthscale`` and ``outputscale`` are
    lists with one entry per term. ``device`` is a torch device name ("cpu", "cuda"; a
    ``torch.device`` works too).

    A vector field is modelled one component at a time (``componentwise``); a known noise std
    is honoured, otherwise one homoscedastic noise is learned. ``domain``, ``boundary`` and
    ``source`` are accepted for the common interface and ignored: the plain GP models the data.
    """

    name = "gp"
    componentwise = True
    accepts_noise_std = True
    learns_noise = True

    def __init__(self, kernel: str = "matern52", noise_floor: float = 1e-6, max_iter: int = 100,
                 lr: float = 1.0, seed: int = 0, tol: float = 1e-7, tile_size: int = 1024,
                 fit_max_points: int | None = None, device: str = "cpu"):
        self._terms = kernel_terms("ExactGPSolver", kernel)
        if not noise_floor > 0:
            raise ValueError(f"ExactGPSolver: argument 'noise_floor': expected > 0, got {noise_floor}")
        if int(tile_size) < 1:
            raise ValueError(f"ExactGPSolver: argument 'tile_size': expected >= 1, got {tile_size}")
        self.kernel = kernel
        self.noise_floor = float(noise_floor)
        self.max_iter = int(max_iter)
        self.lr = float(lr)
        self.seed = int(seed)
        self.tol = float(tol)
        self.tile_size = int(tile_size)
        if fit_max_points is not None and (isinstance(fit_max_points, bool) or int(fit_max_points) < 1):
            raise ValueError(f"ExactGPSolver: argument 'fit_max_points': expected None or >= 1, got {fit_max_points}")
        self.fit_max_points = None if fit_max_points is None else int(fit_max_points)
        self.device = torch.device(device)
        self._model = None
        self.info: dict = {}

    def _settings(self) -> dict:
        """The constructor settings as JSON-able values (the device is the caller's business)."""
        return {"kernel": self.kernel, "noise_floor": self.noise_floor, "max_iter": self.max_iter, "lr": self.lr,
                "seed": self.seed, "tol": self.tol, "tile_size": self.tile_size,
                "fit_max_points": self.fit_max_points}

    # ------------------------------------------------------------------ fitting
    def fit(self, x, y, y_noise_std=None, *, domain=None, boundary=None, source=None, optimise: bool = True,
            initial: dict | None = None, learn_extra_noise: bool = True) -> "ExactGPSolver":
        """Standardise, optimise hyperparameters (unless ``optimise=False``), cache the Cholesky.

        ``y_noise_std`` (a scalar or (n,)) is a known per-observation noise std in the units of
        ``y``; with it the likelihood is fixed-noise, plus a learned homoscedastic extra noise when
        ``learn_extra_noise``. ``initial`` sets hyperparameters in original units, any of
        ``lengthscale`` (scalar or per axis), ``outputscale`` (variance), ``noise`` (variance;
        the extra noise with ``y_noise_std``) and ``mean``; with ``optimise=False`` they are
        the hyperparameters used. ``domain``, ``boundary``, ``source``: ignored (see the class).
        """
        return self._fit("ExactGPSolver.fit", x, y, y_noise_std, optimise=optimise, initial=initial,
                         learn_extra_noise=learn_extra_noise)

    def restore(self, state: SolverState, x, y, y_noise_std=None, *, domain=None, boundary=None,
                source=None) -> "ExactGPSolver":
        """Re-condition on the observations ``state()`` was fitted on (checked by their sha256) with
        the saved raw parameters: no optimisation, the original's posterior bit for bit."""
        where = "ExactGPSolver.restore"
        meta = check_state(where, state, STATE_FORMAT).meta
        config, fit = meta.get("config") or {}, meta.get("fit") or {}
        current = self._settings()
        check_settings(where, {k: config.get(k) for k in RESTORE_SETTINGS}, {k: current[k] for k in RESTORE_SETTINGS})
        raw = {k[len("raw."):]: v for k, v in state.arrays.items() if k.startswith("raw.")}
        self._fit(where, x, y, y_noise_std, optimise=False, initial=None,
                  learn_extra_noise=bool(fit.get("learn_extra_noise", True)), raw=raw,
                  expect=fit.get("observations_sha256"))
        saved = meta.get("info") or {}
        self.info.update({k: copy.deepcopy(saved[k]) for k in FIT_RECORD if k in saved})
        return self

    def state(self) -> SolverState:
        """Raw fitted parameters (``raw.<name>`` float64 arrays) and JSON-able metadata: format,
        settings, the observations' sha256, hyperparameters in original units and ``info``."""
        self._require_fit("state")
        arrays = {f"raw.{k}": v.detach().cpu().numpy().copy() for k, v in self._model.named_parameters()}
        meta = {
            "format": STATE_FORMAT,
            "config": self._settings(),
            "fit": {"n": int(self._X.shape[0]), "noise_std_given": self._fixed,
                    "learn_extra_noise": self._learn_extra_option, "observations_sha256": self._digest},
            "hyperparameters": self.hyperparameters(),
            "info": copy.deepcopy(self.info),
        }
        return SolverState(meta, arrays)

    def _fit(self, where: str, x, y, y_noise_std, *, optimise: bool, initial: dict | None, learn_extra_noise: bool,
             raw: dict | None = None, expect: str | None = None) -> "ExactGPSolver":
        x = _points(where, "x", x)
        n = x.shape[0]
        y = _values(where, "y", y, n)
        if n < 3:
            _fail(where, "x", "at least 3 observations", n)
        _distinct(where, "x", x)
        noise_std = _noise_stds(where, "y_noise_std", y_noise_std, n)
        observed = _digest(x, y, noise_std)
        if expect is not None and observed != expect:
            raise ValueError(f"{where}: arguments 'x', 'y', 'y_noise_std': expected the observations the state was "
                             f"fitted on (sha256 {expect[:12]}...), got other values (sha256 {observed[:12]}...)")
        scaling = Standardisation.of(where, x, y)
        self._x_mean, self._x_scale, self._y_mean, self._y_scale = (
            scaling.x_mean, scaling.x_scale, scaling.y_mean, scaling.y_scale)

        X = torch.from_numpy((x - self._x_mean) / self._x_scale).to(self.device)
        Y = torch.from_numpy((y - self._y_mean) / self._y_scale).to(self.device)
        floor = gpytorch.constraints.GreaterThan(self.noise_floor)
        if noise_std is None:
            likelihood = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=floor)
        else:
            fixed = torch.from_numpy((noise_std / self._y_scale) ** 2).to(self.device)
            likelihood = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(
                noise=fixed, learn_additional_noise=learn_extra_noise, noise_constraint=floor)
        self._fixed = noise_std is not None
        self._learn_extra = noise_std is None or learn_extra_noise
        self._learn_extra_option = bool(learn_extra_noise)
        self._noise_std, self._digest = noise_std, observed

        # Hyperparameters are optimised on a seeded subset when asked (large n), then the
        # posterior is conditioned on all observations below.
        idx = np.arange(n)
        if optimise and self.fit_max_points is not None and n > self.fit_max_points:
            idx = np.sort(np.random.default_rng(self.seed).choice(n, self.fit_max_points, replace=False))
        model = _ExactGPModel(X[idx], Y[idx], likelihood, self._terms).double().to(self.device)
        likelihood.to(self.device)
        if self._fixed:
            likelihood.noise = fixed[idx]
        self._model, self._likelihood = model, likelihood
        self._set_initial(initial or {})
        if raw is not None:
            self._load_raw(where, raw)

        t0 = time.perf_counter()
        iterations, evaluations, note = 0, 0, None
        if optimise:
            iterations, evaluations, note = self._optimise(X[idx], Y[idx])
        fit_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        self._X, self._Y = X, Y
        self._noise_diag = self._noise_variance_std(n, fixed if self._fixed else None)
        self._cache()
        self.info = {
            "kernel": self.kernel,
            "n": n,
            "n_fit": int(idx.size),
            "hyperparameters": self.hyperparameters(),
            "log_marginal_likelihood": self._log_marginal_likelihood(),
            "iterations": iterations,
            "function_evaluations": evaluations,
            "fit_seconds": fit_seconds,
            "cholesky_seconds": time.perf_counter() - t0,
            "inference": "exact (Cholesky, float64)",
            "optimiser_note": note,
            "variance": "exact latent variance from the cached Cholesky factor",
            "x_mean": self._x_mean.tolist(), "x_scale": self._x_scale.tolist(),
            "y_mean": self._y_mean, "y_scale": self._y_scale,
        }
        return self

    def _load_raw(self, where: str, raw: dict) -> None:
        """Set the model's raw parameters to saved values (names and shapes must match)."""
        load_raw_parameters(where, dict(self._model.named_parameters()), raw,
                            "a state of this kernel and noise model")

    def _set_initial(self, initial: dict) -> None:
        unknown = set(initial) - {"lengthscale", "outputscale", "noise", "mean"}
        if unknown:
            raise ValueError(f"ExactGPSolver.fit: argument 'initial': unknown keys {sorted(unknown)}; "
                             "expected lengthscale, outputscale, noise, mean")
        m = self._model
        terms = m.scaled_terms()
        # One term: 0.5 std of the coordinates; a sum: lengthscales spread from 0.1 to 1 std so the
        # terms start apart (identical starts would stay identical) and share the variance.
        spread = [0.5] if len(terms) == 1 else np.geomspace(0.1, 1.0, len(terms)).tolist()
        lengthscales = self._per_term(initial, "lengthscale", [f * self._x_scale for f in spread])
        outputscales = self._per_term(initial, "outputscale", [self._y_scale ** 2 / len(terms)] * len(terms))
        # float64 tensors: a Python float would pass through float32 on its way to the raw parameter.
        f64 = lambda v: torch.tensor(v, dtype=torch.float64, device=self.device)  # noqa: E731
        for term, ls, scale in zip(terms, lengthscales, outputscales):
            ls = np.broadcast_to(np.asarray(ls, dtype=np.float64), (2,))
            term.base_kernel.lengthscale = torch.from_numpy(ls / self._x_scale).reshape(1, 2).to(self.device)
            term.outputscale = f64(float(scale) / self._y_scale ** 2)
        m.mean_module.constant = f64((float(initial.get("mean", self._y_mean)) - self._y_mean) / self._y_scale)
        noise = float(initial.get("noise", 0.1 * self._y_scale ** 2)) / self._y_scale ** 2
        noise = max(noise, self.noise_floor * (1 + 1e-9))
        if not self._fixed:
            self._likelihood.noise = f64(noise)
        elif self._learn_extra:
            self._likelihood.second_noise = f64(noise)

    def _per_term(self, initial: dict, key: str, default: list) -> list:
        """``initial[key]`` as one value per kernel term (a sum takes a list, one term a value)."""
        if key not in initial:
            return default
        value = initial[key]
        if len(self._terms) == 1:
            return [value]
        if not isinstance(value, (list, tuple)) or len(value) != len(self._terms):
            raise ValueError(f"ExactGPSolver.fit: argument 'initial': {key!r} of kernel {self.kernel!r} "
                             f"expected a list of {len(self._terms)} values (one per term), got {value!r}")
        return list(value)

    def _optimise(self, X, Y) -> tuple[int, int, str | None]:
        """L-BFGS on the negative log marginal likelihood: (iterations, evaluations, a note when it
        had to stop early)."""
        model, likelihood = self._model, self._likelihood
        model.train()
        likelihood.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.LBFGS(params, lr=self.lr, max_iter=self.max_iter, max_eval=2 * self.max_iter,
                                      tolerance_grad=1e-9, tolerance_change=self.tol,
                                      line_search_fn="strong_wolfe")

        best = {"loss": math.inf, "values": None}

        def closure():
            optimiser.zero_grad()
            loss = -mll(model(X), Y)
            loss.backward()
            value = float(loss.detach())
            finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
            if math.isfinite(value) and finite and value < best["loss"]:
                best.update(loss=value, values=[p.detach().clone() for p in params])
            return loss

        # A line search can step where K + noise is numerically singular (a smooth field drives
        # the noise to its floor while a lengthscale grows without bound): GPyTorch then raises
        # on NaNs. The optimisation stops there and keeps the best hyperparameters it evaluated,
        # which every caller gets anyway (L-BFGS ends at its best point when nothing fails).
        note = None
        try:
            with gpytorch.settings.max_cholesky_size(MAX_EXACT_POINTS):
                optimiser.step(closure)
        except (NanError, NotPSDError) as error:
            if best["values"] is None:
                raise
            note = f"stopped at the best point evaluated: {type(error).__name__} in the line search"
        if best["values"] is not None:
            with torch.no_grad():
                for p, value in zip(params, best["values"]):
                    p.copy_(value)
        state = optimiser.state[optimiser._params[0]]
        model.eval()
        likelihood.eval()
        return int(state.get("n_iter", 0)), int(state.get("func_evals", 0)), note

    def _noise_variance_std(self, n: int, fixed) -> torch.Tensor:
        """Per-observation noise variance in standardised units (fixed part + learned part)."""
        total = torch.zeros(n, dtype=torch.float64, device=self.device)
        if fixed is not None:
            total = total + fixed
            if self._learn_extra:
                total = total + self._likelihood.second_noise.detach().reshape(())
        else:
            total = total + self._likelihood.noise.detach().reshape(())
        return total

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """k(a, b) in standardised units with the fitted hyperparameters, for a tile of rows."""
        k = None
        for kind, lengthscale, outputscale in self._terms_std:
            part = kernel_matrix(kind, a, b, lengthscale, outputscale)
            k = part if k is None else k.add_(part)
        return k

    def _cache(self) -> None:
        """Cholesky factor of K + noise over all observations, built in row tiles (bounded temporaries)."""
        with torch.no_grad():
            self._terms_std = [(kind, term.base_kernel.lengthscale.detach().reshape(2).clone(),
                                float(term.outputscale.detach()))
                               for kind, term in zip(self._terms, self._model.scaled_terms())]
            self._outputscale = sum(scale for _, _, scale in self._terms_std)  # k(x, x)
            self._mean_const = float(self._model.mean_module.constant.detach())
            n = self._X.shape[0]
            K = torch.empty((n, n), dtype=torch.float64, device=self.device)
            for start in range(0, n, self.tile_size):
                K[start:start + self.tile_size] = self._kernel(self._X[start:start + self.tile_size], self._X)
            K.diagonal().add_(self._noise_diag)
            L, info = torch.linalg.cholesky_ex(K)
            jitter = 1e-10 * float(K.diagonal().mean())
            while int(info) != 0 and jitter < 1e-2:
                K.diagonal().add_(jitter)
                L, info = torch.linalg.cholesky_ex(K)
                jitter *= 10
            del K
            if int(info) != 0:
                raise np.linalg.LinAlgError("ExactGPSolver: K + noise is not positive definite even with jitter")
            r = (self._Y - self._mean_const).unsqueeze(-1)
            self._L = L
            self._alpha = torch.cholesky_solve(r, L).squeeze(-1)
            self._resid = r.squeeze(-1)

    def _log_marginal_likelihood(self) -> float:
        """log p(y | hyperparameters) in original units (Jacobian of the value scaling included)."""
        n = self._X.shape[0]
        quad = float(self._resid @ self._alpha)
        logdet = 2.0 * float(torch.log(self._L.diagonal()).sum())
        return -0.5 * quad - 0.5 * logdet - 0.5 * n * math.log(2 * math.pi) - n * math.log(self._y_scale)

    def hyperparameters(self) -> dict:
        """Fitted hyperparameters in original units: lengthscale per axis, variances, mean."""
        self._require_fit("hyperparameters")
        m = self._model
        ls = [(t.base_kernel.lengthscale.detach().cpu().numpy().reshape(2) * self._x_scale).tolist()
              for t in m.scaled_terms()]
        scales = [float(t.outputscale.detach()) * self._y_scale ** 2 for t in m.scaled_terms()]
        one = len(self._terms) == 1
        out = {
            "lengthscale": ls[0] if one else ls,
            "outputscale": scales[0] if one else scales,
            "mean": self._y_mean + self._y_scale * float(m.mean_module.constant.detach()),
        }
        if not self._fixed:
            out["noise"] = float(self._likelihood.noise.detach().reshape(())) * self._y_scale ** 2
        elif self._learn_extra:
            out["noise"] = float(self._likelihood.second_noise.detach().reshape(())) * self._y_scale ** 2
        else:
            out["noise"] = 0.0
        return out

    def _require_fit(self, what: str) -> None:
        if self._model is None:
            raise RuntimeError(f"ExactGPSolver.{what}: call fit first")

    # --------------------------------------------------------------- prediction
    def predict(self, xq, *, include_noise: bool = False, return_std: bool = True,
                tile_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior mean and std at query points ``xq`` (m, 2), in tiles of ``tile_size`` rows.

        ``std`` is the latent field's predictive std; ``include_noise=True`` adds the learned
        homoscedastic noise (a new observation's spread; known per-observation noise of the
        training data does not transfer to new points). ``return_std=False`` skips the O(n^2)
        per-point variance and returns ``(mean, None)``.
        """
        self._require_fit("predict")
        xq, tile = _query("ExactGPSolver.predict", xq, tile_size, self.tile_size)
        m = xq.shape[0]
        mean = np.empty(m)
        std = np.empty(m) if return_std else None
        Xq = torch.from_numpy((xq - self._x_mean) / self._x_scale).to(self.device)
        extra = 0.0
        if include_noise and self._learn_extra:
            extra = self.hyperparameters()["noise"] / self._y_scale ** 2
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, m, tile):
                q = Xq[start:start + tile]
                Ksx = self._kernel(q, self._X)
                mean[start:start + tile] = (self._mean_const + Ksx @ self._alpha).cpu().numpy()
                if return_std:
                    v = torch.linalg.solve_triangular(self._L, Ksx.T, upper=False)
                    var = (self._outputscale - (v * v).sum(0)).clamp_min(0.0) + extra
                    std[start:start + tile] = var.sqrt().cpu().numpy()
        self.info["predict_seconds"] = time.perf_counter() - t0
        mean = self._y_mean + self._y_scale * mean
        if return_std:
            std = self._y_scale * std
        return mean, std

    def noise_variance(self) -> float:
        """Learned noise variance (the extra noise when ``y_noise_std`` was given; 0 without one)
        plus the mean of the given ``y_noise_std**2``, in the values' units squared."""
        self._require_fit("noise_variance")
        given = 0.0 if self._noise_std is None else float(np.mean(self._noise_std ** 2))
        return float(self.hyperparameters()["noise"]) + given

    def estimated_memory_bytes(self, n_observations: int) -> int:
        """Peak bytes of ``fit`` + ``predict`` for n observations (float64, 8 bytes a number).

        With ``n_f = min(n, fit_max_points)`` points in the optimisation, T kernel terms and
        query tiles of ``t = tile_size`` rows:

        * optimisation: GPyTorch's exact marginal likelihood and its gradient build the
          ``n_f x n_f`` distances and kernel of each term with the factors autograd keeps
          (about 2 matrices a term), ``K + noise``, its Cholesky factor, ``(K + noise)^-1`` for
          the gradient and the gradient's temporaries (about 10): ``(2 T + 10) n_f^2``;
        * the cached posterior: ``K`` written in row tiles (3 tile-sized temporaries a term),
          then ``K`` and its Cholesky factor ``L``: ``n^2 + max(n^2, 3 T t n)``;
        * prediction: ``L`` kept (``n^2``) and per tile ``K*x``, ``L^-1 Kx*`` and its square,
          with the kernel's temporaries: ``n^2 + (3 + T) t n``.

        The peak is the largest of the three plus the observations and their copies (``6 n``),
        times 8 bytes. Measured on CPU (``tests/models/test_field_solver_memory.py``), one
        Matern term: n = 800 and 2000, 65 and 389 MB (estimates 62 and 384 MB); n = 2000 with
        ``fit_max_points=300``, 98 MB (estimate 98 MB: prediction's tiles dominate).
        """
        n = check_n("ExactGPSolver.estimated_memory_bytes", n_observations)
        terms = len(self._terms)
        n_fit = n if self.fit_max_points is None else min(n, self.fit_max_points)
        t = self.tile_size
        optimise = (2 * terms + 10) * n_fit ** 2
        cache = n ** 2 + max(n ** 2, 3 * terms * t * n)
        predict = n ** 2 + (3 + terms) * t * n
        return int(8 * (max(optimise, cache, predict) + 6 * n))
