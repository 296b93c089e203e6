"""The interface every field solver answers, so the pipeline treats GPs and PINNs alike.

A field solver fits scattered observations ``(x, y)`` of a field and predicts the posterior mean
and standard deviation of the latent field anywhere; the CT samplers share ``Sampler`` for the
same reason. What differs between solvers is declared, not switched on by name:

* ``componentwise``: a vector field (PIV ``u``, ``v``) is modelled one component at a time by
  independent copies (the GPs; ``Componentwise`` holds the copies), or the solver models only
  what its ``components`` say (the incompressible PINN models ``(u, v)`` jointly).
* ``accepts_noise_std`` / ``learns_noise``: whether ``fit`` takes a known observation-noise std,
  and whether it learns the noise when none is given (the GPs) or needs one (the PINN).
* ``input_dim`` (2 for ``(x, y)``, 3 for ``(x, y, t)``), ``components`` and ``uses_source``.

Arguments mean the same for every solver:

* ``x`` (n, input_dim); ``y`` (n,), or (n, C) for a natively vector solver;
  ``y_noise_std`` None, a scalar or (n,) known noise std in the units of ``y``.
* ``domain``: None (the bounding box of ``x``) or one ``(low, high)`` pair per coordinate,
  ``[[x0, x1], [y0, y1]]`` (plus ``[t0, t1]`` for input_dim 3).
* ``boundary``: None, a number (a constant Dirichlet value on the domain's edges; each solver
  places its own boundary points) or an explicit ``(points (m, input_dim), values (m,))`` pair.
* ``source``: None, a number (a constant right-hand side) or a callable ``f(points) -> values``
  that works on numpy arrays (GPs) and torch tensors (PINN) alike. A solver whose
  ``uses_source`` is False ignores it.

``state()`` gives a fit as JSON-able metadata plus named numpy arrays (what the pipeline writes
to a store); ``restore(state, x, y, ...)`` on a fresh solver with the same settings rebuilds it
without optimising and predicts what the original predicted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .inputs import fail
from .summary import FieldPosterior


@dataclass(frozen=True)
class SolverState:
    """A fit as JSON-able metadata plus named numpy arrays (what the pipeline saves in a store).

    ``meta`` survives ``json.dumps``/``json.loads``; ``arrays`` survive ``np.savez``/``np.load``
    (plain numeric arrays, no pickles). ``restore`` needs nothing else.
    """

    meta: dict
    arrays: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if not isinstance(self.meta, dict):
            raise TypeError(f"SolverState: meta must be a dict, got {type(self.meta).__name__}")
        if not isinstance(self.arrays, dict) or not all(isinstance(k, str) for k in self.arrays):
            raise TypeError("SolverState: arrays must be a dict of str -> numpy array")
        object.__setattr__(self, "arrays", {k: np.asarray(v) for k, v in self.arrays.items()})


def check_state(where: str, state, fmt: str) -> SolverState:
    """``state`` as a ``SolverState`` written by a solver of format ``fmt``, or a clear error."""
    if not isinstance(state, SolverState):
        fail(where, "state", "a SolverState (from state())", type(state).__name__)
    if state.meta.get("format") != fmt:
        fail(where, "state", f"a state of format {fmt!r} (from this solver class's state())",
             f"format {state.meta.get('format')!r}")
    return state


def check_settings(where: str, saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to restore a state into a solver built with other settings (the fit would differ)."""
    if not isinstance(saved, dict):
        fail(where, "state", "meta['config'] with the solver's settings", type(saved).__name__)
    keys = sorted((set(saved) | set(current)) - set(ignore))
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        detail = ", ".join(f"{k}: saved {saved.get(k)!r}, this solver {current.get(k)!r}" for k in differ)
        fail(where, "state", "a state saved by a solver with this solver's settings", detail)


