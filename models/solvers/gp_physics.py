"""Physics-informed Gaussian process for the linear PDE ``-laplace(u) = f`` (Poisson, or Darcy
with a known constant coefficient: ``-k laplace(u) = f``, i.e. ``-laplace(u) = f / k``) on 2-D points.

Why this design:

* **PDE as pseudo-observations.** The Laplacian is a linear operator, so a GP prior on ``u``
  makes ``(u, -laplace u)`` jointly Gaussian. The PDE enters as noisy observations
  ``-laplace u(x_c) = f(x_c) / k`` at collocation points ``x_c``; conditioning on them together
  with the sensor values is ordinary exact GP regression with a joint covariance matrix. No
  network training, the posterior is closed form, and its std accounts for the PDE.
* **Squared-exponential (RBF) kernel**, because it is infinitely differentiable, so the
  covariances of ``u`` with its Laplacian exist and are short closed forms (derived in
  ``rbf_blocks``; a Matern 5/2 prior has no fourth derivative at zero lag, so
  ``cov(laplace u, laplace u)`` would not exist). With ``d = a - b`` and per-axis lengthscales
  ``l``, ``k = s exp(-sum d_i^2 / (2 l_i^2))``,
  ``A_i = d_i^2 / l_i^4 - 1 / l_i^2`` and ``B_i = d_i^4 / l_i^8 - 6 d_i^2 / l_i^6 + 3 / l_i^4``:

  - ``cov(u(a), u(b)) = k``;
  - ``cov(u(a), -laplace u(b)) = -laplace_b k = -k (A_1 + A_2)`` (``d2k/db_i^2 = k A_i``);
  - ``cov(-laplace u(a), -laplace u(b)) = laplace_a laplace_b k = k (B_1 + B_2 + 2 A_1 A_2)``
    (``d4k/dd_i^4 = k B_i``, mixed ``d4k/dd_1^2 dd_2^2 = k A_1 A_2``).

  The tests check both identities against finite differences of the kernel.
* **Isotropic coordinate scaling.** Coordinates are centred on the domain and divided by ONE
  scale ``c`` (half the longer side), not one per axis as in ``ExactGPSolver``: a per-axis
  scaling would turn the Laplacian into an anisotropic operator. Values are centred and scaled
  by ``sigma`` (the std of the observations), so in standardised units the PDE reads
  ``-laplace_z v = (f / k) c^2 / sigma``. Every number handed back is in original units,
  including the log marginal likelihood (the Jacobian of both scalings is included).
* **Collocation points** are a scrambled Halton set in ``domain`` seeded by ``seed``: a
  low-discrepancy set like Sobol (even coverage, no clumps for a small number of points) but
  without Sobol's power-of-two size restriction. Same seed and domain, same points, so a
  re-fit with stored hyperparameters reproduces the posterior.
* **Hyperparameters** (lengthscale per axis, outputscale, data noise, constant mean) maximise
  the joint log marginal likelihood of sensors, boundary values and pseudo-observations, in
  float64 with L-BFGS (strong Wolfe), as in ``ExactGPSolver``. The pseudo-observation noise
  ``pde_noise`` is not learned: it states how exactly the PDE is believed to hold, a modelling
  choice (left free, the likelihood would trade physics against data noise).
* **Dirichlet boundary values** are ordinary observations of ``u`` on the domain's edges, with
  the learned homoscedastic noise.
* **Prediction in tiles** of query points against the cached Cholesky factor, so memory is
  O(N * tile_size) for N = sensors + boundary + collocation points, whatever the grid size.
* **The known coefficient ``k``** is a property of the model, so it is a constructor setting
  (a recipe's method parameter), not a ``fit`` argument.
* **Saved fits** (``FieldSolver`` interface, base.py). ``state()`` holds the four standardised
  hyperparameters as float64 arrays; ``restore`` rebuilds sensors, boundary, collocation points
  and the source there from the same inputs (checked by their sha256) and conditions with those
  hyperparameters: the original's posterior bit for bit, no optimisation.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from scipy.stats import qmc

from .base import FieldSolver, SolverState, check_n, check_settings, check_state
from .inputs import box as _box
from .inputs import digest as _digest
from .inputs import distinct as _distinct
from .inputs import fail as _fail
from .inputs import noise_stds as _noise_stds
from .inputs import points as _points
from .inputs import query as _query
from .inputs import values as _values

PDE_NOISE_RELATIVE = 1e-3
"""Default pseudo-observation noise std as a fraction of the RMS of ``f`` at the collocation points."""

HYPERPARAMETERS = ("lengthscale", "outputscale", "noise", "mean")

STATE_FORMAT = "inversa.physics_gp/1"
"""Tag in ``state()`` metadata; ``restore`` refuses anything else."""

RESTORE_SETTINGS = ("k", "n_collocation", "pde_noise", "seed", "n_boundary")
"""Settings that decide the conditioning set: a restoring solver must share them."""

FIT_RECORD = ("iterations", "function_evaluations", "fit_seconds", "seconds")
"""Entries of ``info`` that describe the optimisation: a restored fit reports the original's."""


