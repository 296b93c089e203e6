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
* **Incompressible flow (PIV gap filling).** ``pde="incompressible"``: the network's first
  output is a stream function, the field is the velocity ``(u, v)`` derived from it (``pde.py``),
  so every member - and the ensemble mean - is exactly divergence-free; that is the physics, and
  there is no PDE term. ``navier_stokes=True`` adds a second output, the kinematic pressure, and
  the steady momentum residual as the PDE term, with the viscosity ``nu`` either given or
  inferred like kappa. Observations are (n, 2) vectors; the mean flow is carried outside the
  network as a constant (itself divergence-free) and ``psi`` is scaled by velocity x length.
* **State export.** ``state()`` gives the stacked parameters and the standardisation as numpy
  arrays plus JSON-able settings; ``restore`` (on a solver with the same architecture) or the
  classmethod ``from_state`` rebuilds a solver whose predictions are bit-identical, so the
  pipeline can train once and predict in other processes.
* **Common interface** (``FieldSolver``, base.py). A constant ``source`` or ``boundary`` is a
  number: the solver makes the callable, or the Dirichlet points (``BOUNDARY_POINTS_PER_EDGE``
  per edge of the domain, repeated at ``BOUNDARY_TIMES`` times for the heat equation) itself.
  The noise is not learned: ``fit`` needs ``y_noise_std``.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from .base import FieldSolver, SolverState, check_n, check_settings, check_state
from .inputs import box as _box
from .inputs import fail as _fail
from .inputs import points as _points
from .inputs import values as _values
from .pde import INPUT_DIMS, PARAMETER_NAMES, PDES, navier_stokes_residual, residual, velocity_from_stream


STATE_FORMAT = "inversa.pinn_ensemble/1"
"""Tag in ``state()`` metadata; ``from_state`` refuses anything else."""

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

BOUNDARY_POINTS_PER_EDGE = 64
"""A constant Dirichlet ``boundary`` is imposed at this many points per edge of the domain."""
BOUNDARY_TIMES = 11
"""... at each of this many equally spaced times across the domain's time range (heat)."""

ARCHITECTURE = ("pde", "members", "width", "depth", "dtype", "navier_stokes", "nu", "input_gain")
"""Settings that decide what the saved parameters mean: a restoring solver must share them."""


