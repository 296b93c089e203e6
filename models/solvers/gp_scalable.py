"""Sparse variational GP regression of a 2-D field from hundreds of thousands of scattered points.

Why this method (one scalable method, chosen over the alternatives):

* **Inducing points, not structured kernels.** SKI/KISS-GP needs a grid of the data extent and
  CG solves whose accuracy is not bounded; random Fourier features give a poor variance far
  from the data. A sparse GP with ``m`` inducing points (Titsias 2009, Hensman et al. 2013) is
  a proper GP posterior under an approximation whose quality is measured by one number (the
  ELBO) and improves monotonically with ``m``; with ``m = n`` and the inducing points on the
  data it *is* the exact posterior (the tests check this).
* **Two stages.** (1) Hyperparameters and inducing locations maximise the uncollapsed SVGP ELBO
  (GPyTorch ``ApproximateGP`` + ``VariationalStrategy`` with learned inducing locations,
  ``VariationalELBO``) over seeded minibatches: memory O(batch*m + m^2), time
  O(batch*m^2 + m^3) per step, independent of n. q(u) is a ``NaturalVariationalDistribution``
  stepped by natural gradients (``gpytorch.optim.NGD``, Salimbeni et al. 2018) while Adam moves
  the hyperparameters and inducing locations: with a Cholesky-parametrised q(u) under Adam
  alone, q(u) lagged so far behind that the learned noise variance was still 2.5-5.6x the true
  one after 250 steps (5,000 points, measured while writing the tests), inflating every std.
  Inducing locations start at k-means centres of a seeded subsample. (2) For those
  hyperparameters and inducing points the optimal Gaussian q(u) is known in closed form
  (Titsias' collapsed bound): one streamed pass accumulates ``Kuf Kfu`` (m x m) and
  ``Kuf (y - mean)`` (m) over batches (O(n*m^2) time, O(batch*m + m^2) memory). Prediction uses
  that optimum rather than the q(u) the stochastic steps reached: it is the best q(u) for the
  final hyperparameters, free of minibatch noise, and exact when the inducing points are the
  data (the tests check this against ``ExactGPSolver``).
* **Same conventions as ``ExactGPSolver``.** Per-axis standardised coordinates, unit-std
  values, the same kernels (ARD Matern 5/2, Matern 3/2 or RBF, constant mean, homoscedastic Gaussian noise
  with a floor), hyperparameters reported in original units, ``initial``/``optimise=False`` to
  fix them, float64 throughout, prediction in tiles of ``tile_size`` query points
  (O(tile*m + m^2) memory, O(m^2) per point for the variance).
* **Saved fits** (``FieldSolver`` interface, base.py). ``state()`` holds the raw hyperparameters
  and the inducing locations (standardised, as fitted) as float64 arrays; ``restore`` rebuilds
  the model from them and recomputes the closed-form q(u) over the same observations, so the
  posterior is the original's without a training step.
"""

from __future__ import annotations

import copy
import math
import time

import gpytorch
import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from .base import FieldSolver, SolverState, check_n, check_settings, check_state
from .gp_common import KERNELS, Standardisation, kernel_matrix, load_raw_parameters, scaled_kernel
from .inputs import digest as _digest
from .inputs import fail as _fail
from .inputs import points as _points
from .inputs import query as _query
from .inputs import values as _values

KMEANS_SAMPLE = 20_000
"""k-means for the initial inducing locations runs on at most this many (seeded) points."""

STATE_FORMAT = "inversa.sparse_gp/1"
"""Tag in ``state()`` metadata; ``restore`` refuses anything else."""

RESTORE_SETTINGS = ("kernel", "noise_floor", "jitter")
"""Settings that change the restored posterior for the same saved parameters."""

FIT_RECORD = ("elbo_per_point_last_batch", "steps", "fit_seconds")
"""Entries of ``info`` that describe the training: a restored fit reports the original's."""


