"""What the exact and the sparse GP solvers share: the kernel family, the standardisation of
coordinates and values (hyperparameters are fitted in standardised units and reported in the
caller's), and the grid posterior built from point predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gpytorch
import numpy as np

from .inputs import fail
from .summary import FieldPosterior

KERNELS = ("matern52", "rbf")


def scaled_kernel(kind: str) -> gpytorch.kernels.ScaleKernel:
    """ScaleKernel over an ARD Matern 5/2 or RBF kernel on two coordinates."""
    if kind == "matern52":
        base = gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=2)
    else:
        base = gpytorch.kernels.RBFKernel(ard_num_dims=2)
    return gpytorch.kernels.ScaleKernel(base)


@dataclass(frozen=True)
class Standardisation:
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float

    @classmethod
    def of(cls, where: str, x: np.ndarray, y: np.ndarray) -> "Standardisation":
        """Centre and scale each coordinate axis and the values (a constant value keeps scale 1)."""
        x_scale = x.std(axis=0)
        if np.any(x_scale == 0):
            fail(where, "x", "coordinates that vary along both axes", f"std per axis {x_scale.tolist()}")
        return cls(x.mean(axis=0), x_scale, float(y.mean()), float(y.std()) or 1.0)


def grid_posterior(where: str, predict: Callable, xs, ys, info: dict, **options) -> FieldPosterior:
    """Posterior over the grid ``ys x xs`` (arrays of shape (len(ys), len(xs))) from ``predict``."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    for name, a in (("xs", xs), ("ys", ys)):
        if a.ndim != 1 or a.size == 0:
            fail(where, name, "a non-empty 1-D array of grid coordinates", a.shape)
    gx, gy = np.meshgrid(xs, ys)
    mean, std = predict(np.column_stack([gx.ravel(), gy.ravel()]), **options)
    shape = (ys.size, xs.size)
    return FieldPosterior(mean.reshape(shape), std.reshape(shape), dict(info))