def rbf_blocks(a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor, outputscale,
               which: str) -> torch.Tensor:
    """One covariance block of ``(u, -laplace u)`` under the RBF prior, rows ``a``, columns ``b``.

    ``which``: ``"uu"`` = cov(u(a), u(b)); ``"ul"`` = cov(u(a), -laplace u(b));
    ``"ll"`` = cov(-laplace u(a), -laplace u(b)). ``lengthscale`` (2,), ``outputscale`` the
    prior variance. Out-of-place operations throughout, so autograd can differentiate with
    respect to the hyperparameters (the closed forms are in the module docstring).
    """
    d1 = (a[:, :1] - b[:, 0]) / lengthscale[0]   # d_i / l_i
    d2 = (a[:, 1:] - b[:, 1]) / lengthscale[1]
    q1, q2 = d1 * d1, d2 * d2
    k = outputscale * torch.exp(-0.5 * (q1 + q2))
    if which == "uu":
        return k
    l1, l2 = lengthscale[0] ** 2, lengthscale[1] ** 2
    a1, a2 = (q1 - 1.0) / l1, (q2 - 1.0) / l2     # A_i = (d_i^2/l_i^2 - 1) / l_i^2
    if which == "ul":
        return -k * (a1 + a2)
    if which == "ll":
        b1 = (q1 * q1 - 6.0 * q1 + 3.0) / (l1 * l1)  # B_i = (d^4/l^4 - 6 d^2/l^2 + 3) / l_i^4
        b2 = (q2 * q2 - 6.0 * q2 + 3.0) / (l2 * l2)
        return k * (b1 + b2 + 2.0 * a1 * a2)
    raise ValueError(f"rbf_blocks: argument 'which': expected 'uu', 'ul' or 'll', got {which!r}")


def _cholesky(K: torch.Tensor, where: str) -> torch.Tensor:
    """Cholesky factor of ``K``, adding diagonal jitter (from 1e-10 of the mean diagonal) if needed."""
    L, info = torch.linalg.cholesky_ex(K)
    jitter = 1e-10 * float(K.diagonal().mean().detach())
    while int(info) != 0 and jitter < 1e-2:
        K = K + jitter * torch.eye(K.shape[0], dtype=K.dtype)
        L, info = torch.linalg.cholesky_ex(K)
        jitter *= 10
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"{where}: joint covariance is not positive definite even with jitter "
                                    "(raise pde_noise or reduce n_collocation)")
    return L


