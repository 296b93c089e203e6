"""Field methods as a recipe names them: ``gp``, ``sparse-gp``, ``gp-physics``, ``pinn``.

A method's parameters are of two kinds. Most go to the solver's constructor, whose signature
(and its own checks) is the single source of truth, as for the imaging samplers in
tasks/methods.py: building the solver *is* the validation. The rest describe the problem rather
than the solver (the PDE's right-hand side, a Dirichlet boundary value, the observation noise,
the PDE's domain): the pipeline consumes them when it calls ``fit``, and they are declared here
with their defaults, so a typo in either kind fails at ``inversa check``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

PROBLEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "gp": {"noise_std": None},
    "sparse-gp": {},
    "gp-physics": {"source": 1.0, "k": 1.0, "boundary_value": None, "noise_std": None, "domain": None},
    "pinn": {"source": 0.0, "boundary_value": None, "noise_std": None, "domain": None},
}
"""Problem parameters per method (consumed by tasks/field_solve.py, not by the constructor)."""

SOURCES = ("sine",)
"""Named right-hand sides: ``sine`` is ``2 pi^2 sin(pi x) sin(pi y)`` (data/synthetic_fields.py)."""


SOLVER_CLASSES = {"gp": "ExactGPSolver", "sparse-gp": "SparseGPSolver", "gp-physics": "PhysicsGPSolver",
                  "pinn": "PINNEnsembleSolver"}


def _solver_class(name: str) -> type:
    import inversa.models.solvers as solvers  # imported on use: gpytorch is slow to import

    return getattr(solvers, SOLVER_CLASSES[name])


def field_method_names() -> list[str]:
    return sorted(PROBLEM_DEFAULTS)


def _constructor_parameters(name: str) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(_solver_class(name).__init__)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {k: p for k, p in signature.parameters.items() if k not in ("self", "dtype") and p.kind in kinds}


@dataclass(frozen=True)
class FieldMethod:
    """A validated field method: constructor keywords and problem parameters, defaults filled in."""

    name: str
    solver_params: dict[str, Any] = field(default_factory=dict)
    problem: dict[str, Any] = field(default_factory=dict)

    def build(self):
        """A fresh, unfitted solver."""
        return _solver_class(self.name)(**self.solver_params)

    def resolved(self) -> dict[str, Any]:
        """Every parameter with its default: what provenance records."""
        defaults = {k: p.default for k, p in _constructor_parameters(self.name).items()
                    if p.default is not inspect.Parameter.empty}
        return {**defaults, **self.solver_params, **self.problem}


def _check_problem(name: str, problem: dict[str, Any]) -> None:
    where = f"method.params of {name!r}"
    source = problem.get("source")
    if "source" in problem and not (source in SOURCES or _finite(source)):
        raise ValueError(f"{where}: 'source': expected a number or one of {SOURCES}, got {source!r}")
    if "k" in problem and not (_finite(problem["k"]) and problem["k"] > 0):
        raise ValueError(f"{where}: 'k': expected a number > 0 (the known conductivity), got {problem['k']!r}")
    value = problem.get("boundary_value")
    if value is not None and not _finite(value):
        raise ValueError(f"{where}: 'boundary_value': expected a number (Dirichlet u on the domain edge) or null")
    noise = problem.get("noise_std")
    if noise is not None and not (_finite(noise) and noise > 0):
        raise ValueError(f"{where}: 'noise_std': expected a number > 0 (in the units of the values) or null")
    domain = problem.get("domain")
    if domain is not None:
        ok = isinstance(domain, (list, tuple)) and len(domain) == 4 and all(_finite(v) for v in domain)
        if not ok or domain[1] <= domain[0] or domain[3] <= domain[2]:
            raise ValueError(f"{where}: 'domain': expected [xmin, xmax, ymin, ymax] with xmax > xmin, ymax > ymin, "
                             f"got {domain!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def field_method(name: str, params: dict[str, Any] | None) -> FieldMethod:
    """Validate a recipe's ``method`` for a field run; the error names the parameter at fault."""
    if name not in PROBLEM_DEFAULTS:
        raise ValueError(f"unknown field method {name!r}; expected one of {', '.join(field_method_names())}")
    params = dict(params or {})
    accepted = _constructor_parameters(name)
    problem_keys = set(PROBLEM_DEFAULTS[name])
    unknown = sorted(set(params) - set(accepted) - problem_keys)
    if unknown:
        raise ValueError(
            f"method {name!r}: unknown parameter(s) {unknown}; expected any of {sorted(set(accepted) | problem_keys)}"
        )
    solver_params = {k: v for k, v in params.items() if k in accepted}
    problem = {**PROBLEM_DEFAULTS[name], **{k: v for k, v in params.items() if k in problem_keys}}
    _check_problem(name, problem)
    method = FieldMethod(name, solver_params, problem)
    try:
        method.build()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"method {name!r}: {exc}") from None
    return method
