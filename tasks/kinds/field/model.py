"""Fitting a field method to a problem's observations, saving the fit, and predicting from it.

``FieldModel`` hides three differences between the solvers from the pipeline:

* **Vector fields.** The GP methods model each component with its own GP (PIV ``u`` and ``v``
  independently); the ``incompressible`` PINN models both at once through a stream function.
* **Space-time.** The heat PINN fits ``(x, y, t)`` jointly; the others fit one time step.
* **Fit once, predict anywhere.** A static field's regions are bands of rows that may run in
  other processes. The expensive part (hyperparameters by marginal likelihood, inducing points,
  network training) runs once; ``state`` gives it as JSON plus arrays, and ``fit(points,
  state=...)`` rebuilds the same posterior from it: the GPs re-condition on the same
  observations with the saved hyperparameters (no optimisation, the same numbers), the PINN
  reloads its weights. ``tests/tasks/test_field_solve.py`` checks that the two agree.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from inversa.tasks.field_methods import FieldMethod
from inversa.tasks.field_problem import FieldProblem, Points

GP_METHODS = ("gp", "sparse-gp", "gp-physics")
NOISE_FRACTION = 0.05
"""PINN data-noise std when neither the recipe nor the input gives one: this fraction of the values' std."""
BOUNDARY_POINTS_PER_EDGE = 64
BOUNDARY_TIMES = 11


def source_function(source: Any, module) -> Callable:
    """The PDE right-hand side ``f(points (m, 2)) -> (m,)`` for numpy or torch (``module``)."""
    if source == "sine":
        return lambda z: 2 * math.pi ** 2 * module.sin(math.pi * z[:, 0]) * module.sin(math.pi * z[:, 1])
    value = float(source)
    if module is np:
        return lambda z: np.full(z.shape[0], value)
    return lambda z: module.full((z.shape[0],), value, dtype=z.dtype, device=z.device)


def is_space_time(method: FieldMethod) -> bool:
    return method.name == "pinn" and method.solver_params.get("pde", "heat") == "heat"


def needs_global_fit(method: FieldMethod, problem: FieldProblem) -> bool:
    """Whether one fit serves every region (static fields, space-time PINNs) or each region fits its own."""
    return problem.leading_dim == "y" or is_space_time(method)