def _noise(where: str, sigma, n: int, components: int | None = None) -> np.ndarray:
    """Noise std as (n,) for a scalar field, (n, C) for C components (scalar and (n,) broadcast)."""
    shapes = f"a scalar or shape ({n},)" + ("" if components is None else f" or ({n}, {components})")
    try:
        arr = np.asarray(sigma, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(where, "y_noise_std", "a positive number or (n,) array of positive numbers", type(sigma).__name__)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if components is not None and arr.shape == (n,):
        arr = np.repeat(arr[:, None], components, axis=1)
    if arr.shape != ((n,) if components is None else (n, components)):
        _fail(where, "y_noise_std", shapes, arr.shape)
    if not np.all(np.isfinite(arr) & (arr > 0)):
        _fail(where, "y_noise_std", "finite values > 0 (noise std in the units of y)",
              f"{int(np.sum(~(np.isfinite(arr) & (arr > 0))))} values that are not")
    return arr


def _observations(where: str, name: str, y, n: int, components: int | None) -> np.ndarray:
    """(n,) values for a scalar field, (n, C) finite vectors for a C-component field."""
    if components is None:
        return _values(where, name, y, n)
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(where, name, f"a numeric ({n}, {components}) array", type(y).__name__)
    if arr.shape != (n, components):
        _fail(where, name, f"shape ({n}, {components}), one (u, v) vector per point", arr.shape)
    if not np.all(np.isfinite(arr)):
        _fail(where, name, "finite values", f"{int(np.sum(~np.isfinite(arr)))} NaN or infinite values")
    return arr


class FieldNet(nn.Module):
    """One ensemble member: tanh MLP ``standardised (x, y[, t]) -> standardised u`` plus, for
    inverse problems, the log of the unknown PDE constant (``log_parameter``). With
    ``out_dim > 1`` the outputs stay a last axis (stream function and pressure)."""

    def __init__(self, in_dim: int, width: int, depth: int, log_parameter: float | None = None,
                 out_dim: int = 1):
        super().__init__()
        self.out_dim = int(out_dim)
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.Tanh()]
            d = width
        layers.append(nn.Linear(d, self.out_dim))
        self.net = nn.Sequential(*layers)
        if log_parameter is not None:
            self.log_parameter = nn.Parameter(torch.tensor(float(log_parameter)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        return out.squeeze(-1) if self.out_dim == 1 else out


class PINNEnsembleSolver(FieldSolver):
    """Deep-ensemble PINN for ``heat`` (u_t = kappa laplace u, kappa inferred), ``poisson``
    (-laplace u = f, f known), ``darcy`` (-div(k grad u) = f, constant k inferred) or
    ``incompressible`` (divergence-free velocity (u, v) from a stream function; with
    ``navier_stokes=True`` also the steady momentum equation, viscosity ``nu`` given or, when
    None, inferred with prior median ``parameter_init``).

    ``fit`` trains all ``members`` at once for ``steps`` Adam steps (learning rate ``lr``
    decaying geometrically to ``lr * lr_final_fraction``), drawing ``n_collocation`` fresh
    uniform collocation points in the domain box each step. ``prior_std`` is the std of the
    Gaussian anchor prior on the network weights, ``parameter_init`` and
    ``parameter_prior_std`` the prior median and log-std of the unknown constant.
    ``batch_size`` (default: all) draws that many observations per step, shared by the members,
    for data sets (PIV frames) where evaluating every vector's derivative each step dominates.
    ``input_gain`` multiplies the standardised coordinates (range +-1 by default): tanh MLPs
    learn features of about the input range first (spectral bias), so a field with many eddies
    per domain (the soap-film PIV: RMSE 0.0045 -> 0.0036 m/s at 2000 steps with gain 4) trains
    faster with a gain > 1.
    ``device`` ("cpu", "cuda"; a ``torch.device`` works too) holds the members and the data;
    random draws are made on the CPU and moved, so a seed gives the same collocation points,
    batches and perturbed data on any device. It is not part of ``state()``: ``from_state``
    takes its own. ``dtype`` is "float32" or "float64" (``torch.float32``/``torch.float64``
    work too; the annotation is the string form a recipe can validate).

    The field is scalar except for ``incompressible`` (``components`` ``("u", "v")``); the heat
    equation's field is of ``(x, y, t)`` (``input_dim`` 3). Poisson and Darcy need ``source``.
    """

    name = "pinn"
    componentwise = False
    accepts_noise_std = True
    learns_noise = False

    def __init__(self, pde: str = "heat", members: int = 8, width: int = 32, depth: int = 3,
                 steps: int = 2000, lr: float = 3e-3, lr_final_fraction: float = 0.1,
                 pde_weight: float = 1.0, boundary_weight: float = 1.0, n_collocation: int = 256,
                 prior_std: float = 1.0, parameter_init: float = 1.0, parameter_prior_std: float = 0.5,
                 seed: int = 0, dtype: Literal["float32", "float64"] = "float32", history: int = 20,
                 navier_stokes: bool = False, nu: float | None = None, batch_size: int | None = None,
                 input_gain: float = 1.0, device: str = "cpu"):
        where = "PINNEnsembleSolver"
        if pde not in PDES:
            _fail(where, "pde", f"one of {PDES}", repr(pde))
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                _fail(where, "dtype", "'float32' or 'float64'", repr(dtype))
            dtype = _DTYPES[dtype]
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            _fail(where, "batch_size", "None (all observations every step) or an integer >= 1", repr(batch_size))
        if not isinstance(navier_stokes, bool):
            _fail(where, "navier_stokes", "True or False", repr(navier_stokes))
        if navier_stokes and pde != "incompressible":
            _fail(where, "navier_stokes", f"False for pde={pde!r} (only the incompressible flow has it)", True)
        if nu is not None:
            if not navier_stokes:
                _fail(where, "nu", "None unless navier_stokes=True (the viscosity enters only the momentum equation)",
                      repr(nu))
            if isinstance(nu, bool) or not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu > 0):
                _fail(where, "nu", "a finite kinematic viscosity > 0 (or None to infer it)", repr(nu))
        for name, value, low in (("members", members, 2), ("width", width, 1), ("depth", depth, 1),
                                 ("steps", steps, 1), ("n_collocation", n_collocation, 1),
                                 ("history", history, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                _fail(where, name, f"an integer >= {low}", repr(value))
        for name, value in (("lr", lr), ("prior_std", prior_std), ("parameter_init", parameter_init),
                            ("parameter_prior_std", parameter_prior_std), ("lr_final_fraction", lr_final_fraction),
                            ("input_gain", input_gain)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                _fail(where, name, "a finite number > 0", repr(value))
        for name, value in (("pde_weight", pde_weight), ("boundary_weight", boundary_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                _fail(where, name, "a finite number >= 0", repr(value))
        if dtype not in (torch.float32, torch.float64):
            _fail(where, "dtype", "torch.float32 or torch.float64", dtype)
        self._config = {
            "pde": pde, "members": int(members), "width": int(width), "depth": int(depth), "steps": int(steps),
            "lr": float(lr), "lr_final_fraction": float(lr_final_fraction), "pde_weight": float(pde_weight),
            "boundary_weight": float(boundary_weight), "n_collocation": int(n_collocation),
            "prior_std": float(prior_std), "parameter_init": float(parameter_init),
            "parameter_prior_std": float(parameter_prior_std), "seed": int(seed),
            "dtype": "float32" if dtype == torch.float32 else "float64", "history": int(history),
            "navier_stokes": navier_stokes, "nu": None if nu is None else float(nu),
            "batch_size": None if batch_size is None else int(batch_size), "input_gain": float(input_gain),
        }
        self.input_gain = float(input_gain)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.pde = pde
        self.dim = INPUT_DIMS[pde]
        self.navier_stokes = navier_stokes
        self.nu = None if nu is None else float(nu)
        self._components = ("u", "v") if pde == "incompressible" else None
        self.out_dim = 2 if navier_stokes else 1
        self._has_pde_term = pde != "incompressible" or navier_stokes
        self.parameter_name = PARAMETER_NAMES[pde]
        if pde == "incompressible" and not (navier_stokes and nu is None):
            self.parameter_name = None
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
        self.device = torch.device(device)
        # functional_call swaps each member's parameters into the one shared module, so two
        # threads predicting at once (regions of a store) would read each other's: one at a time.
        self._predict_lock = threading.Lock()
        self.params: dict | None = None
        self._noise_var = None
        self.info: dict = {}

    # ------------------------------------------------------------------ what it models
    @property
    def input_dim(self) -> int:
        return self.dim

    @property
    def components(self) -> tuple[str, ...] | None:
        return self._components

    @property
    def uses_source(self) -> bool:
        return self.pde in ("poisson", "darcy")

    def check_problem(self, components: tuple[str, ...] | None, has_time: bool) -> None:
        """A vector field needs ``pde=incompressible`` with exactly two components; ``pde=heat``
        needs a time axis (the other equations are fitted one time step at a time)."""
        comps = None if components is None else tuple(components)
        if comps is not None and self.pde != "incompressible":
            raise ValueError(f"pinn: a vector field ({', '.join(map(str, comps))}) needs pde=incompressible "
                             f"(a divergence-free velocity (u, v)); got pde={self.pde!r}")
        if self.pde == "incompressible" and (comps is None or len(comps) != 2):
            got = "a scalar field" if comps is None else f"components {comps}"
            raise ValueError(f"pinn: pde=incompressible needs a 2-component velocity field (u, v), got {got}")
        if self.pde == "heat" and not has_time:
            raise ValueError("pinn: pde=heat models u(x, y, t) and needs observations with a time axis; "
                             "the input has none (choose pde=poisson or darcy, or another method)")
        super().check_problem(comps, has_time)

    # ------------------------------------------------------------------ ensemble construction
    def _set_scales(self, centre: np.ndarray, scale: np.ndarray, y_mean, y_scale: float) -> None:
        """Standardisation of inputs and outputs (float64 in, so ``from_state`` repeats it exactly).

        Inputs: ``(z - centre) / scale * input_gain`` (half-extent ``scale``). Scalar fields:
        ``u = y_mean + y_scale * net``. Flow: ``y_mean`` is the mean velocity (2,),
        ``psi = y_scale * L * net`` with ``L`` the geometric mean of ``scale / input_gain``,
        pressure ``y_scale^2 * net``, and the momentum residual is measured in units of
        ``y_scale^2 / L``.
        """
        self._centre_np, self._scale_np = np.asarray(centre, np.float64), np.asarray(scale, np.float64)
        self._y_mean_np, self._y_scale = np.asarray(y_mean, np.float64), float(y_scale)
        effective = self._scale_np / self.input_gain
        self._centre = self._tensor(self._centre_np)
        self._scale = self._tensor(effective)
        if self.components is None:
            self._y_mean = float(self._y_mean_np)
            self._residual_scale = self._y_scale
        else:
            length = float(np.sqrt(np.prod(effective)))
            self._y_mean = self._tensor(self._y_mean_np)
            self._psi_scale = self._y_scale * length
            self._p_scale = self._y_scale ** 2
            self._residual_scale = self._y_scale ** 2 / length

    def _tensor(self, a) -> torch.Tensor:
        """``a`` in the solver's dtype on its device."""
        return torch.as_tensor(a, dtype=self.dtype).to(self.device)

    def _template(self) -> FieldNet:
        return FieldNet(self.dim, self.width, self.depth, 0.0 if self.parameter_name is not None else None,
                        out_dim=self.out_dim).to(device=self.device, dtype=self.dtype)

    def _build(self, centre: np.ndarray, scale: np.ndarray, y_mean, y_scale: float) -> None:
        """Members with their own seeds; stacked parameters; anchors = the initial values."""
        self._set_scales(centre, scale, y_mean, y_scale)
        g = torch.Generator().manual_seed(self.seed)
        nets = []
        for m in range(self.members):
            torch.manual_seed(self.seed * 1009 + m)
            log_p = None
            if self.parameter_name is not None:
                log_p = math.log(self.parameter_init) + self.parameter_prior_std * float(torch.randn((), generator=g))
            nets.append(FieldNet(self.dim, self.width, self.depth, log_p, out_dim=self.out_dim)
                        .to(device=self.device, dtype=self.dtype))
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
            net = self._template()
            net.load_state_dict({k: v[m].detach().clone() for k, v in self.params.items()})
            out.append(net)
        return out

    # ------------------------------------------------------------------ one member, functional
    def field(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        """u (n,) - or the velocity (n, 2) for the flow - at points ``z`` (n, d) in the caller's
        units, for ONE member's parameters."""
        if self.components is not None:
            return torch.vmap(lambda zz: self._velocity_point(params, zz))(z)
        zs = (z - self._centre) / self._scale
        return self._y_mean + self._y_scale * functional_call(self._base, params, (zs,))

    def _field_point(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        return self.field(params, z[None])[0]

    def _outputs_point(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        """Raw network outputs (out_dim,) at one point ``z`` in the caller's units."""
        out = functional_call(self._base, params, (((z - self._centre) / self._scale)[None],))[0]
        return out.reshape(self.out_dim)

    def _stream_point(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        return self._psi_scale * self._outputs_point(params, z)[0]

    def _pressure_point(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        return self._p_scale * self._outputs_point(params, z)[1]

    def _velocity_point(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        return self._y_mean + velocity_from_stream(self._stream_point, params, z)

    def constant(self, params: dict) -> torch.Tensor | None:
        """The member's PDE constant (kappa, k or nu), positive by construction; a given nu as is."""
        if self.parameter_name is not None:
            return torch.exp(params["log_parameter"])
        return None if self.nu is None else self._tensor(self.nu)

    def residuals(self, params: dict, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """PDE residual of ONE member at collocation points ``z`` (c, d): (c,), or (c, 2) for the
        momentum equation; ``f`` (c,) the source (unused by the flow)."""
        p = self.constant(params)
        if self.pde == "incompressible":
            if not self.navier_stokes:
                raise RuntimeError("PINNEnsembleSolver.residuals: the incompressible flow without navier_stokes "
                                   "has no PDE residual (continuity holds by construction)")
            return torch.vmap(lambda zz: navier_stokes_residual(self._velocity_point, self._pressure_point,
                                                                params, zz, p))(z)
        return torch.vmap(lambda zz, ff: residual(self.pde, self._field_point, params, zz, p, ff))(z, f)

    def member_loss(self, params: dict, anchors: dict, y: torch.Tensor, z: torch.Tensor,
                    f: torch.Tensor, x: torch.Tensor | None = None, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ONE member (see module docstring) for its own perturbed data ``y`` (n,).

        With ``x``, ``sigma`` (a minibatch of b observations, ``y`` then its b values) the misfit
        is the batch mean, an unbiased estimate of the full-data term; the anchor keeps weight 1/n.
        """
        anchor = sum(((params[k] - anchors[k]) / self._prior[k]).pow(2).sum() for k in params)
        if x is None:
            misfit = ((self.field(params, self._x) - y) / self._sigma).pow(2).sum()
            loss = 0.5 * (misfit + anchor) / self._x.shape[0]
        else:
            misfit = ((self.field(params, x) - y) / sigma).pow(2).sum()
            loss = 0.5 * misfit / x.shape[0] + 0.5 * anchor / self._x.shape[0]
        if self.pde_weight > 0 and self._has_pde_term:
            r = self.residuals(params, z, f) / self._residual_scale
            loss = loss + self.pde_weight * 0.5 * r.pow(2).mean()
        if self._xb is not None and self.boundary_weight > 0:
            rb = (self.field(params, self._xb) - self._yb) / self._y_scale
            loss = loss + self.boundary_weight * 0.5 * rb.pow(2).mean()
        return loss

    def ensemble_loss(self, params: dict, z: torch.Tensor, f: torch.Tensor,
                      batch: torch.Tensor | None = None) -> torch.Tensor:
        """(M,) losses of all members in one vmapped evaluation; ``batch`` optional observation
        indices (shared by the members) for a minibatch estimate of the data term."""
        if batch is None:
            return torch.vmap(self.member_loss, in_dims=(0, 0, 0, None, None))(
                params, self.anchors, self._y_members, z, f)
        return torch.vmap(self.member_loss, in_dims=(0, 0, 0, None, None, None, None))(
            params, self.anchors, self._y_members[:, batch], z, f, self._x[batch], self._sigma[batch])

    def ensemble_fields(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        """(M, n) fields - (M, n, 2) velocities for the flow - of all members at points ``z`` (n, d)."""
        return torch.vmap(self.field, in_dims=(0, None))(params, z)

    def ensemble_residuals(self, params: dict, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """(M, c) PDE residuals of all members at collocation points ``z`` (c, d)."""
        return torch.vmap(self.residuals, in_dims=(0, None, None))(params, z, f)

    def collocation(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh uniform collocation points in the domain box and the source there."""
        u = torch.rand(self.n_collocation, self.dim, generator=generator, dtype=self.dtype).to(self.device)
        z = self._low + u * (self._high - self._low)
        return z, self._source_at(z)

    # ------------------------------------------------------------------ fitting
    def boundary_points(self, domain) -> np.ndarray:
        """Where a constant Dirichlet ``boundary`` is imposed: ``BOUNDARY_POINTS_PER_EDGE`` points on
        each edge of the rectangle ``domain[:2]`` (counter-clockwise from (xmin, ymin), each edge
        without its end), and for the heat equation those at ``BOUNDARY_TIMES`` equally spaced
        times of ``domain[2]``: (4 * 64, 2) or (11 * 4 * 64, 3) points."""
        box = _box("PINNEnsembleSolver.boundary_points", domain, self.dim)
        (x0, x1), (y0, y1) = box[0], box[1]
        s = np.linspace(0.0, 1.0, BOUNDARY_POINTS_PER_EDGE, endpoint=False)
        edges = np.concatenate([
            np.column_stack([x0 + s * (x1 - x0), np.full_like(s, y0)]),
            np.column_stack([np.full_like(s, x1), y0 + s * (y1 - y0)]),
            np.column_stack([x1 - s * (x1 - x0), np.full_like(s, y1)]),
            np.column_stack([np.full_like(s, x0), y1 - s * (y1 - y0)]),
        ])
        if self.dim == 3:
            times = np.linspace(box[2, 0], box[2, 1], BOUNDARY_TIMES)
            edges = np.concatenate([np.column_stack([edges, np.full(len(edges), t)]) for t in times])
        return edges

    def fit(self, x, y, y_noise_std=None, *, domain=None, boundary=None, source=None) -> "PINNEnsembleSolver":
        """Train the ensemble on observations ``y`` (n,) at points ``x`` (n, d); for the flow ``y``
        is (n, 2), the velocity ``(u, v)`` at each point.

        ``y_noise_std`` (required: the noise is not learned) is the observation noise std (scalar
        or (n,), for the flow also (n, 2)), in the units of ``y``.
        ``source`` (poisson and darcy; ignored by the other equations): ``f`` as a number or a
        callable mapping a (c, 2) tensor of points to the (c,) tensor ``f``. ``domain`` is the
        collocation box as ``[(low, high)]`` per coordinate (default: the bounding box of ``x``).
        ``boundary``: None, a number (a constant Dirichlet value at ``boundary_points(domain)``;
        for the flow, that value for both velocity components) or explicit Dirichlet data
        ``(xb (nb, d), ub (nb,) or (nb, 2))``.
        """
        where = "PINNEnsembleSolver.fit"
        n_comp = None if self.components is None else len(self.components)
        x = _points(where, "x", x, self.dim)
        n = x.shape[0]
        y = _observations(where, "y", y, n, n_comp)
        if y_noise_std is None:
            _fail(where, "y_noise_std", "the observation noise std (a positive number, or one per observation): "
                  "the PINN ensemble does not learn the noise (learns_noise is False)", None)
        sigma = _noise(where, y_noise_std, n, n_comp)
        if not self.uses_source:
            source = None  # heat and the flow have no source term: a given one is ignored
        elif source is None or not (callable(source) or _is_number(source)):
            _fail(where, "source", f"a number or a callable f(points) -> values (the {self.pde} right-hand side)",
                  type(source).__name__)
        if domain is None:
            low, high = x.min(axis=0), x.max(axis=0)
        else:
            box = _box(where, domain, self.dim)
            low, high = box[:, 0], box[:, 1]
        if boundary is not None:
            if _is_number(boundary):
                xb = self.boundary_points(np.column_stack([low, high]))
                shape = (xb.shape[0],) if n_comp is None else (xb.shape[0], n_comp)
                ub = np.full(shape, float(boundary))
            elif isinstance(boundary, (tuple, list)) and len(boundary) == 2:
                xb = _points(where, "boundary[0]", boundary[0], self.dim)
                ub = _observations(where, "boundary[1]", boundary[1], xb.shape[0], n_comp)
            else:
                _fail(where, "boundary", "None, a number (constant Dirichlet value) or a pair (xb, ub) of Dirichlet "
                      "points and values", type(boundary).__name__)

        t0 = time.perf_counter()
        centre = 0.5 * (low + high)
        scale = np.where(high > low, 0.5 * (high - low), 1.0)
        if n_comp is None:
            y_mean, spread = float(np.mean(y)), float(np.std(y))
        else:  # one scale for both components: psi couples them
            y_mean, spread = y.mean(axis=0), float(np.sqrt(np.mean(np.var(y, axis=0))))
        self._build(centre, scale, y_mean, spread if spread > 0 else 1.0)
        tt = self._tensor
        self._x, self._sigma = tt(x), tt(sigma)
        self._low, self._high = tt(low), tt(high)
        self._xb = tt(xb) if boundary is not None else None
        self._yb = tt(ub) if boundary is not None else None
        if source is None:
            self._source_at = lambda z: torch.zeros(z.shape[0], dtype=self.dtype, device=self.device)
        elif callable(source):
            self._source_at = lambda z: self._call_source(source, z)
        else:
            value = float(source)
            self._source_at = lambda z: torch.full((z.shape[0],), value, dtype=z.dtype, device=z.device)
        self._noise_var = (float(np.mean(sigma ** 2)) if n_comp is None
                           else [float(v) for v in np.mean(sigma ** 2, axis=0)])
        g = torch.Generator().manual_seed(self.seed + 7)
        eps = torch.randn(self.members, *y.shape, generator=g, dtype=self.dtype).to(self.device)
        self._y_members = tt(y)[None] + self._sigma[None] * eps
        self._prior = {k: tt(self.parameter_prior_std if k == "log_parameter" else self.prior_std)
                       for k in self.params}

        opt = torch.optim.Adam(list(self.params.values()), lr=self.lr)
        gamma = self.lr_final_fraction ** (1.0 / self.steps)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
        tail: list[float] = []
        batched = self.batch_size is not None and self.batch_size < n
        for _ in range(self.steps):
            z, f = self.collocation(g)
            batch = torch.randperm(n, generator=g)[:self.batch_size].to(self.device) if batched else None
            losses = self.ensemble_loss(self.params, z, f, batch)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            sched.step()
            tail.append(float(losses.detach().mean()))
            if len(tail) > self.history:
                tail.pop(0)
        self.info = {
            "solver": "pinn_ensemble", "pde": self.pde, "members": self.members, "steps": self.steps,
            "n_observations": n, "batch_size": self.batch_size if batched else n, "navier_stokes": self.navier_stokes,
            "loss_tail": tail, "final_member_losses": losses.detach().tolist(),
            "seconds": time.perf_counter() - t0,
        }
        if self.parameter_name is not None:
            values = torch.exp(self.params["log_parameter"].detach()).double().cpu().numpy()
            self.info.update({
                "parameter": self.parameter_name, "parameter_members": values.tolist(),
                "parameter_mean": float(values.mean()), "parameter_std": float(values.std(ddof=1)),
            })
        if self.nu is not None:
            self.info["nu"] = self.nu
        return self

    def _call_source(self, source: Callable, z: torch.Tensor) -> torch.Tensor:
        f = source(z)
        if not isinstance(f, torch.Tensor) or f.shape != (z.shape[0],):
            _fail("PINNEnsembleSolver.fit", "source",
                  f"a callable returning a tensor of shape ({z.shape[0]},) for points of shape {tuple(z.shape)}",
                  getattr(f, "shape", type(f).__name__))
        return f.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ prediction
    def _require_fit(self, what: str) -> None:
        if self.params is None:
            raise RuntimeError(f"PINNEnsembleSolver.{what}: call fit() first")

    def predict(self, xq, tile_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and unbiased std over members at points ``xq`` (n, d): (n,) each, or
        (n, 2) for the flow. Points go through in tiles of ``tile_size`` so memory stays bounded."""
        self._require_fit("predict")
        xq = _points("PINNEnsembleSolver.predict", "xq", xq, self.dim)
        if not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
            _fail("PINNEnsembleSolver.predict", "tile_size", "an integer >= 1", repr(tile_size))
        z = self._tensor(xq)
        with self._predict_lock, torch.no_grad():
            u = torch.cat([self.ensemble_fields(self.params, z[i:i + tile_size])
                           for i in range(0, z.shape[0], tile_size)], dim=1).double().cpu().numpy()
        return u.mean(axis=0), u.std(axis=0, ddof=1)

    # ------------------------------------------------------------------ noise and cost
    def noise_variance(self) -> float | np.ndarray:
        """The given observation-noise variance (the mean of ``y_noise_std**2`` over the
        observations), in the values' units squared; for the flow one per component, (2,)."""
        self._require_fit("noise_variance")
        if self._noise_var is None:
            raise RuntimeError("PINNEnsembleSolver.noise_variance: the state this solver was restored from "
                               "records no noise variance")
        return self._noise_var if np.ndim(self._noise_var) == 0 else np.asarray(self._noise_var, dtype=np.float64)

    def parameter_count(self) -> int:
        """Trainable numbers of one member (weights, biases and the log PDE constant if inferred)."""
        inner = self.dim * self.width + self.width + (self.depth - 1) * (self.width ** 2 + self.width)
        return inner + self.width * self.out_dim + self.out_dim + (1 if self.parameter_name is not None else 0)

    def estimated_memory_bytes(self, n_observations: int) -> int:
        """Peak bytes of ``fit`` + ``predict`` for n observations, ``s`` bytes a number (4 for
        float32, 8 for float64), from the ensemble's shape: M ``members`` of ``depth`` hidden
        layers of ``width`` units, inputs of dimension ``d``, C output components.

        * **Training step.** Every member is evaluated at the ``b = min(batch_size, n)``
          observations of the step, at the boundary points (``nb`` =
          ``4 * BOUNDARY_POINTS_PER_EDGE``, times ``BOUNDARY_TIMES`` for heat; counted as if a
          boundary were given) and at the ``n_collocation`` points, and autograd keeps each
          hidden layer's activations for the backward pass: per point, member and hidden unit
          about ``a = 1.5`` numbers for a field value, ``a = 1.5 (1 + d)`` for the flow's
          velocity (a gradient of the stream function: a reverse pass per point), and
          ``r = 3 (1 + 2 d)`` for a PDE residual (gradient and Hessian by forward-over-reverse
          differentiation carry ``1 + 2 d`` tangents through every layer), ``r = 3 (1 + 2 d)(1 + d)``
          for the steady Navier-Stokes residual (third derivatives), ``r = 0`` for the plain flow
          (no PDE term). Activations: ``s M depth width (a (b + nb) + r n_collocation)``.
        * **Prediction** runs tiles of 4096 points without autograd: a few layer-sized
          tensors, ``s M 4096 width k`` with ``k = 3`` for a scalar field and ``depth + 2`` for
          the flow (the reverse pass per point), plus the tile's member predictions
          (``12 M 4096 C``). The members' predictions at all m query points (``12 M m C``)
          depend on the query, not on n, and are left to the caller, like the outputs.
        * **Always held:** the observations and their M perturbed copies
          (``8 n (d + 2 C) + s M n C``), and the stacked parameters with their gradients,
          Adam's two moments and the anchors (``5 s M P``, P numbers per member).

        The peak is the held part plus the larger of a training step and a prediction tile.
        Measured on CPU (``tests/models/test_field_solver_memory.py``), float32: Poisson,
        4 members x 32 units x 2 layers, 256 collocation points, n = 1000 / 10000: 6.4 / 21 MB
        (estimates 6.6 / 20 MB); heat, 8 x 32 x 3, n = 20000: 104 MB (124 MB); the flow,
        4 x 32 x 2, n = 5000: 26 MB (25 MB); Navier-Stokes, 512 collocation points, n = 1000:
        27 MB (30 MB).
        """
        n = check_n("PINNEnsembleSolver.estimated_memory_bytes", n_observations)
        s = 4 if self.dtype == torch.float32 else 8
        d, M, C = self.dim, self.members, len(self.components or ("u",))
        b = n if self.batch_size is None else min(self.batch_size, n)
        nb = 4 * BOUNDARY_POINTS_PER_EDGE * (BOUNDARY_TIMES if d == 3 else 1)
        flow = self.components is not None
        a = 1.5 * (1 + d) if flow else 1.5
        r = 0.0
        if self._has_pde_term:
            r = 3.0 * (1 + 2 * d) * ((1 + d) if self.navier_stokes else 1)
        train = s * M * self.depth * self.width * (a * (b + nb) + r * self.n_collocation)
        tile = 4096
        predict = s * M * tile * self.width * ((self.depth + 2) if flow else 3) + 12 * M * tile * C
        held = 8 * n * (d + 2 * C) + s * M * n * C + 5 * s * M * self.parameter_count()
        return int(held + max(train, predict))

    # ------------------------------------------------------------------ state export
    def state(self) -> SolverState:
        """``SolverState``: everything prediction needs, as numpy arrays (stacked member
        parameters ``param.<name>`` and the float64 standardisation) and a JSON-able dict
        (format tag, constructor settings, the given noise variance, fit ``info``).
        ``restore`` and ``from_state`` invert it exactly."""
        self._require_fit("state")
        arrays = {f"param.{k}": v.detach().cpu().numpy().copy() for k, v in self.params.items()}
        arrays.update({"centre": self._centre_np.copy(), "scale": self._scale_np.copy(),
                       "y_mean": self._y_mean_np.copy(), "y_scale": np.asarray(self._y_scale, np.float64)})
        meta = {"format": STATE_FORMAT, "config": dict(self._config), "noise_variance": copy.deepcopy(self._noise_var),
                "info": copy.deepcopy(self.info)}
        return SolverState(meta, arrays)

    def restore(self, state: SolverState, x=None, y=None, y_noise_std=None, *, domain=None, boundary=None,
                source=None) -> "PINNEnsembleSolver":
        """Reload the weights and standardisation ``state()`` saved (the observations and the other
        arguments are not needed and are ignored): predictions are the original's bit for bit.
        The solver must have the saved architecture (``ARCHITECTURE`` settings); the device is its own."""
        where = "PINNEnsembleSolver.restore"
        meta = check_state(where, state, STATE_FORMAT).meta
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        check_settings(where, {k: config.get(k) for k in ARCHITECTURE}, {k: self._config[k] for k in ARCHITECTURE})
        self._load(where, state.arrays, meta)
        return self

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, device: str | torch.device = "cpu") -> "PINNEnsembleSolver":
        """A solver that predicts exactly like the one whose ``state()`` gave ``arrays``, ``meta``
        (``SolverState.arrays`` and ``.meta``), built with the saved settings on ``device``.

        It holds no training data: ``predict``, ``predict_grid``, ``member_modules`` and
        ``state`` work; ``fit`` trains afresh with the same settings.
        """
        where = "PINNEnsembleSolver.from_state"
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or not isinstance(meta.get("config"), dict):
            _fail(where, "meta", f"a dict with format {STATE_FORMAT!r} and a 'config' dict (from state())",
                  meta.get("format") if isinstance(meta, dict) else type(meta).__name__)
        config = dict(meta["config"])
        if config.get("dtype") not in _DTYPES:
            _fail(where, "meta['config']['dtype']", f"one of {tuple(_DTYPES)}", repr(config.get("dtype")))
        try:
            solver = cls(**config, device=device)
        except TypeError as error:
            _fail(where, "meta['config']", "the constructor settings written by state()", str(error))
        return solver._load(where, arrays, meta)

    def _load(self, where: str, arrays: dict, meta: dict) -> "PINNEnsembleSolver":
        """Set parameters and standardisation from a state's arrays (shapes checked) and its info."""
        solver = self
        template = solver._template()
        names = [k for k, _ in template.named_parameters()]
        wanted = {f"param.{k}": (solver.members, *v.shape) for k, v in template.named_parameters()}
        wanted.update({"centre": (solver.dim,), "scale": (solver.dim,), "y_scale": (),
                       "y_mean": () if solver.components is None else (len(solver.components),)})
        if not isinstance(arrays, dict):
            _fail(where, "arrays", "a dict of numpy arrays (from state())", type(arrays).__name__)
        for key, shape in wanted.items():
            arr = np.asarray(arrays[key]) if key in arrays else None
            if arr is None or arr.shape != shape or not np.all(np.isfinite(arr)):
                _fail(where, f"arrays[{key!r}]", f"finite values of shape {shape}",
                      "missing" if arr is None else f"shape {arr.shape}")
        solver._set_scales(arrays["centre"], arrays["scale"], arrays["y_mean"], float(arrays["y_scale"]))
        solver.params = {k: solver._tensor(np.asarray(arrays[f"param.{k}"])).clone() for k in names}
        solver.anchors = None
        solver._base = template
        solver._noise_var = copy.deepcopy(meta.get("noise_variance"))
        solver.info = copy.deepcopy(meta.get("info", {}))
        return solver


def _is_number(value) -> bool:
    """A real number (not a bool): a constant source or boundary value."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))
