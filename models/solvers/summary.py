"""The posterior summary every field solver returns: mean and std over the output grid.

The imaging samplers summarise a posterior as a per-pixel mean and standard deviation; field
solvers (Gaussian processes, PINN ensembles) hand back the same two arrays so the pipeline can
store ``mean``, ``std``, ``lower`` and ``upper`` without knowing which solver ran. Intervals are
derived here (mean +- z std) rather than stored by the solver, so every solver uses one rule.

Vector fields (a PIV velocity ``(u, v)``) name their ``components``; the component axis is then
the LAST axis, so ``mean[..., c]`` is one scalar field laid out exactly like a scalar posterior
and the interval rule applies element-wise unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm


@dataclass
class FieldPosterior:
    """Posterior mean and standard deviation of a field over ``(ny, nx)`` or ``(time, ny, nx)``.

    With ``components`` (e.g. ``("u", "v")``) the arrays carry one more, last, axis of that
    length: ``(ny, nx, C)`` or ``(time, ny, nx, C)``. ``info`` carries what a reader needs to judge the fit: hyperparameters, log marginal
    likelihood, optimiser iterations, seconds spent.
    """

    mean: np.ndarray
    std: np.ndarray
    info: dict = field(default_factory=dict)
    components: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"FieldPosterior: mean {self.mean.shape} and std {self.std.shape} must have one shape")
        if self.components is None:
            if self.mean.ndim not in (2, 3):
                raise ValueError(f"FieldPosterior: expected (ny, nx) or (time, ny, nx) arrays, got {self.mean.shape}")
        else:
            names = tuple(self.components)
            if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
                raise ValueError("FieldPosterior: components must be distinct non-empty names, "
                                 f"got {self.components!r}")
            self.components = names
            if self.mean.ndim not in (3, 4) or self.mean.shape[-1] != len(names):
                raise ValueError(f"FieldPosterior: with components {names} expected (ny, nx, {len(names)}) or "
                                 f"(time, ny, nx, {len(names)}) arrays, got {self.mean.shape}")
        if np.any(self.std < 0):
            raise ValueError("FieldPosterior: std must be non-negative")

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central Gaussian credible interval (lower, upper) at ``level``, e.g. 0.9 -> mean +- 1.645 std."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"FieldPosterior.interval: level must lie in (0, 1), got {level}")
        z = norm.ppf(0.5 + level / 2.0)
        return self.mean - z * self.std, self.mean + z * self.std