class FieldModel:
    """One fitted method on one problem (see the module docstring)."""

    def __init__(self, method: FieldMethod, problem: FieldProblem):
        self.method, self.problem = method, problem
        self.space_time = is_space_time(method)
        self.vector_pinn = method.name == "pinn" and method.solver_params.get("pde") == "incompressible"
        if problem.components and method.name == "pinn" and not self.vector_pinn:
            raise ValueError(f"{problem.input}: a vector field ({', '.join(problem.components)}) needs "
                             f"method.params.pde=incompressible for a PINN, got pde={method.solver_params.get('pde', 'heat')!r}")
        if self.vector_pinn and not (problem.components and len(problem.components) == 2):
            raise ValueError(f"{problem.input}: pde=incompressible needs a 2-component velocity field (u, v), "
                             f"got components {problem.components}")
        if self.space_time and problem.times is None:
            raise ValueError(f"{problem.input}: pde=heat needs observations with a time dim")
        self.solvers: list = []
        self.info: dict[str, Any] = {}

    # ---------------------------------------------------------------- problem pieces
    def _domain(self) -> list[list[float]]:
        box = self.method.problem.get("domain")
        if box is None:
            box = [self.problem.xs.min(), self.problem.xs.max(), self.problem.ys.min(), self.problem.ys.max()]
        domain = [[float(box[0]), float(box[1])], [float(box[2]), float(box[3])]]
        if self.space_time:
            times = self.problem.time_values()
            domain.append([float(times.min()), float(times.max())])
        return domain

    def _boundary(self) -> tuple[np.ndarray, np.ndarray] | None:
        value = self.method.problem.get("boundary_value")
        if value is None:
            return None
        (x0, x1), (y0, y1) = self._domain()[:2]
        s = np.linspace(0.0, 1.0, BOUNDARY_POINTS_PER_EDGE, endpoint=False)
        edges = np.concatenate([
            np.column_stack([x0 + s * (x1 - x0), np.full_like(s, y0)]),
            np.column_stack([np.full_like(s, x1), y0 + s * (y1 - y0)]),
            np.column_stack([x1 - s * (x1 - x0), np.full_like(s, y1)]),
            np.column_stack([np.full_like(s, x0), y1 - s * (y1 - y0)]),
        ])
        if self.space_time:
            times = np.linspace(*self._domain()[2], BOUNDARY_TIMES)
            edges = np.concatenate([np.column_stack([edges, np.full(len(edges), t)]) for t in times])
        return edges, np.full(len(edges), float(value))

    def _noise_std(self, values: np.ndarray) -> tuple[float | None, str]:
        given = self.method.problem.get("noise_std")
        if given is not None:
            return float(given), "recipe"
        attr = self.problem.data.attrs.get("noise_sigma")
        if attr is not None and float(attr) > 0:
            return float(attr), "input attrs noise_sigma"
        if self.method.name == "pinn":
            return NOISE_FRACTION * float(np.std(values)) or 1.0, f"assumed: {NOISE_FRACTION:g} x std of the values"
        return None, "learned"

    def _inputs(self, points: Points) -> np.ndarray:
        return np.column_stack([points.xy, points.t]) if self.space_time else points.xy

    # ---------------------------------------------------------------- fitting
    def fit(self, points: Points, state: dict | None = None, arrays: dict | None = None) -> "FieldModel":
        """Fit on ``points``; with ``state`` (from ``state()``), rebuild that fit instead of optimising."""
        if points.n < 3:
            raise ValueError(f"{self.problem.input}: {points.n} observation(s) to fit; a field method needs at least 3")
        noise, noise_source = self._noise_std(points.values)
        self.info = {"method": self.method.name, "n_observations": points.n, "noise_std": noise,
                     "noise_std_source": noise_source, "restored": state is not None}
        if self.method.name == "pinn":
            self.solvers = [self._fit_pinn(points, noise, state, arrays or {})]
        else:
            columns = points.values.reshape(points.n, -1)
            saved = (state or {}).get("components") or [None] * columns.shape[1]
            self.solvers = [self._fit_gp(points.xy, columns[:, c], noise, saved[c], arrays or {}, c)
                            for c in range(columns.shape[1])]
        self.info["solvers"] = [_brief(s.info) for s in self.solvers]
        return self

    def _fit_gp(self, xy, y, noise, saved: dict | None, arrays: dict, c: int):
        method, problem = self.method, self.method.problem
        params = dict(method.solver_params)
        if method.name == "sparse-gp" and saved is not None:
            params.update(inducing=arrays[f"c{c}.inducing"], learn_inducing=False)
        solver = type(method.build())(**params)
        options: dict[str, Any] = {"optimise": saved is None, "initial": None if saved is None else saved["hyperparameters"]}
        if method.name == "sparse-gp":
            return solver.fit(xy, y, **options)
        noise_std = None if noise is None else np.full(len(y), noise)
        if method.name == "gp":
            return solver.fit(xy, y, noise_std, **options)
        (x0, x1), (y0, y1) = self._domain()
        return solver.fit(xy, y, noise_std, source=source_function(problem["source"], np), k=float(problem["k"]),
                          domain=(x0, x1, y0, y1), boundary=problem["boundary_value"], **options)

    def _fit_pinn(self, points: Points, noise: float, state: dict | None, arrays: dict):
        solver_class = type(self.method.build())
        if state is not None:
            return solver_class.from_state(arrays, state["pinn"], device=self.method.solver_params.get("device", "cpu"))
        import torch

        pde = self.method.solver_params.get("pde", "heat")
        source = None if pde in ("heat", "incompressible") else source_function(self.method.problem["source"], torch)
        return self.method.build().fit(self._inputs(points), points.values, noise, source=source,
                                       domain=self._domain(), boundary=self._boundary())

    # ---------------------------------------------------------------- saving
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fit as JSON-able metadata and named arrays (``fit(points, state, arrays)`` rebuilds it)."""
        if self.method.name == "pinn":
            arrays, meta = self.solvers[0].state()
            return {"pinn": meta}, dict(arrays)
        components, arrays = [], {}
        for c, solver in enumerate(self.solvers):
            components.append({"hyperparameters": solver.hyperparameters()})
            if self.method.name == "sparse-gp":
                arrays[f"c{c}.inducing"] = solver.inducing_points()
        return {"components": components}, arrays

    def noise_variance(self) -> np.ndarray:
        """Observation-noise variance per component (scalar array for a scalar field): what a new
        measurement adds to the latent posterior variance. Given noise plus any learned extra."""
        given = self.info.get("noise_std")
        given_var = 0.0 if given is None else float(given) ** 2
        if self.method.name == "pinn":
            return np.asarray(given_var)
        learned = np.array([float(s.hyperparameters().get("noise", 0.0)) for s in self.solvers])
        total = learned + given_var
        return total if self.problem.components else total[0]

    # ---------------------------------------------------------------- prediction
    def predict(self, points: Points) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std at ``points`` ((n,) or (n, C))."""
        if self.method.name == "pinn":
            return self.solvers[0].predict(self._inputs(points))
        pairs = [s.predict(points.xy) for s in self.solvers]
        return self._stack(pairs)

    def predict_cells(self, ys: np.ndarray, mask: np.ndarray | None,
                      times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``predict_grid`` computing only the cells where ``mask`` (len(ys), nx) is True; NaN elsewhere.

        Cells outside a convex hull or on land cost nothing (an exact GP's variance is O(n^2)
        per cell, so this is most of a masked grid's time)."""
        if mask is None or mask.all():
            return self.predict_grid(ys, times)
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

    def predict_grid(self, ys: np.ndarray, times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over ``ys x problem.xs`` (and ``times`` for a space-time fit), components last."""
        xs = self.problem.xs
        if self.method.name == "pinn":
            post = self.solvers[0].predict_grid(xs, ys, times) if self.space_time else self.solvers[0].predict_grid(xs, ys)
            return post.mean, post.std
        posts = [s.predict_grid(xs, ys) for s in self.solvers]
        return self._stack([(p.mean, p.std) for p in posts])

    def _stack(self, pairs) -> tuple[np.ndarray, np.ndarray]:
        if self.problem.components:
            return np.stack([m for m, _ in pairs], axis=-1), np.stack([s for _, s in pairs], axis=-1)
        return pairs[0]


def _brief(info: dict) -> dict:
    """The solver's info without bulky entries (loss histories), for manifests and provenance."""
    keep = {}
    for key, value in info.items():
        if isinstance(value, (list, tuple)) and len(value) > 16:
            continue
        keep[key] = value
    return keep