def _domain(where: str, domain, x: np.ndarray, boundary_points: np.ndarray | None) -> tuple[float, ...]:
    """``(xmin, xmax, ymin, ymax)`` of ``domain`` given as ``[[xmin, xmax], [ymin, ymax]]`` with
    positive width and height; default: the bounding box of the sensors and explicit boundary points."""
    if domain is None:
        pts = x if boundary_points is None else np.vstack([x, boundary_points])
        if pts.shape[0] == 0:
            _fail(where, "domain", "[[xmin, xmax], [ymin, ymax]] when there are no observations", None)
        domain = [[pts[:, 0].min(), pts[:, 0].max()], [pts[:, 1].min(), pts[:, 1].max()]]
    (x0, x1), (y0, y1) = _box(where, domain, 2)
    return float(x0), float(x1), float(y0), float(y1)


def perimeter_points(domain, n: int) -> np.ndarray:
    """``n`` points equally spaced by arc length along the edges of ``domain`` =
    ``[[xmin, xmax], [ymin, ymax]]``, from (xmin, ymin)."""
    (x0, x1), (y0, y1) = _box("perimeter_points", domain, 2)
    w, h = x1 - x0, y1 - y0
    t = np.arange(n) * (2 * (w + h) / n)
    out = np.empty((n, 2))
    for i, s in enumerate(t):
        if s < w:
            out[i] = (x0 + s, y0)
        elif s < w + h:
            out[i] = (x1, y0 + s - w)
        elif s < 2 * w + h:
            out[i] = (x1 - (s - w - h), y1)
        else:
            out[i] = (x0, y1 - (s - 2 * w - h))
    return out


def _evaluate(where: str, name: str, fn, pts: np.ndarray) -> np.ndarray:
    """A float, or a callable (m, 2) -> (m,), evaluated at ``pts``; finite (m,) values or a clear error."""
    m = pts.shape[0]
    if callable(fn):
        got = fn(pts.copy())
        try:
            vals = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError):
            _fail(where, name, "a callable returning a numeric (m,) array for (m, 2) points", type(got).__name__)
        if vals.shape != (m,):
            _fail(where, name, f"a callable returning shape ({m},) for points of shape ({m}, 2)", vals.shape)
    else:
        try:
            value = float(fn)
        except (TypeError, ValueError):
            _fail(where, name, "a number or a callable (m, 2) ndarray -> (m,) ndarray", type(fn).__name__)
        vals = np.full(m, value)
    if not np.all(np.isfinite(vals)):
        _fail(where, name, "finite values", f"{int(np.sum(~np.isfinite(vals)))} NaN or infinite values")
    return vals


def _explicit_boundary_points(where: str, boundary) -> np.ndarray:
    """The points of a ``(points (m, 2), values (m,))`` boundary."""
    if len(boundary) != 2:
        _fail(where, "boundary", "a number, a callable, or a pair (points (m, 2), values (m,))",
              f"a {type(boundary).__name__} of {len(boundary)}")
    return _points(where, "boundary[0]", boundary[0])


