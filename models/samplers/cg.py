"""Batched (preconditioned) conjugate gradients for symmetric positive definite systems, one per batch item.

Each item keeps its own step sizes and stops on its own residual, so a slice's answer does not
depend on which other slices (or samples) share its batch; finished items are frozen while
the others go on. An optional preconditioner ``M^-1`` (SPD, applied per item) changes only how
fast CG gets there: the stopping rule is always the unpreconditioned relative residual
``||b - A x|| / ||b||``, so a tolerance means the same with or without one.
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
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> CGResult:
    """Solve ``apply(x) = b`` for a batch ``b`` of shape ``(N, ...)``; ``apply`` must be SPD per item.

    ``preconditioner(r)`` applies ``M^-1`` (SPD per item, approximating ``apply``'s inverse) to
    a batch of residuals; without one this is plain CG.
    """
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"conjugate_gradient: need tol > 0 and max_iter >= 1, got {tol}, {max_iter}")
    precondition = preconditioner if preconditioner is not None else (lambda v: v)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    z = precondition(r)
    p = z.clone()
    rr = batch_dot(r, r)
    rz = batch_dot(r, z)
    b_norm = torch.sqrt(batch_dot(b, b))
    target = (tol * b_norm) ** 2
    active = rr > target
    iterations = 0
    one = torch.ones_like(rr)
    while bool(active.any()) and iterations < max_iter:
        ap = apply(p)
        pap = batch_dot(p, ap)
        step = torch.where(active, rz / torch.where(pap > 0, pap, one), torch.zeros_like(rr))
        x = x + expand_to(step, x) * p
        r = r - expand_to(step, r) * ap
        z = precondition(r)
        rr = torch.where(active, batch_dot(r, r), rr)
        rz_new = batch_dot(r, z)
        beta = torch.where(active, rz_new / torch.where(rz > 0, rz, one), torch.zeros_like(rr))
        p = torch.where(expand_to(active, p), z + expand_to(beta, p) * p, p)
        rz = torch.where(active, rz_new, rz)
        active = active & (rr > target)
        iterations += 1
    safe = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    rel = torch.sqrt(rr) / safe
    return CGResult(x=x, iterations=iterations, converged=rel <= tol, relative_residual=rel)
