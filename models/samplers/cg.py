"""Batched conjugate gradients for symmetric positive definite systems, one system per batch item.

Each item keeps its own step sizes and stops on its own residual, so a slice's answer does not
depend on which other slices (or samples) share its batch; finished items are frozen while
the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .base import batch_dot, expand_to


@dataclass
class CGResult:
    x: torch.Tensor
    iterations: int  # iterations of the slowest item
    converged: torch.Tensor  # (N,) bool: relative residual <= tol
    relative_residual: torch.Tensor  # (N,) ||b - A x|| / ||b|| by the CG recursion


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 500,
) -> CGResult:
    """Solve ``apply(x) = b`` for a batch ``b`` of shape ``(N, ...)``; ``apply`` must be SPD per item."""
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"conjugate_gradient: need tol > 0 and max_iter >= 1, got {tol}, {max_iter}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rr = batch_dot(r, r)
    b_norm = torch.sqrt(batch_dot(b, b))
    target = (tol * b_norm) ** 2
    active = rr > target
    iterations = 0
    while bool(active.any()) and iterations < max_iter:
        ap = apply(p)
        pap = batch_dot(p, ap)
        step = torch.where(active, rr / torch.where(pap > 0, pap, torch.ones_like(pap)), torch.zeros_like(rr))
        x = x + expand_to(step, x) * p
        r = r - expand_to(step, r) * ap
        rr_new = batch_dot(r, r)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + expand_to(beta, p) * p
        rr = torch.where(active, rr_new, rr)
        active = active & (rr > target)
        iterations += 1
    safe = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    rel = torch.sqrt(rr) / safe
    return CGResult(x=x, iterations=iterations, converged=rel <= tol, relative_residual=rel)