class PhysicsGPSolver(FieldSolver):
    """GP field solver constrained by ``-k laplace(u) = f``: ``fit``, then ``predict`` or ``predict_grid``.

    ``k`` is the known constant coefficient (> 0; 1 for Poisson).
    ``n_collocation`` pseudo-observation points (Halton, seeded by ``seed``) inside the domain;
    ``pde_noise`` the std of the PDE residual ``-k laplace(u) - f`` in the units of ``f``
    (``None``: ``PDE_NOISE_RELATIVE`` times the RMS of ``f`` at the collocation points, or of
    ``k sigma / c^2`` when ``f`` is zero); ``n_boundary`` points on the domain's edges when
    ``fit`` gets a boundary value or function. ``noise_floor``, ``max_iter``, ``lr``, ``tol``
    and ``tile_size`` mean what they mean for ``ExactGPSolver``.

    ``fit`` needs ``source`` (``uses_source``); a vector field is modelled one component at a
    time (``componentwise``); a known noise std is honoured and a homoscedastic noise learned
    on top of it.
    """

    name = "gp-physics"
    componentwise = True
    accepts_noise_std = True
    learns_noise = True

    def __init__(self, n_collocation: int = 256, pde_noise: float | None = None, seed: int = 0,
                 n_boundary: int = 64, noise_floor: float = 1e-6, max_iter: int = 100, lr: float = 1.0,
                 tol: float = 1e-9, tile_size: int = 1024, k: float = 1.0):
        where = "PhysicsGPSolver"
        try:
            k_value = float(k)
        except (TypeError, ValueError):
            _fail(where, "k", "a positive finite number (the constant coefficient)", repr(k))
        if isinstance(k, bool) or not (math.isfinite(k_value) and k_value > 0):
            _fail(where, "k", "a positive finite number (the constant coefficient)", k)
        for name, value, minimum in (("n_collocation", n_collocation, 1), ("n_boundary", n_boundary, 1),
                                     ("tile_size", tile_size, 1), ("max_iter", max_iter, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                _fail(where, name, f"an integer >= {minimum}", repr(value))
        if pde_noise is not None and not (math.isfinite(float(pde_noise)) and float(pde_noise) > 0):
            _fail(where, "pde_noise", "a positive finite std (units of f), or None", repr(pde_noise))
        if not noise_floor > 0:
            _fail(where, "noise_floor", "> 0", noise_floor)
        self.n_collocation = int(n_collocation)
        self.pde_noise = None if pde_noise is None else float(pde_noise)
        self.seed = int(seed)
        self.n_boundary = int(n_boundary)
        self.noise_floor = float(noise_floor)
        self.max_iter = int(max_iter)
        self.lr = float(lr)
        self.tol = float(tol)
        self.tile_size = int(tile_size)
        self.k = k_value
        self._L = None
        self.info: dict = {}

    @property
    def uses_source(self) -> bool:
        return True

    def _settings(self) -> dict:
        """The constructor settings as JSON-able values."""
        return {"n_collocation": self.n_collocation, "pde_noise": self.pde_noise, "seed": self.seed,
                "n_boundary": self.n_boundary, "noise_floor": self.noise_floor, "max_iter": self.max_iter,
                "lr": self.lr, "tol": self.tol, "tile_size": self.tile_size, "k": self.k}

    # ------------------------------------------------------------------ inputs
    def collocation_points(self, domain) -> np.ndarray:
        """The seeded Halton collocation points in ``domain`` = ``[[xmin, xmax], [ymin, ymax]]``."""
        x0, x1, y0, y1 = _domain("PhysicsGPSolver.collocation_points", domain, np.empty((0, 2)), None)
        unit = qmc.Halton(d=2, scramble=True, rng=self.seed).random(self.n_collocation)
        return qmc.scale(unit, [x0, y0], [x1, y1])

    def _boundary(self, where: str, boundary, domain) -> tuple[np.ndarray, np.ndarray]:
        """Boundary observations: (points, values) as given, or a value/function on the domain's edges."""
        if isinstance(boundary, (tuple, list)):
            pts = _explicit_boundary_points(where, boundary)
            return pts, _values(where, "boundary[1]", boundary[1], pts.shape[0])
        x0, x1, y0, y1 = domain
        pts = perimeter_points([[x0, x1], [y0, y1]], self.n_boundary)
        return pts, _evaluate(where, "boundary", boundary, pts)

    # ------------------------------------------------------------------ fitting
    def fit(self, x, y, y_noise_std=None, *, domain=None, boundary=None, source=None, optimise: bool = True,
            initial: dict | None = None) -> "PhysicsGPSolver":
        """Condition on sensors ``(x, y)``, boundary values and the PDE; optimise hyperparameters first
        unless ``optimise=False``.

        ``x`` (n, 2), ``y`` (n,); n = 0 (``x`` of shape (0, 2)) conditions on the physics alone
        (``y`` empty or ``None``).
        ``y_noise_std`` (a scalar or (n,)): known noise std of each sensor, to which the learned
        homoscedastic noise is added. ``source`` (required): ``f`` as a number or a callable
        (m, 2) ndarray -> (m,) ndarray. ``domain`` ``[[xmin, xmax], [ymin, ymax]]``, where the
        collocation points lie (default: bounding box of sensors and explicit boundary points).
        ``boundary``: ``None``, a number or callable giving ``u`` on the domain's edges
        (``n_boundary`` points), or ``(points (m, 2), values (m,))``. ``initial``: any of
        ``lengthscale`` (scalar or per axis), ``outputscale`` (variance), ``noise`` (variance) and
        ``mean`` in original units, as ``hyperparameters()`` returns them; with ``optimise=False``
        they are the ones used.
        """
        return self._fit("PhysicsGPSolver.fit", x, y, y_noise_std, domain=domain, boundary=boundary, source=source,
                         optimise=optimise, initial=initial)

    def restore(self, state: SolverState, x, y, y_noise_std=None, *, domain=None, boundary=None,
                source=None) -> "PhysicsGPSolver":
        """Condition on the same sensors, boundary and source as the saved fit (checked by their
        sha256) with the saved standardised hyperparameters: no optimisation, the same posterior."""
        where = "PhysicsGPSolver.restore"
        meta = check_state(where, state, STATE_FORMAT).meta
        config = meta.get("config") or {}
        current = self._settings()
        check_settings(where, {k: config.get(k) for k in RESTORE_SETTINGS}, {k: current[k] for k in RESTORE_SETTINGS})
        theta = {}
        for name, shape in (("lengthscale", (2,)), ("outputscale", ()), ("noise", ()), ("mean", ())):
            value = state.arrays.get(f"theta.{name}")
            value = None if value is None else np.asarray(value, dtype=np.float64)
            if value is None or value.shape != shape or not np.all(np.isfinite(value)):
                _fail(where, f"state.arrays['theta.{name}']", f"finite values of shape {shape}",
                      "missing" if value is None else f"shape {value.shape}")
            theta[name] = torch.from_numpy(value.copy())
        self._fit(where, x, y, y_noise_std, domain=domain, boundary=boundary, source=source, optimise=False,
                  initial=None, theta=theta, expect=(meta.get("fit") or {}).get("observations_sha256"))
        saved = meta.get("info") or {}
        self.info.update({k: copy.deepcopy(saved[k]) for k in FIT_RECORD if k in saved})
        return self

    def state(self) -> SolverState:
        """The standardised hyperparameters (``theta.lengthscale`` (2,), ``theta.outputscale``,
        ``theta.noise``, ``theta.mean``) as float64 arrays; metadata: format, settings, the
        conditioning data's sha256, hyperparameters in original units, ``info``."""
        self._require_fit("state")
        arrays = {f"theta.{k}": v.detach().numpy().copy() for k, v in self._theta.items()}
        meta = {
            "format": STATE_FORMAT,
            "config": self._settings(),
            "fit": {"n": self._n, "observations_sha256": self._digest},
            "hyperparameters": self.hyperparameters(),
            "info": copy.deepcopy(self.info),
        }
        return SolverState(meta, arrays)

    def _fit(self, where: str, x, y, y_noise_std, *, domain, boundary, source, optimise: bool,
             initial: dict | None, theta: dict | None = None, expect: str | None = None) -> "PhysicsGPSolver":
        t_start = time.perf_counter()
        k = self.k
        x, y, noise_std = self._observations(where, x, y, y_noise_std)
        if source is None:
            _fail(where, "source", "a number or a callable (m, 2) ndarray -> (m,) ndarray", None)
        given = _explicit_boundary_points(where, boundary) if isinstance(boundary, (tuple, list)) else None
        dom = _domain(where, domain, x, given)
        if boundary is None:
            xb, yb = np.empty((0, 2)), np.empty(0)
        else:
            xb, yb = self._boundary(where, boundary, dom)
        xc = self.collocation_points([[dom[0], dom[1]], [dom[2], dom[3]]])
        f = _evaluate(where, "source", source, xc)
        observed = _digest(x, y, noise_std, xb, yb, f, np.asarray(dom))
        if expect is not None and observed != expect:
            raise ValueError(f"{where}: arguments 'x', 'y', 'y_noise_std', 'domain', 'boundary', 'source': expected "
                             f"the inputs the state was fitted on (sha256 {expect[:12]}...), got other values "
                             f"(sha256 {observed[:12]}...)")
        self._n, self._digest, self._noise_std = int(x.shape[0]), observed, noise_std

        # Standardisation: one coordinate scale (keeps the Laplacian isotropic), one value scale.
        self._centre = np.array([(dom[0] + dom[1]) / 2, (dom[2] + dom[3]) / 2])
        self._c = max(dom[1] - dom[0], dom[3] - dom[2]) / 2
        known = np.concatenate([y, yb])
        self._mu = float(known.mean()) if known.size else 0.0
        spread = float(y.std()) if y.size >= 2 else 0.0
        rms_f = float(np.sqrt(np.mean((f / k) ** 2)))
        self._sigma = spread or (rms_f * self._c ** 2) or 1.0
        pde_noise = self.pde_noise
        if pde_noise is None:
            pde_noise = PDE_NOISE_RELATIVE * (float(np.sqrt(np.mean(f ** 2))) or k * self._sigma / self._c ** 2)
        to_std = self._c ** 2 / self._sigma          # f/k in original units -> standardised Laplacian
        self._pde_var = (pde_noise / k * to_std) ** 2

        n, nb, nc = x.shape[0], xb.shape[0], xc.shape[0]
        self._Xu = torch.from_numpy(self._std_points(np.vstack([x, xb])))
        self._Xc = torch.from_numpy(self._std_points(xc))
        self._target_u = torch.from_numpy((np.concatenate([y, yb]) - self._mu) / self._sigma)
        self._target_c = torch.from_numpy(f / k * to_std)
        fixed = np.zeros(n + nb)
        if noise_std is not None:
            fixed[:n] = (noise_std / self._sigma) ** 2
        self._fixed_u = torch.from_numpy(fixed)
        self._theta = self._initial(initial or {}) if theta is None else theta

        t0 = time.perf_counter()
        iterations = evaluations = 0
        if optimise:
            iterations, evaluations = self._optimise()
        fit_seconds = time.perf_counter() - t0
        self._cache()
        self.info = {
            "kernel": "rbf",
            "pde": "-k laplace(u) = f",
            "k": k,
            "n": n, "n_boundary": nb, "n_collocation": nc,
            "domain": [[dom[0], dom[1]], [dom[2], dom[3]]],
            "pde_noise": pde_noise,
            "hyperparameters": self.hyperparameters(),
            "log_marginal_likelihood": self._lml_original(n + nb, nc),
            "iterations": iterations,
            "function_evaluations": evaluations,
            "fit_seconds": fit_seconds,
            "seconds": time.perf_counter() - t_start,
            "inference": "exact joint GP of u and -laplace(u) (Cholesky, float64)",
            "collocation": f"scrambled Halton, seed {self.seed}",
        }
        return self

    def _observations(self, where, x, y, y_noise_std):
        try:
            empty = np.shape(x) == (0, 2)
        except ValueError:  # ragged sequences: let points() name the problem
            empty = False
        x = np.empty((0, 2)) if empty else _points(where, "x", x)
        n = x.shape[0]
        if n == 0 and y is not None and np.size(y) != 0:
            _fail(where, "y", "no values when x has no points (shape (0, 2))", np.shape(y))
        y = _values(where, "y", y, n) if n else np.empty(0)
        _distinct(where, "x", x)
        return x, y, _noise_stds(where, "y_noise_std", y_noise_std, n)

    def _std_points(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self._centre) / self._c

    def _initial(self, initial: dict) -> dict:
        """Standardised hyperparameters (float64 tensors) from ``initial`` in original units, or defaults."""
        unknown = set(initial) - set(HYPERPARAMETERS)
        if unknown:
            _fail("PhysicsGPSolver.fit", "initial", f"keys among {HYPERPARAMETERS}", sorted(unknown))
        s2 = self._sigma ** 2
        ls = np.broadcast_to(np.asarray(initial.get("lengthscale", 0.5 * self._c), dtype=np.float64), (2,))
        values = {"outputscale": float(initial.get("outputscale", s2)),
                  "noise": float(initial.get("noise", 1e-2 * s2))}
        for name, v in (("lengthscale", ls.min()), *values.items()):
            if not (math.isfinite(float(v)) and v > 0):
                _fail("PhysicsGPSolver.fit", f"initial[{name!r}]", "a positive finite number", v)
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return {
            "lengthscale": torch.from_numpy(ls / self._c),
            "outputscale": f64(values["outputscale"] / s2),
            "noise": f64(max(values["noise"] / s2, self.noise_floor * (1 + 1e-9))),
            "mean": f64((float(initial.get("mean", self._mu)) - self._mu) / self._sigma),
        }

    def _joint(self, theta: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint covariance of [sensors + boundary, collocation] with noise, and the residual vector."""
        ls, s = theta["lengthscale"], theta["outputscale"]
        Kuu = rbf_blocks(self._Xu, self._Xu, ls, s, "uu") + torch.diag(self._fixed_u + theta["noise"])
        Kul = rbf_blocks(self._Xu, self._Xc, ls, s, "ul")
        Kll = rbf_blocks(self._Xc, self._Xc, ls, s, "ll")
        Kll = Kll + self._pde_var * torch.eye(Kll.shape[0], dtype=torch.float64)
        K = torch.cat([torch.cat([Kuu, Kul], 1), torch.cat([Kul.T, Kll], 1)], 0)
        r = torch.cat([self._target_u - theta["mean"], self._target_c])
        return K, r

    @staticmethod
    def _lml_std(L: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        z = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * (z @ z) - torch.log(L.diagonal()).sum() - 0.5 * r.shape[0] * math.log(2 * math.pi)

    def _optimise(self) -> tuple[int, int]:
        t = self._theta
        floor = self.noise_floor
        raw = torch.cat([torch.log(t["lengthscale"]), torch.log(t["outputscale"]).reshape(1),
                         torch.log(t["noise"] - floor).reshape(1), t["mean"].reshape(1)]).clone().requires_grad_(True)

        def unpack(p):
            return {"lengthscale": torch.exp(p[:2]), "outputscale": torch.exp(p[2]),
                    "noise": floor + torch.exp(p[3]), "mean": p[4]}

        optimiser = torch.optim.LBFGS([raw], lr=self.lr, max_iter=self.max_iter, max_eval=2 * self.max_iter,
                                      tolerance_grad=1e-9, tolerance_change=self.tol, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            K, r = self._joint(unpack(raw))
            loss = -self._lml_std(_cholesky(K, "PhysicsGPSolver.fit"), r) / r.shape[0]
            loss.backward()
            return loss

        optimiser.step(closure)
        state = optimiser.state[raw]
        self._theta = {name: v.detach().clone() for name, v in unpack(raw).items()}
        return int(state.get("n_iter", 0)), int(state.get("func_evals", 0))

    def _cache(self) -> None:
        with torch.no_grad():
            K, r = self._joint(self._theta)
            self._L = _cholesky(K, "PhysicsGPSolver.fit")
            self._alpha = torch.cholesky_solve(r.unsqueeze(-1), self._L).squeeze(-1)
            self._lml_value = float(self._lml_std(self._L, r))

    def _lml_original(self, n_u: int, n_c: int) -> float:
        """log p in original units: Jacobians sigma per value, sigma / c^2 per pseudo-observation of f/k."""
        return self._lml_value - n_u * math.log(self._sigma) - n_c * math.log(self._sigma / self._c ** 2)

    def hyperparameters(self) -> dict:
        """Hyperparameters in original units, usable as ``fit(..., initial=..., optimise=False)``."""
        self._require_fit("hyperparameters")
        t, s2 = self._theta, self._sigma ** 2
        return {
            "lengthscale": (t["lengthscale"].numpy() * self._c).tolist(),
            "outputscale": float(t["outputscale"]) * s2,
            "noise": float(t["noise"]) * s2,
            "mean": self._mu + self._sigma * float(t["mean"]),
        }

    def _require_fit(self, what: str) -> None:
        if self._L is None:
            raise RuntimeError(f"PhysicsGPSolver.{what}: call fit first")

    # --------------------------------------------------------------- prediction
    def predict(self, xq, *, include_noise: bool = False, return_std: bool = True,
                tile_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior mean and std of ``u`` at ``xq`` (m, 2), in tiles of ``tile_size`` rows.

        ``std`` is the latent field's; ``include_noise=True`` adds the learned noise variance.
        """
        self._require_fit("predict")
        xq, tile = _query("PhysicsGPSolver.predict", xq, tile_size, self.tile_size)
        t = self._theta
        ls, s = t["lengthscale"], float(t["outputscale"])
        extra = float(t["noise"]) if include_noise else 0.0
        Xq = torch.from_numpy(self._std_points(xq))
        m = xq.shape[0]
        mean = np.empty(m)
        std = np.empty(m) if return_std else None
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, m, tile):
                q = Xq[start:start + tile]
                Kq = torch.cat([rbf_blocks(q, self._Xu, ls, s, "uu"), rbf_blocks(q, self._Xc, ls, s, "ul")], 1)
                mean[start:start + tile] = (float(t["mean"]) + Kq @ self._alpha).numpy()
                if return_std:
                    v = torch.linalg.solve_triangular(self._L, Kq.T, upper=False)
                    std[start:start + tile] = ((s - (v * v).sum(0)).clamp_min(0.0) + extra).sqrt().numpy()
        self.info["predict_seconds"] = time.perf_counter() - t0
        mean = self._mu + self._sigma * mean
        if return_std:
            std = self._sigma * std
        return mean, std

    def noise_variance(self) -> float:
        """Learned noise variance plus the mean of the given ``y_noise_std**2``, in the values'
        units squared."""
        self._require_fit("noise_variance")
        given = 0.0 if self._noise_std is None or self._noise_std.size == 0 else float(np.mean(self._noise_std ** 2))
        return float(self.hyperparameters()["noise"]) + given

    def estimated_memory_bytes(self, n_observations: int) -> int:
        """Peak bytes of ``fit`` + ``predict`` for n sensors (float64, 8 bytes a number).

        The joint system has ``N = n + n_boundary + n_collocation`` rows (boundary points counted
        as if a boundary value were given, the larger case). Each likelihood evaluation of the
        optimisation builds the three covariance blocks with the temporaries autograd keeps for
        the gradient, the concatenated ``N x N`` matrix (and its row blocks), its Cholesky factor
        and the gradient's buffers, about ``12 N^2`` numbers; the Laplacian-Laplacian block keeps
        about ten more collocation-sized matrices of its own (distances, their squares, the
        fourth-derivative factors): ``12 n_collocation^2``. Prediction keeps the factor
        (``N^2``) and per tile of ``t = tile_size`` query points builds the cross-covariances
        with their temporaries and ``L^-1 K*``: about ``7 t N``. The peak is the larger phase.
        Measured on CPU (``tests/models/test_field_solver_memory.py``): 600 sensors with 256
        collocation points 85 MB (estimate 88 MB); 100 sensors with 1000 points 209 MB (226 MB).
        """
        n = check_n("PhysicsGPSolver.estimated_memory_bytes", n_observations)
        N = n + self.n_boundary + self.n_collocation
        fit = 12 * N * N + 12 * self.n_collocation ** 2
        predict = N * N + 7 * self.tile_size * N
        return int(8 * (max(fit, predict) + 6 * N))