class FieldSolver(ABC):
    """Fit scattered observations of a field, predict its posterior mean and std anywhere.

    Subclasses set the class attributes below and implement ``fit``, ``restore``, ``state``,
    ``predict``, ``noise_variance`` and ``estimated_memory_bytes``. ``predict_grid`` and
    ``check_problem`` are shared.
    """

    name: ClassVar[str] = ""
    """The recipe's method name: "gp", "sparse-gp", "gp-physics", "pinn"."""
    componentwise: ClassVar[bool] = False
    """True: a vector field is modelled one component at a time by independent copies (the GPs);
    False: the solver models only what ``components`` says."""
    accepts_noise_std: ClassVar[bool] = True
    """False: ``fit`` refuses ``y_noise_std`` (the sparse GP learns one homoscedastic noise)."""
    learns_noise: ClassVar[bool] = True
    """True: with no ``y_noise_std`` the noise is learned (GPs); False: ``fit`` needs one (PINN)."""

    info: dict
    """After ``fit``/``restore``: what a reader needs to judge the fit (hyperparameters,
    likelihood, iterations, seconds)."""

    # ------------------------------------------------------------------ what the solver models
    @property
    def input_dim(self) -> int:
        """2 for ``(x, y)`` points; 3 for ``(x, y, t)`` (the heat PINN)."""
        return 2

    @property
    def components(self) -> tuple[str, ...] | None:
        """Output components the solver models natively, e.g. ``("u", "v")``; None: a scalar field."""
        return None

    @property
    def uses_source(self) -> bool:
        """Whether ``fit`` needs ``source`` (the PDE's right-hand side)."""
        return False

    def check_problem(self, components: tuple[str, ...] | None, has_time: bool) -> None:
        """Raise ValueError, naming the parameter to change, when this solver cannot model a field
        with these ``components`` (None: scalar) or with/without a time axis.

        A solver of ``(x, y)`` models a field with a time axis one time step at a time, so only
        ``input_dim`` 3 constrains ``has_time``. Componentwise solvers accept any components.
        """
        label = self.name or type(self).__name__
        comps = None if components is None else tuple(components)
        if comps is not None and (not comps or not all(isinstance(c, str) and c for c in comps)
                                  or len(set(comps)) != len(comps)):
            raise ValueError(f"{label}: components must be None or distinct non-empty names, got {components!r}")
        if self.input_dim == 3 and not has_time:
            raise ValueError(f"{label}: this solver models a field of (x, y, t) and needs observations with a "
                             f"time axis; the input has none")
        if comps is None:
            if self.components is not None:
                raise ValueError(f"{label}: this solver models a vector field ({', '.join(self.components)}); "
                                 f"the input is a scalar field")
            return
        if self.components is None:
            if not self.componentwise:
                raise ValueError(f"{label}: a vector field ({', '.join(comps)}) cannot be modelled by this "
                                 f"scalar solver")
            return
        if len(comps) != len(self.components):
            raise ValueError(f"{label}: this solver models {len(self.components)} components "
                             f"({', '.join(self.components)}), the input has {len(comps)} ({', '.join(comps)})")

    # ------------------------------------------------------------------ fitting and saving
    @abstractmethod
    def fit(self, x, y, y_noise_std=None, *, domain=None, boundary=None, source=None) -> "FieldSolver":
        """Fit observations ``y`` at ``x`` (see the module docstring for every argument)."""

    @abstractmethod
    def restore(self, state: SolverState, x, y, y_noise_std=None, *, domain=None, boundary=None,
                source=None) -> "FieldSolver":
        """Rebuild the fit that ``state()`` saved, without optimising: GPs re-condition on the same
        observations with the saved hyperparameters (the sparse GP with its saved inducing points),
        the PINN reloads its weights (it may ignore ``x``, ``y``). The rebuilt solver predicts
        exactly (GP: to float64 round-off) what the original did."""

    @abstractmethod
    def state(self) -> SolverState:
        """The fit as ``SolverState``: JSON-able ``meta``, numpy ``arrays``."""

    # ------------------------------------------------------------------ prediction
    @abstractmethod
    def predict(self, xq) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of the latent field at points ``xq`` (m, input_dim): (m,) each,
        or (m, C) for natively vector solvers."""

    def _require_fit(self, what: str) -> None:
        """Raise RuntimeError when ``what`` needs a fit that has not happened (subclasses)."""

    def predict_grid(self, xs, ys, ts=None, **options) -> FieldPosterior:
        """Posterior over the grid ``ys x xs`` (arrays (len(ys), len(xs))) or, for input_dim 3,
        ``ts x ys x xs``; a trailing component axis for vector solvers. ``options`` go to ``predict``
        (e.g. ``tile_size``; ``include_noise`` for the GPs). Row j, column i is ``(xs[i], ys[j])``."""
        self._require_fit("predict_grid")
        where = f"{type(self).__name__}.predict_grid"
        axes = [("xs", xs), ("ys", ys)]
        if self.input_dim == 3:
            if ts is None:
                fail(where, "ts", "a non-empty 1-D array of times (the field depends on t)", None)
            axes.append(("ts", ts))
        elif ts is not None:
            fail(where, "ts", "None (the field is steady: the solver takes (x, y) points)", type(ts).__name__)
        arrs = []
        for label, a in axes:
            a = np.asarray(a, dtype=np.float64)
            if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
                fail(where, label, "a non-empty 1-D array of finite grid coordinates", a.shape)
            arrs.append(a)
        if self.input_dim == 2:
            gx, gy = np.meshgrid(arrs[0], arrs[1])
            pts, shape = np.column_stack([gx.ravel(), gy.ravel()]), (arrs[1].size, arrs[0].size)
        else:
            gt, gy, gx = np.meshgrid(arrs[2], arrs[1], arrs[0], indexing="ij")
            pts, shape = np.column_stack([gx.ravel(), gy.ravel(), gt.ravel()]), gt.shape
        mean, std = self.predict(pts, **options)
        if self.components is not None:
            shape = shape + (len(self.components),)
        return FieldPosterior(np.reshape(mean, shape), np.reshape(std, shape), dict(self.info),
                              components=self.components)

    # ------------------------------------------------------------------ noise and cost
    @abstractmethod
    def noise_variance(self) -> float:
        """Observation-noise variance a new measurement adds to the latent variance, in the values'
        units squared: the learned noise plus the given ``y_noise_std**2`` (GP), or the given noise
        variance (PINN). Vector solvers return one variance per component, an array (C,)."""

    @abstractmethod
    def estimated_memory_bytes(self, n_observations: int) -> int:
        """Peak memory of fit + predict for ``n_observations``, from this solver's settings alone
        (no fit needed): the arrays the solver allocates, not the Python/torch runtime itself, nor
        the caller's output arrays. Each subclass documents its formula."""


def check_n(where: str, n_observations) -> int:
    """``n_observations`` as an int >= 0 for ``estimated_memory_bytes``."""
    if isinstance(n_observations, bool) or not isinstance(n_observations, (int, np.integer)) or n_observations < 0:
        fail(where, "n_observations", "an integer >= 0", repr(n_observations))
    return int(n_observations)
