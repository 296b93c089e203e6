"""Field methods as a recipe names them: ``gp``, ``sparse-gp``, ``gp-physics``, ``pinn``.

A method's parameters are of two kinds. Most go to the solver's constructor, whose signature
(types, defaults and its own checks) is the single source of truth, as for the CT samplers:
building the solver *is* the validation. The rest describe the problem rather than the solver
(the PDE's right-hand side, a Dirichlet boundary value, the observation noise, the PDE's domain):
the pipeline hands them to ``fit``, and they are declared here with their types and defaults, so
a typo or a wrong type in either kind fails at ``inversa check``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from inversa.data.pde_sources import SOURCES
from inversa.models.solvers import SOLVERS
from inversa.models.solvers.base import FieldSolver
from inversa.tasks.core.params import ParameterSchema

SourceName = Literal[tuple(SOURCES)]  # type: ignore[valid-type]


def _box(value: list[float] | None) -> list[float] | None:
    if value is not None and (value[1] <= value[0] or value[3] <= value[2] or not all(map(math.isfinite, value))):
        raise ValueError(f"expected [xmin, xmax, ymin, ymax] with xmax > xmin, ymax > ymin, got {value!r}")
    return value


Domain = Annotated[list[float], Field(min_length=4, max_length=4), AfterValidator(_box)]
NOISE_STD = ("noise_std", (Annotated[float, Field(gt=0)] | None, None))  # in the units of the values
BOUNDARY = ("boundary_value", (float | None, None))  # Dirichlet u on the domain's edges
DOMAIN = ("domain", (Domain | None, None))  # [xmin, xmax, ymin, ymax]; default: the output grid's extent

PROBLEM_PARAMETERS: dict[str, dict[str, tuple[Any, Any]]] = {
    "gp": dict([NOISE_STD]),
    "sparse-gp": {},
    "gp-physics": dict([("source", (float | SourceName, 1.0)), BOUNDARY, NOISE_STD, DOMAIN]),
    "pinn": dict([("source", (float | SourceName, 0.0)), BOUNDARY, NOISE_STD, DOMAIN]),
}
"""Problem parameters per method, with types and defaults (given to ``fit``, not the constructor).
``source`` is a number (a constant f) or a named source of data/pde_sources.py."""


def field_method_names() -> list[str]:
    return sorted(SOLVERS)


@lru_cache(maxsize=None)
def _schemas(name: str) -> tuple[ParameterSchema, ParameterSchema]:
    """(the solver's constructor parameters, the problem parameters) of method ``name``."""
    solver = ParameterSchema.of(name, SOLVERS[name].__init__)
    problem = ParameterSchema.declared(name, PROBLEM_PARAMETERS.get(name, {}))
    return solver, problem


@dataclass(frozen=True)
class FieldMethod:
    """A validated field method: constructor keywords and problem parameters, defaults filled in."""

    name: str
    solver_params: dict[str, Any] = field(default_factory=dict)
    problem: dict[str, Any] = field(default_factory=dict)
    given: dict[str, Any] = field(default_factory=dict)  # what the recipe set, typed (the recipe keeps these)

    def build(self) -> FieldSolver:
        """A fresh, unfitted solver."""
        return SOLVERS[self.name](**self.solver_params)

    def resolved(self) -> dict[str, Any]:
        """Every parameter with its default: what provenance records."""
        return {**_schemas(self.name)[0].defaults(), **self.solver_params, **self.problem}


def takes_device(name: str) -> bool:
    """Whether method ``name``'s solver has a ``device`` (every solver in torch does)."""
    return name in SOLVERS and "device" in _schemas(name)[0].names


def field_method(name: str, params: dict[str, Any] | None) -> FieldMethod:
    """Validate and type a recipe's ``method`` for a field run; the error names the parameter at fault."""
    if name not in SOLVERS:
        raise ValueError(f"unknown field method {name!r}; expected one of {', '.join(field_method_names())}")
    params = dict(params or {})
    solver_schema, problem_schema = _schemas(name)
    known = set(solver_schema.names) | set(problem_schema.names)
    unknown = sorted(set(params) - known)
    if unknown:
        # Name every accepted parameter, constructor's and problem's alike.
        ParameterSchema.declared(name, {k: (Any, None) for k in known}).coerce(params)
    solver_params = solver_schema.coerce({k: v for k, v in params.items() if k in solver_schema.names})
    problem_given = problem_schema.coerce({k: v for k, v in params.items() if k in problem_schema.names})
    problem = {**problem_schema.defaults(), **problem_given}
    method = FieldMethod(name, solver_params, problem, {**solver_params, **problem_given})
    try:
        method.build()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"method {name!r}: {exc}") from None
    return method
