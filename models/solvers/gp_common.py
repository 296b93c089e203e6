"""What the exact and the sparse GP solvers share: the kernel family and the standardisation of
coordinates and values (hyperparameters are fitted in standardised units and reported in the
caller's). The grid posterior built from point predictions is ``FieldSolver.predict_grid``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gpytorch
import numpy as np
import torch

from .inputs import fail

KERNELS = ("matern52", "matern32", "rbf")


def kernel_terms(where: str, kernel: str) -> tuple[str, ...]:
    """The kernels of a sum written as ``"matern52+matern52"`` (one term: a plain kernel).

    A sum of two Matern kernels lets the marginal likelihood separate a short-range and a
    long-range component (local anomalies over a regional field) that one lengthscale must
    compromise between.
    """
    terms = tuple(t.strip() for t in str(kernel).split("+"))
    if not all(t in KERNELS for t in terms):
        raise ValueError(f"{where}: argument 'kernel': expected one of {KERNELS} or a sum of them "
                         f"such as 'matern52+matern52', got {kernel!r}")
    return terms


def scaled_kernel(kind: str) -> gpytorch.kernels.ScaleKernel:
    """ScaleKernel over an ARD Matern 5/2, Matern 3/2 or RBF kernel on two coordinates."""
    if kind in ("matern52", "matern32"):
        base = gpytorch.kernels.MaternKernel(nu=2.5 if kind == "matern52" else 1.5, ard_num_dims=2)
    else:
        base = gpytorch.kernels.RBFKernel(ard_num_dims=2)
    return gpytorch.kernels.ScaleKernel(base)


def kernel_matrix(kind: str, a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor,
                  outputscale: float) -> torch.Tensor:
    """k(a, b) for two coordinates, written out rather than through a GPyTorch kernel.

    GPyTorch's lazy kernel evaluation keeps several (rows x n) temporaries and costs more than
    the prediction itself; with two coordinates the squared distance is a pair of broadcasts, so
    a tile of rows needs bounded memory. The closed-form tests pin it to GPyTorch's kernel.
    """
    a = a / lengthscale
    b = b / lengthscale
    d2 = (a[:, :1] - b[:, 0]).square_()
    d2 += (a[:, 1:] - b[:, 1]).square_()
    if kind == "rbf":
        return d2.mul_(-0.5).exp_().mul_(outputscale)
    if kind == "matern32":
        s3r = d2.sqrt_().mul_(math.sqrt(3.0))
        return s3r.neg().exp_().mul_(s3r.add_(1.0)).mul_(outputscale)
    s5r = d2.sqrt().mul_(math.sqrt(5.0))
    k = d2.mul_(5.0 / 3.0).add_(s5r).add_(1.0)
    return k.mul_(s5r.neg_().exp_()).mul_(outputscale)


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


def load_raw_parameters(where: str, params: dict[str, torch.nn.Parameter], raw: dict, what: str) -> None:
    """Copy saved raw (unconstrained) values into ``params`` in place: the names must match and
    every value must be finite and of its parameter's shape. ``what`` says which state fits."""
    if set(raw) != set(params):
        fail(where, "state", f"raw parameters {sorted(params)} ({what})", sorted(raw))
    with torch.no_grad():
        for k, p in params.items():
            value = torch.as_tensor(np.asarray(raw[k], dtype=np.float64))
            if tuple(value.shape) != tuple(p.shape) or not bool(torch.isfinite(value).all()):
                fail(where, f"state.arrays['raw.{k}']", f"finite values of shape {tuple(p.shape)}",
                     f"shape {tuple(value.shape)}")
            p.copy_(value.to(p.device))
