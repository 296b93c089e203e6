"""A field method fitted to a problem: what the pipeline hands a solver, and what it asks back.

Every solver answers one interface (``models.solvers.base.FieldSolver``); this adapter only
turns a field problem into its arguments and never asks which solver it has:

* **Vector fields.** A solver that models one component at a time (``componentwise``, the GPs)
  gets one copy per component (``Componentwise``); one that models the vector itself (the
  incompressible-flow PINN) gets it whole; ``check_problem`` refuses the rest.
* **Space-time.** A solver whose inputs are ``(x, y, t)`` (``input_dim == 3``, the heat PINN)
  fits all time steps at once; the others fit one time step (see ``needs_global_fit``).
* **Fit once, predict anywhere.** ``state`` gives a fit as JSON plus arrays and ``restore``
  rebuilds the same posterior from it, so the regions of a static field, which may run in other
  processes, share one fit (``tests/tasks/test_field_solve.py`` checks that the two agree).
* **What the problem says.** The observation noise (the recipe's, else the input's
  ``noise_sigma``, else learned, or assumed where a solver cannot learn it), the PDE's domain
  (the recipe's, else the output grid's extent), a Dirichlet boundary value and the source ``f``
  (a number, or a named source of data/pde_sources.py evaluated on NumPy or torch points).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from inversa.data.pde_sources import source_values
from inversa.models.solvers import Componentwise, FieldSolver, SolverState
from inversa.tasks.kinds.field.methods import FieldMethod
from inversa.tasks.kinds.field.problem import FieldProblem, Points

NOISE_FRACTION = 0.05
"""Noise std assumed for a solver that cannot learn it, when neither recipe nor input gives one:
this fraction of the values' std."""


def named_source(name: str) -> Callable:
    """``f(points (m, 2))`` of a named source, for NumPy arrays and torch tensors alike."""

    def f(points):
        xp = torch if isinstance(points, torch.Tensor) else np
        return source_values(name, points[:, 0], points[:, 1], xp)

    return f


def needs_global_fit(solver: FieldSolver, problem: FieldProblem) -> bool:
    """Whether one fit serves every region (static fields, space-time solvers) or each region fits its own."""
    return problem.leading_dim == "y" or solver.input_dim == 3


class FieldModel:
    """One method on one problem, fitted or restored (see the module docstring)."""

    def __init__(self, method: FieldMethod, problem: FieldProblem):
        self.method, self.problem = method, problem
        solver = method.build()
        solver.check_problem(problem.components, problem.times is not None)
        if problem.components and solver.components is None:
            solver = Componentwise([method.build() for _ in problem.components], problem.components)
        self.solver: FieldSolver = solver
        self.space_time = solver.input_dim == 3
        self.info: dict[str, Any] = {}

    @property
    def global_fit(self) -> bool:
        return needs_global_fit(self.solver, self.problem)

    # ---------------------------------------------------------------- what the problem says
    def _domain(self) -> list[list[float]]:
        box = self.method.problem.get("domain")
        if box is None:
            box = [self.problem.xs.min(), self.problem.xs.max(), self.problem.ys.min(), self.problem.ys.max()]
        domain = [[float(box[0]), float(box[1])], [float(box[2]), float(box[3])]]
        if self.space_time:
            times = self.problem.time_values()
            domain.append([float(times.min()), float(times.max())])
        return domain

    def _source(self) -> float | Callable | None:
        source = self.method.problem.get("source")
        return named_source(source) if isinstance(source, str) else source

    def _noise_std(self, values: np.ndarray) -> tuple[float | None, str]:
        given = self.method.problem.get("noise_std")
        if given is not None:
            return float(given), "recipe"
        attr = self.problem.data.attrs.get("noise_sigma")
        if attr is not None and float(attr) > 0:
            return float(attr), "input attrs noise_sigma"
        if not self.solver.learns_noise:
            return NOISE_FRACTION * float(np.std(values)) or 1.0, f"assumed: {NOISE_FRACTION:g} x std of the values"
        return None, "learned"

    def _inputs(self, points: Points) -> np.ndarray:
        return np.column_stack([points.xy, points.t]) if self.space_time else points.xy

    # ---------------------------------------------------------------- fitting
    def fit(self, points: Points, state: SolverState | None = None) -> "FieldModel":
        """Fit on ``points``; with ``state`` (from ``state()``), rebuild that fit instead of optimising."""
        if points.n < 3:
            raise ValueError(f"{self.problem.input}: {points.n} observation(s) to fit; a field method needs at least 3")
        noise, noise_source = self._noise_std(points.values)
        if not self.solver.accepts_noise_std:
            noise, noise_source = None, "learned (the method takes no known noise)"
        args = (self._inputs(points), points.values, noise)
        options = {"domain": self._domain(), "boundary": self.method.problem.get("boundary_value"),
                   "source": self._source()}
        if state is None:
            self.solver.fit(*args, **options)
        else:
            self.solver.restore(state, *args, **options)
        self.info = {"method": self.method.name, "n_observations": points.n, "noise_std": noise,
                     "noise_std_source": noise_source, "restored": state is not None,
                     "solvers": [_brief(info) for info in _member_infos(self.solver)]}
        return self

    def state(self) -> SolverState:
        """The fit as JSON-able metadata and named arrays (``fit(points, state)`` rebuilds it)."""
        return self.solver.state()

    def noise_variance(self) -> np.ndarray:
        """Observation-noise variance (per component for a vector field): what a new measurement
        adds to the latent posterior variance."""
        return np.asarray(self.solver.noise_variance(), dtype=np.float64)

    # ---------------------------------------------------------------- prediction
    def predict(self, points: Points) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std at ``points`` ((n,) or (n, C))."""
        return self.solver.predict(self._inputs(points))

    def predict_cells(self, ys: np.ndarray, mask: np.ndarray | None,
                      times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over ``ys x problem.xs`` (and ``times`` for a space-time fit), components
        last, computing only the cells where ``mask`` (len(ys), nx) is True; NaN elsewhere.

        Cells outside a convex hull or on land cost nothing (an exact GP's variance is O(n^2)
        per cell, so this is most of a masked grid's time)."""
        if mask is None or mask.all():
            post = self.solver.predict_grid(self.problem.xs, ys, times if self.space_time else None)
            return post.mean, post.std
        gx, gy = np.meshgrid(self.problem.xs, ys)
        inside = np.column_stack([gx[mask], gy[mask]])
        steps = [None] if times is None else list(times)
        tail = (len(self.problem.components),) if self.problem.components else ()
        mean = np.full((len(steps), *mask.shape, *tail), np.nan)
        std = np.full_like(mean, np.nan)
        for i, t in enumerate(steps):
            if inside.shape[0]:
                m, s = self.predict(Points(inside, np.empty(0), None if t is None else np.full(len(inside), float(t))))
                mean[i][mask], std[i][mask] = m, s
        return (mean[0], std[0]) if times is None else (mean, std)


def _member_infos(solver: FieldSolver) -> list[dict]:
    """The info of each fitted solver (one per component for a componentwise model)."""
    return [s.info for s in solver.solvers] if isinstance(solver, Componentwise) else [solver.info]


def _brief(info: dict) -> dict:
    """A solver's info without bulky entries (loss histories), for manifests and provenance."""
    return {key: value for key, value in info.items() if not (isinstance(value, (list, tuple)) and len(value) > 16)}
