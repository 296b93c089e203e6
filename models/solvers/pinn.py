"""Physics-informed neural network (PINN) deep ensemble for a field and one unknown PDE constant.

Why this design:

* **One batched pass over all members.** M copies of a small tanh MLP are stacked with
  ``torch.func.stack_module_state``; every member's field, PDE residual (gradient and Hessian
  from ``torch.func``, see ``pde.py``) and loss come from ``torch.vmap`` over the stacked
  parameters of ``functional_call``. One Adam optimiser updates the stacked tensors; Adam is
  element-wise and the members share no parameter, so this is exactly M independent Adam runs,
  done as one set of tensor operations instead of a Python loop (``benchmarks/pinn_ensemble.py``
  measures the difference). Collocation points are drawn outside the vmap and shared by all
  members at each step, so no random number is drawn inside the transform and
  ``randomness="different"`` is not needed.
* **Anchored ensemble (randomised MAP), so the spread means something.** Member m is the MAP of
  its own randomised problem: data perturbed by its own noise draw ``y + sigma * eps_m`` and a
  Gaussian prior centred on its own random initialisation (the "anchor": network weights from
  the member's own seed, the log PDE constant drawn from ``N(log parameter_init,
  parameter_prior_std^2)``). Where observations are dense they override the anchors and the
  members agree; where they are sparse the members keep their different prior draws. The
  loss of member m is, per observation,
  ``[0.5 sum ((u_m(x_i) - y_i - sigma_i eps_mi) / sigma_i)^2 + 0.5 |theta_m - anchor_m|^2 / s^2] / n
  + pde_weight * 0.5 mean(r_m(z_c)^2 / y_scale^2) + boundary_weight * 0.5 mean(((u_m - g) / y_scale)^2)``.
  The reported std is the unbiased std over members of their fields (epistemic spread; the
  observation noise itself is not added).
* **Positive constants by construction.** The heat diffusivity ``kappa`` and the Darcy
  conductivity ``k`` are ``exp`` of a learned per-member scalar.
* **Units.** Inputs are centred and scaled per axis and outputs rescaled inside the field
  function itself, so autograd derivatives are with respect to the caller's coordinates and the
  inferred constant is in the caller's units.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from .pde import INPUT_DIMS, PARAMETER_NAMES, PDES, residual
from .inputs import fail as _fail
from .inputs import points as _points
from .inputs import values as _values
from .summary import FieldPosterior


def _noise(where: str, sigma, n: int) -> np.ndarray:
    try:
        arr = np.asarray(sigma, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(where, "y_noise_std", "a positive number or (n,) array of positive numbers", type(sigma).__name__)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        _fail(where, "y_noise_std", f"a scalar or shape ({n},)", arr.shape)
    if not np.all(np.isfinite(arr) & (arr > 0)):
        _fail(where, "y_noise_std", "finite values > 0 (noise std in the units of y)",
              f"{int(np.sum(~(np.isfinite(arr) & (arr > 0))))} values that are not")
    return arr


class FieldNet(nn.Module):
    """One ensemble member: tanh MLP ``standardised (x, y[, t]) -> standardised u`` plus, for
    inverse problems, the log of the unknown PDE constant (``log_parameter``)."""

    def __init__(self, in_dim: int, width: int, depth: int, log_parameter: float | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.Tanh()]
            d = width
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        if log_parameter is not None:
            self.log_parameter = nn.Parameter(torch.tensor(float(log_parameter)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


class PINNEnsembleSolver:
    """Deep-ensemble PINN for ``heat`` (u_t = kappa laplace u, kappa inferred), ``poisson``
    (-laplace u = f, f known) or ``darcy`` (-div(k grad u) = f, constant k inferred).

    ``fit`` trains all ``members`` at once for ``steps`` Adam steps (learning rate ``lr``
    decaying geometrically to ``lr * lr_final_fraction``), drawing ``n_collocation`` fresh
    uniform collocation points in the domain box each step. ``prior_std`` is the std of the
    Gaussian anchor prior on the network weights, ``parameter_init`` and
    ``parameter_prior_std`` the prior median and log-std of the unknown constant.
    """

    def __init__(self, pde: str = "heat", members: int = 8, width: int = 32, depth: int = 3,
                 steps: int = 2000, lr: float = 3e-3, lr_final_fraction: float = 0.1,
                 pde_weight: float = 1.0, boundary_weight: float = 1.0, n_collocation: int = 256,
                 prior_std: float = 1.0, parameter_init: float = 1.0, parameter_prior_std: float = 0.5,
                 seed: int = 0, dtype: torch.dtype = torch.float32, history: int = 20):
        where = "PINNEnsembleSolver"
        if pde not in PDES:
            _fail(where, "pde", f"one of {PDES}", repr(pde))
        for name, value, low in (("members", members, 2), ("width", width, 1), ("depth", depth, 1),
                                 ("steps", steps, 1), ("n_collocation", n_collocation, 1),
                                 ("history", history, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                _fail(where, name, f"an integer >= {low}", repr(value))
        for name, value in (("lr", lr), ("prior_std", prior_std), ("parameter_init", parameter_init),
                            ("parameter_prior_std", parameter_prior_std), ("lr_final_fraction", lr_final_fraction)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                _fail(where, name, "a finite number > 0", repr(value))
        for name, value in (("pde_weight", pde_weight), ("boundary_weight", boundary_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                _fail(where, name, "a finite number >= 0", repr(value))
        if dtype not in (torch.float32, torch.float64):
            _fail(where, "dtype", "torch.float32 or torch.float64", dtype)
        self.pde = pde
        self.dim = INPUT_DIMS[pde]
        self.parameter_name = PARAMETER_NAMES[pde]
        self.members = int(members)
        self.width, self.depth = int(width), int(depth)
        self.steps = int(steps)
        self.lr, self.lr_final_fraction = float(lr), float(lr_final_fraction)
        self.pde_weight, self.boundary_weight = float(pde_weight), float(boundary_weight)
        self.n_collocation = int(n_collocation)
        self.prior_std = float(prior_std)
        self.parameter_init, self.parameter_prior_std = float(parameter_init), float(parameter_prior_std)
        self.seed = int(seed)
        self.dtype = dtype
        self.history = int(history)
        self.params: dict | None = None
        self.info: dict = {}

    # ------------------------------------------------------------------ ensemble construction
    def _build(self, centre: np.ndarray, scale: np.ndarray, y_mean: float, y_scale: float) -> None:
        """Members with their own seeds; stacked parameters; anchors = the initial values."""
        self._centre = torch.as_tensor(centre, dtype=self.dtype)
        self._scale = torch.as_tensor(scale, dtype=self.dtype)
        self._y_mean, self._y_scale = float(y_mean), float(y_scale)
        g = torch.Generator().manual_seed(self.seed)
        nets = []
        for m in range(self.members):
            torch.manual_seed(self.seed * 1009 + m)
            log_p = None
            if self.parameter_name is not None:
                log_p = math.log(self.parameter_init) + self.parameter_prior_std * float(torch.randn((), generator=g))
            nets.append(FieldNet(self.dim, self.width, self.depth, log_p).to(self.dtype))
        params, _ = stack_module_state(nets)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.anchors = {k: v.detach().clone() for k, v in params.items()}
        # The template holds no data used in computation: functional_call swaps parameters in.
        self._base = copy.deepcopy(nets[0])

    def member_modules(self) -> list[FieldNet]:
        """The members as separate ``FieldNet`` modules holding copies of the stacked parameters."""
        self._require_fit("member_modules")
        out = []
        for m in range(self.members):
            net = FieldNet(self.dim, self.width, self.depth,
                           0.0 if self.parameter_name is not None else None).to(self.dtype)
            net.load_state_dict({k: v[m].detach().clone() for k, v in self.params.items()})
            out.append(net)
        return out

    # ------------------------------------------------------------------ one member, functional
    def field(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        """u at points ``z`` (..., d) in the caller's units, for ONE member's parameters."""
        zs = (z - self._centre) / self._scale
        return self._y_mean + self._y_scale * functional_call(self._base, params, (zs,))

    def _field_point(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        return self.field(params, z[None])[0]

    def constant(self, params: dict) -> torch.Tensor | None:
        """The member's PDE constant (kappa or k), positive by construction."""
        return torch.exp(params["log_parameter"]) if self.parameter_name is not None else None

    def residuals(self, params: dict, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """PDE residual of ONE member at collocation points ``z`` (c, d); ``f`` (c,) the source."""
        p = self.constant(params)
        return torch.vmap(lambda zz, ff: residual(self.pde, self._field_point, params, zz, p, ff))(z, f)

    def member_loss(self, params: dict, anchors: dict, y: torch.Tensor, z: torch.Tensor,
                    f: torch.Tensor) -> torch.Tensor:
        """Loss of ONE member (see module docstring) for its own perturbed data ``y`` (n,)."""
        misfit = ((self.field(params, self._x) - y) / self._sigma).pow(2).sum()
        anchor = sum(((params[k] - anchors[k]) / self._prior[k]).pow(2).sum() for k in params)
        loss = 0.5 * (misfit + anchor) / self._x.shape[0]
        if self.pde_weight > 0:
            r = self.residuals(params, z, f) / self._y_scale
            loss = loss + self.pde_weight * 0.5 * r.pow(2).mean()
        if self._xb is not None and self.boundary_weight > 0:
            rb = (self.field(params, self._xb) - self._yb) / self._y_scale
            loss = loss + self.boundary_weight * 0.5 * rb.pow(2).mean()
        return loss

    def ensemble_loss(self, params: dict, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """(M,) losses of all members in one vmapped evaluation."""
        return torch.vmap(self.member_loss, in_dims=(0, 0, 0, None, None))(params, self.anchors, self._y_members, z, f)

    def ensemble_fields(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        """(M, n) fields of all members at points ``z`` (n, d)."""
        return torch.vmap(self.field, in_dims=(0, None))(params, z)

    def ensemble_residuals(self, params: dict, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """(M, c) PDE residuals of all members at collocation points ``z`` (c, d)."""
        return torch.vmap(self.residuals, in_dims=(0, None, None))(params, z, f)

    def collocation(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh uniform collocation points in the domain box and the source there."""
        u = torch.rand(self.n_collocation, self.dim, generator=generator, dtype=self.dtype)
        z = self._low + u * (self._high - self._low)
        return z, self._source_at(z)

    # ------------------------------------------------------------------ fitting
    def fit(self, x, y, y_noise_std, *, source: Callable | None = None, domain=None,
            boundary=None) -> "PINNEnsembleSolver":
        """Train the ensemble on observations ``y`` (n,) at points ``x`` (n, d).

        ``y_noise_std`` is the observation noise std (scalar or (n,)), in the units of ``y``.
        ``source`` (required for poisson and darcy) maps a (c, 2) tensor of points to the (c,)
        tensor ``f``. ``domain`` is the collocation box as ``[(low, high)]`` per coordinate
        (default: the bounding box of ``x``). ``boundary`` is optional Dirichlet data
        ``(xb (nb, d), ub (nb,))``.
        """
        where = "PINNEnsembleSolver.fit"
        x = _points(where, "x", x, self.dim)
        n = x.shape[0]
        y = _values(where, "y", y, n)
        sigma = _noise(where, y_noise_std, n)
        if self.pde in ("poisson", "darcy"):
            if not callable(source):
                _fail(where, "source", f"a callable f(points) -> values (the {self.pde} right-hand side)",
                      type(source).__name__)
        elif source is not None:
            _fail(where, "source", "None (the heat equation here has no source term)", type(source).__name__)
        if domain is None:
            low, high = x.min(axis=0), x.max(axis=0)
        else:
            try:
                box = np.asarray(domain, dtype=np.float64)
            except (TypeError, ValueError):
                box = None
            if box is None or box.shape != (self.dim, 2) or not np.all(np.isfinite(box)) or np.any(box[:, 1] <= box[:, 0]):
                _fail(where, "domain", f"{self.dim} finite (low, high) pairs with low < high",
                      None if box is None else box.tolist())
            low, high = box[:, 0], box[:, 1]
        if boundary is not None:
            if not (isinstance(boundary, (tuple, list)) and len(boundary) == 2):
                _fail(where, "boundary", "a pair (xb, ub) of Dirichlet points and values", type(boundary).__name__)
            xb = _points(where, "boundary[0]", boundary[0], self.dim)
            ub = _values(where, "boundary[1]", boundary[1], xb.shape[0])

        t0 = time.perf_counter()
        centre = 0.5 * (low + high)
        scale = np.where(high > low, 0.5 * (high - low), 1.0)
        y_scale = float(np.std(y)) if np.std(y) > 0 else 1.0
        self._build(centre, scale, float(np.mean(y)), y_scale)
        tt = lambda a: torch.as_tensor(a, dtype=self.dtype)  # noqa: E731
        self._x, self._sigma = tt(x), tt(sigma)
        self._low, self._high = tt(low), tt(high)
        self._xb = tt(xb) if boundary is not None else None
        self._yb = tt(ub) if boundary is not None else None
        if source is None:
            self._source_at = lambda z: torch.zeros(z.shape[0], dtype=self.dtype)
        else:
            self._source_at = lambda z: self._call_source(source, z)
        g = torch.Generator().manual_seed(self.seed + 7)
        eps = torch.randn(self.members, n, generator=g, dtype=self.dtype)
        self._y_members = tt(y)[None, :] + self._sigma[None, :] * eps
        self._prior = {k: torch.tensor(self.parameter_prior_std if k == "log_parameter" else self.prior_std,
                                       dtype=self.dtype) for k in self.params}

        opt = torch.optim.Adam(list(self.params.values()), lr=self.lr)
        gamma = self.lr_final_fraction ** (1.0 / self.steps)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
        tail: list[float] = []
        for _ in range(self.steps):
            z, f = self.collocation(g)
            losses = self.ensemble_loss(self.params, z, f)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            sched.step()
            tail.append(float(losses.detach().mean()))
            if len(tail) > self.history:
                tail.pop(0)
        self.info = {
            "solver": "pinn_ensemble", "pde": self.pde, "members": self.members, "steps": self.steps,
            "n_observations": n, "loss_tail": tail, "final_member_losses": losses.detach().tolist(),
            "seconds": time.perf_counter() - t0,
        }
        if self.parameter_name is not None:
            values = torch.exp(self.params["log_parameter"].detach()).double().numpy()
            self.info.update({
                "parameter": self.parameter_name, "parameter_members": values.tolist(),
                "parameter_mean": float(values.mean()), "parameter_std": float(values.std(ddof=1)),
            })
        return self

    def _call_source(self, source: Callable, z: torch.Tensor) -> torch.Tensor:
        f = source(z)
        if not isinstance(f, torch.Tensor) or f.shape != (z.shape[0],):
            _fail("PINNEnsembleSolver.fit", "source",
                  f"a callable returning a tensor of shape ({z.shape[0]},) for points of shape {tuple(z.shape)}",
                  getattr(f, "shape", type(f).__name__))
        return f.to(self.dtype)

    # ------------------------------------------------------------------ prediction
    def _require_fit(self, what: str) -> None:
        if self.params is None:
            raise RuntimeError(f"PINNEnsembleSolver.{what}: call fit() first")

    def predict(self, xq) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and unbiased std over members at points ``xq`` (n, d)."""
        self._require_fit("predict")
        xq = _points("PINNEnsembleSolver.predict", "xq", xq, self.dim)
        with torch.no_grad():
            u = self.ensemble_fields(self.params, torch.as_tensor(xq, dtype=self.dtype)).double().numpy()
        return u.mean(axis=0), u.std(axis=0, ddof=1)

    def predict_grid(self, xs, ys, ts=None) -> FieldPosterior:
        """Posterior over the grid ``ys x xs`` (steady) or ``ts x ys x xs`` (heat)."""
        self._require_fit("predict_grid")
        where = "PINNEnsembleSolver.predict_grid"
        axes = [("xs", xs), ("ys", ys)]
        if self.dim == 3:
            if ts is None:
                _fail(where, "ts", "a non-empty 1-D array of times (the heat field depends on t)", None)
            axes.append(("ts", ts))
        elif ts is not None:
            _fail(where, "ts", f"None (the {self.pde} field is steady)", type(ts).__name__)
        arrs = []
        for name, a in axes:
            a = np.asarray(a, dtype=np.float64)
            if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
                _fail(where, name, "a non-empty 1-D array of finite grid coordinates", a.shape)
            arrs.append(a)
        if self.dim == 2:
            gx, gy = np.meshgrid(arrs[0], arrs[1])
            pts, shape = np.column_stack([gx.ravel(), gy.ravel()]), (arrs[1].size, arrs[0].size)
        else:
            gt, gy, gx = np.meshgrid(arrs[2], arrs[1], arrs[0], indexing="ij")
            pts, shape = np.column_stack([gx.ravel(), gy.ravel(), gt.ravel()]), gt.shape
        mean, std = self.predict(pts)
        return FieldPosterior(mean.reshape(shape), std.reshape(shape), dict(self.info))