class _SVGPModel(gpytorch.models.ApproximateGP):
    """Constant mean + ScaleKernel(ARD Matern 5/2, Matern 3/2 or RBF), variational over inducing values u."""

    def __init__(self, inducing: torch.Tensor, kernel: str, learn_inducing: bool):
        distribution = gpytorch.variational.NaturalVariationalDistribution(inducing.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing, distribution, learn_inducing_locations=learn_inducing)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = scaled_kernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SparseGPSolver(FieldSolver):
    """Sparse variational GP field solver: ``fit``, then ``predict`` or ``predict_grid``.

    ``inducing`` is the number of inducing points (k-means initialised, then learned) or an
    ``(m, 2)`` array of locations in original units (kept fixed unless ``learn_inducing``); a
    recipe gives a list of ``[x, y]`` pairs, Python callers may pass a numpy array. Its
    annotation ``int | list[list[float]]`` is what a recipe validator can check (pydantic has
    no numpy type); the constructor converts either to what it needs.
    Training runs ``max(epochs * ceil(n / batch_size), min_steps)`` steps (Adam of size ``lr``
    for hyperparameters and inducing locations, natural gradient of size ``ngd_lr`` for q(u));
    ``seed`` fixes the k-means subsample and initialisation and the minibatch order.
    ``noise_floor`` is the smallest noise variance in standardised units, ``jitter`` is added to
    the diagonal of Kuu (standardised units) for its Cholesky factor.

    It learns one homoscedastic noise and refuses a known ``y_noise_std`` (``accepts_noise_std``
    is False); ``domain``, ``boundary`` and ``source`` are accepted and ignored.
    """

    name = "sparse-gp"
    componentwise = True
    accepts_noise_std = False
    learns_noise = True

    def __init__(self, kernel: str = "matern52", inducing: int | list[list[float]] = 512, batch_size: int = 4096,
                 epochs: int = 2,
                 lr: float = 0.02, seed: int = 0, tile_size: int = 4096, min_steps: int = 300,
                 noise_floor: float = 1e-6, jitter: float = 1e-8, learn_inducing: bool | None = None,
                 ngd_lr: float = 0.1):
        where = "SparseGPSolver"
        if kernel not in KERNELS:
            _fail(where, "kernel", f"one of {KERNELS}", repr(kernel))
        if np.ndim(inducing) == 0:
            if int(inducing) < 1:
                _fail(where, "inducing", "a number of inducing points >= 1 or an (m, 2) array", inducing)
            self._inducing_init = None
            self.inducing = int(inducing)
        else:
            self._inducing_init = _points(where, "inducing", inducing)
            self.inducing = self._inducing_init.shape[0]
        for name, value in (("batch_size", batch_size), ("tile_size", tile_size)):
            if int(value) < 1:
                _fail(where, name, ">= 1", value)
        for name, value in (("epochs", epochs), ("min_steps", min_steps)):
            if int(value) < 0:
                _fail(where, name, ">= 0", value)
        for name, value in (("lr", lr), ("ngd_lr", ngd_lr), ("noise_floor", noise_floor), ("jitter", jitter)):
            if not float(value) > 0:
                _fail(where, name, "> 0", value)
        self.kernel = kernel
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.min_steps = int(min_steps)
        self.lr = float(lr)
        self.ngd_lr = float(ngd_lr)
        self.seed = int(seed)
        self.tile_size = int(tile_size)
        self.noise_floor = float(noise_floor)
        self.jitter = float(jitter)
        self.learn_inducing = self._inducing_init is None if learn_inducing is None else bool(learn_inducing)
        self._model = None
        self.info: dict = {}

    def _settings(self) -> dict:
        """The constructor settings as JSON-able values (given inducing locations by their count)."""
        return {"kernel": self.kernel, "inducing": self.inducing, "batch_size": self.batch_size,
                "epochs": self.epochs, "lr": self.lr, "seed": self.seed, "tile_size": self.tile_size,
                "min_steps": self.min_steps, "noise_floor": self.noise_floor, "jitter": self.jitter,
                "learn_inducing": self.learn_inducing, "ngd_lr": self.ngd_lr,
                "inducing_given": self._inducing_init is not None}

    # ------------------------------------------------------------------ fitting
    def fit(self, x, y, y_noise_std=None, *, domain=None, boundary=None, source=None, optimise: bool = True,
            initial: dict | None = None) -> "SparseGPSolver":
        """Standardise, train hyperparameters and inducing points (unless ``optimise=False``), then
        set q(u) to its closed-form optimum in one streamed pass over the data.

        ``y_noise_std`` must be None: the noise is learned (``accepts_noise_std`` is False).
        ``initial`` sets hyperparameters in original units (``lengthscale`` scalar or per axis,
        ``outputscale`` and ``noise`` variances, ``mean``), as in ``ExactGPSolver.fit``.
        ``domain``, ``boundary``, ``source``: ignored.
        """
        return self._fit("SparseGPSolver.fit", x, y, y_noise_std, optimise=optimise, initial=initial)

    def restore(self, state: SolverState, x, y, y_noise_std=None, *, domain=None, boundary=None,
                source=None) -> "SparseGPSolver":
        """Rebuild the saved fit on the same observations (checked by their sha256): the saved raw
        hyperparameters and inducing locations, then the closed-form q(u); no training."""
        where = "SparseGPSolver.restore"
        meta = check_state(where, state, STATE_FORMAT).meta
        config = meta.get("config") or {}
        current = self._settings()
        check_settings(where, {k: config.get(k) for k in RESTORE_SETTINGS}, {k: current[k] for k in RESTORE_SETTINGS})
        if "inducing_std" not in state.arrays:
            _fail(where, "state", "arrays with 'inducing_std' (the inducing locations)", sorted(state.arrays))
        raw = {k[len("raw."):]: v for k, v in state.arrays.items() if k.startswith("raw.")}
        self._fit(where, x, y, y_noise_std, optimise=False, initial=None, raw=raw,
                  inducing_std=np.asarray(state.arrays["inducing_std"], dtype=np.float64),
                  expect=(meta.get("fit") or {}).get("observations_sha256"))
        saved = meta.get("info") or {}
        self.info.update({k: copy.deepcopy(saved[k]) for k in FIT_RECORD if k in saved})
        return self

    def state(self) -> SolverState:
        """Raw hyperparameters (``raw.<name>``) and inducing locations in standardised units
        (``inducing_std``, (m, 2)) as float64 arrays; metadata: format, settings, the observations'
        sha256, hyperparameters and inducing locations' count, ``info``."""
        self._require_fit("state")
        arrays = {f"raw.{k}": v.detach().numpy().copy() for k, v in self._hyper_parameters()}
        arrays["inducing_std"] = self._Z.numpy().copy()
        meta = {
            "format": STATE_FORMAT,
            "config": self._settings(),
            "fit": {"n": self._n, "inducing": int(self._Z.shape[0]), "observations_sha256": self._digest},
            "hyperparameters": self.hyperparameters(),
            "info": copy.deepcopy(self.info),
        }
        return SolverState(meta, arrays)

    def _hyper_parameters(self) -> list:
        """(name, parameter) of the kernel, mean and likelihood: what ``state()`` saves besides Z.

        The variational parameters are not saved: prediction uses the closed-form q(u)."""
        model = [(f"model.{k}", v) for k, v in self._model.named_parameters()
                 if not k.startswith("variational_strategy.")]
        return model + [(f"likelihood.{k}", v) for k, v in self._likelihood.named_parameters()]

    def _fit(self, where: str, x, y, y_noise_std, *, optimise: bool, initial: dict | None, raw: dict | None = None,
             inducing_std: np.ndarray | None = None, expect: str | None = None) -> "SparseGPSolver":
        if y_noise_std is not None:
            _fail(where, "y_noise_std", "None: the sparse GP learns one homoscedastic noise (accepts_noise_std is "
                  "False); use method 'gp' for known per-observation noise", type(y_noise_std).__name__)
        x = _points(where, "x", x)
        n = x.shape[0]
        y = _values(where, "y", y, n)
        if n < 3:
            _fail(where, "x", "at least 3 observations", n)
        observed = _digest(x, y)
        if expect is not None and observed != expect:
            raise ValueError(f"{where}: arguments 'x', 'y': expected the observations the state was fitted on "
                             f"(sha256 {expect[:12]}...), got other values (sha256 {observed[:12]}...)")
        self._n, self._digest = n, observed
        scaling = Standardisation.of(where, x, y)
        self._x_mean, self._x_scale, self._y_mean, self._y_scale = (
            scaling.x_mean, scaling.x_scale, scaling.y_mean, scaling.y_scale)
        X = torch.from_numpy((x - self._x_mean) / self._x_scale)
        Y = torch.from_numpy((y - self._y_mean) / self._y_scale)

        rng = np.random.default_rng(self.seed)
        if inducing_std is not None:
            if inducing_std.ndim != 2 or inducing_std.shape[1] != 2 or not np.all(np.isfinite(inducing_std)):
                _fail(where, "state.arrays['inducing_std']", "finite (m, 2) inducing locations", inducing_std.shape)
            Z = inducing_std
        elif self._inducing_init is not None:
            Z = (self._inducing_init - self._x_mean) / self._x_scale
        else:
            if self.inducing > n:
                _fail(where, "x", f"at least as many observations as inducing points ({self.inducing})", n)
            sample = X.numpy()
            if n > KMEANS_SAMPLE:
                sample = sample[np.sort(rng.choice(n, KMEANS_SAMPLE, replace=False))]
            Z, _ = kmeans2(sample, self.inducing, iter=10, minit="++", seed=rng)
        Z = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64))

        model = _SVGPModel(Z, self.kernel, self.learn_inducing).double()
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(self.noise_floor)).double()
        self._model, self._likelihood = model, likelihood
        self._set_initial(initial or {})
        if raw is not None:
            self._load_raw(where, raw)

        t0 = time.perf_counter()
        # GPyTorch perturbs the initial variational mean (on the first training call) with the
        # global torch generator: seed it inside a fork, so results depend on ``seed`` alone and
        # the caller's generator state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            steps, elbo = (self._train(X, Y, n) if optimise else (0, None))
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._optimal_q(X, Y)
        self.info = {
            "kernel": self.kernel,
            "n": n,
            "inducing": self.inducing,
            "hyperparameters": self.hyperparameters(),
            "elbo_per_point_last_batch": elbo,
            "collapsed_elbo": self._collapsed_elbo,
            "steps": steps,
            "batch_size": self.batch_size,
            "fit_seconds": train_seconds,
            "optimal_q_seconds": time.perf_counter() - t0,
            "inference": "sparse variational GP (inducing points; hyperparameters and inducing locations "
                         "by minibatch Adam + NGD on the SVGP ELBO, q(u) at its closed-form optimum), float64",
            "variance": "latent variance of the sparse posterior",
            "x_mean": self._x_mean.tolist(), "x_scale": self._x_scale.tolist(),
            "y_mean": self._y_mean, "y_scale": self._y_scale,
        }
        return self

    def _load_raw(self, where: str, raw: dict) -> None:
        """Set the kernel, mean and likelihood parameters to saved raw values."""
        load_raw_parameters(where, dict(self._hyper_parameters()), raw, "a state of this kernel")

    def _set_initial(self, initial: dict) -> None:
        unknown = set(initial) - {"lengthscale", "outputscale", "noise", "mean"}
        if unknown:
            _fail("SparseGPSolver.fit", "initial", "keys among lengthscale, outputscale, noise, mean",
                  f"unknown keys {sorted(unknown)}")
        m = self._model
        ls = np.broadcast_to(np.asarray(initial.get("lengthscale", 0.5 * self._x_scale), dtype=np.float64), (2,))
        m.covar_module.base_kernel.lengthscale = torch.from_numpy(ls / self._x_scale).reshape(1, 2)
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        m.covar_module.outputscale = f64(float(initial.get("outputscale", self._y_scale ** 2)) / self._y_scale ** 2)
        m.mean_module.constant = f64((float(initial.get("mean", self._y_mean)) - self._y_mean) / self._y_scale)
        noise = float(initial.get("noise", 0.1 * self._y_scale ** 2)) / self._y_scale ** 2
        self._likelihood.noise = f64(max(noise, self.noise_floor * (1 + 1e-9)))

    def _train(self, X: torch.Tensor, Y: torch.Tensor, n: int) -> tuple[int, float]:
        model, likelihood = self._model, self._likelihood
        model.train()
        likelihood.train()
        elbo = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=n)
        variational = list(model.variational_parameters())
        ids = {id(p) for p in variational}
        hyper = [p for p in list(model.parameters()) + list(likelihood.parameters()) if id(p) not in ids]
        natural = gpytorch.optim.NGD(variational, num_data=n, lr=self.ngd_lr)
        optimiser = torch.optim.Adam(hyper, lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        batch = min(self.batch_size, n)
        per_epoch = math.ceil(n / batch)
        steps = max(self.epochs * per_epoch, self.min_steps)
        done, last = 0, float("nan")
        while done < steps:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                optimiser.zero_grad()
                natural.zero_grad()
                loss = -elbo(model(X[idx]), Y[idx])
                loss.backward()
                natural.step()
                optimiser.step()
                last = -float(loss.detach())
                done += 1
                if done >= steps:
                    break
        model.eval()
        likelihood.eval()
        return done, last

    def _optimal_q(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Closed-form optimal q(u) (Titsias) for the current hyperparameters and inducing points.

        Whitened form: A = Luu^-1 Kuf / sigma, B = I + A A^T = LB LB^T, c = LB^-1 A (y - mean) / sigma.
        A A^T and A r are accumulated over batches, so memory stays O(batch*m + m^2).
        """
        with torch.no_grad():
            m = self._model
            self._ls = m.covar_module.base_kernel.lengthscale.detach().reshape(2).clone()
            self._os = float(m.covar_module.outputscale.detach())
            self._mean_const = float(m.mean_module.constant.detach())
            self._noise = float(self._likelihood.noise.detach().reshape(()))
            Z = m.variational_strategy.inducing_points.detach().clone()
            self._Z = Z
            mz = Z.shape[0]
            Kuu = kernel_matrix(self.kernel, Z, Z, self._ls, self._os)
            Kuu.diagonal().add_(self.jitter * self._os)
            self._Luu = torch.linalg.cholesky(Kuu)
            KK = torch.zeros((mz, mz), dtype=torch.float64)
            Kr = torch.zeros(mz, dtype=torch.float64)
            n = X.shape[0]
            quad_r = 0.0
            for start in range(0, n, self.batch_size):
                Kuf = kernel_matrix(self.kernel, Z, X[start:start + self.batch_size], self._ls, self._os)
                r = Y[start:start + self.batch_size] - self._mean_const
                KK.addmm_(Kuf, Kuf.T)
                Kr.addmv_(Kuf, r)
                quad_r += float(r @ r)
            s2 = self._noise
            Linv_KK = torch.linalg.solve_triangular(self._Luu, KK, upper=False)
            AAT = torch.linalg.solve_triangular(self._Luu, Linv_KK.T, upper=False) / s2
            B = AAT + torch.eye(mz, dtype=torch.float64)
            self._LB = torch.linalg.cholesky(B)
            Ar = torch.linalg.solve_triangular(self._Luu, Kr.unsqueeze(-1), upper=False) / math.sqrt(s2)
            c = torch.linalg.solve_triangular(self._LB, Ar, upper=False)
            # Prediction weights: mean(x*) = m + K*u Luu^-T LB^-T c / sigma.
            w = torch.linalg.solve_triangular(self._LB.T, c, upper=True) / math.sqrt(s2)
            self._w = torch.linalg.solve_triangular(self._Luu.T, w, upper=True).squeeze(-1)
            # Collapsed bound (standardised units) with the trace term: diagnostics for the report.
            trace = n * self._os - float(AAT.diagonal().sum()) * s2
            logdet = 2.0 * float(torch.log(self._LB.diagonal()).sum()) + n * math.log(s2)
            quad = (quad_r - float(c.square().sum())) / s2
            self._collapsed_elbo = (-0.5 * (quad + logdet + n * math.log(2 * math.pi)) - 0.5 * trace / s2
                                    - n * math.log(self._y_scale))

    def hyperparameters(self) -> dict:
        """Fitted hyperparameters in original units: lengthscale per axis, variances, mean."""
        self._require_fit("hyperparameters")
        m = self._model
        ls = m.covar_module.base_kernel.lengthscale.detach().numpy().reshape(2) * self._x_scale
        return {
            "lengthscale": ls.tolist(),
            "outputscale": float(m.covar_module.outputscale.detach()) * self._y_scale ** 2,
            "mean": self._y_mean + self._y_scale * float(m.mean_module.constant.detach()),
            "noise": float(self._likelihood.noise.detach().reshape(())) * self._y_scale ** 2,
        }

    def inducing_points(self) -> np.ndarray:
        """Inducing locations (m, 2) in original units, as fitted."""
        self._require_fit("inducing_points")
        return self._Z.numpy() * self._x_scale + self._x_mean

    def _require_fit(self, what: str) -> None:
        if self._model is None:
            raise RuntimeError(f"SparseGPSolver.{what}: call fit first")

    # --------------------------------------------------------------- prediction
    def predict(self, xq, *, include_noise: bool = False, return_std: bool = True,
                tile_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior mean and std at ``xq`` (q, 2), in tiles: latent std, plus the learned noise
        when ``include_noise``; ``return_std=False`` returns ``(mean, None)`` at O(m) per point."""
        self._require_fit("predict")
        xq, tile = _query("SparseGPSolver.predict", xq, tile_size, self.tile_size)
        q = xq.shape[0]
        mean = np.empty(q)
        std = np.empty(q) if return_std else None
        Xq = torch.from_numpy((xq - self._x_mean) / self._x_scale)
        extra = self._noise if include_noise else 0.0
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, q, tile):
                Kus = kernel_matrix(self.kernel, self._Z, Xq[start:start + tile], self._ls, self._os)
                mean[start:start + tile] = (self._mean_const + Kus.T @ self._w).numpy()
                if return_std:
                    v = torch.linalg.solve_triangular(self._Luu, Kus, upper=False)
                    u = torch.linalg.solve_triangular(self._LB, v, upper=False)
                    var = (self._os - v.square().sum(0) + u.square().sum(0)).clamp_min(0.0) + extra
                    std[start:start + tile] = var.sqrt().numpy()
        self.info["predict_seconds"] = time.perf_counter() - t0
        mean = self._y_mean + self._y_scale * mean
        if return_std:
            std = self._y_scale * std
        return mean, std

    def noise_variance(self) -> float:
        """The learned homoscedastic noise variance, in the values' units squared."""
        self._require_fit("noise_variance")
        return float(self.hyperparameters()["noise"])

    def estimated_memory_bytes(self, n_observations: int) -> int:
        """Peak bytes of ``fit`` + ``predict`` for n observations (float64, 8 bytes a number).

        With ``m`` inducing points (at most n when they are k-means centres), minibatches of
        ``b = min(batch_size, n)`` and prediction tiles of ``t = tile_size``:

        * the data and its standardised copies: ``8 * 8 n``, and the k-means sample
          (``min(n, KMEANS_SAMPLE)`` points, a few copies): ``8 * 8 min(n, 20000)``;
        * a training step (GPyTorch SVGP, natural gradients): ``Kuf`` of the batch with the
          kernel's temporaries and what autograd keeps, about ``12 m b``, and the m x m
          matrices of q(u), Kuu, their Cholesky factors, natural-gradient buffers and
          gradients, about ``16 m^2``;
        * the closed-form q(u): one batch's ``Kuf`` (with its kernel temporaries, ``3 m b``) and
          six m x m matrices;
        * prediction: ``Kus``, ``Luu^-1 Kus``, ``LB^-1`` of that and their squares, about
          ``7 m t``, with the m x m factors kept (``4 m^2``).

        The peak is the data plus the largest of the three phases.
        """
        n = check_n("SparseGPSolver.estimated_memory_bytes", n_observations)
        m = self.inducing if self._inducing_init is not None else min(self.inducing, max(n, 1))
        b = min(self.batch_size, n)
        t = self.tile_size
        data = 8 * n + 8 * min(n, KMEANS_SAMPLE)
        train = 12 * m * b + 16 * m * m
        optimal_q = 3 * m * b + 6 * m * m
        predict = 7 * m * t + 4 * m * m
        return int(8 * (data + max(train, optimal_q, predict)))
