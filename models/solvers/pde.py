"""PDE residuals of a scalar field given as a function of ONE point, so torch.func can batch them.

Why per point: ``torch.func.jacrev`` / ``jacfwd`` of a function ``u(params, z) -> scalar`` with
``z`` one coordinate vector give the exact gradient and Hessian of the network at that point.
``vmap`` over points and then over ensemble members turns this into one batched computation
(members x points) without ``create_graph`` bookkeeping, and ordinary ``loss.backward()``
still flows through the transforms to the stacked parameters. ``torch.autograd.grad`` on a
vmapped output would mix members and points in one graph and needs a Python loop per second
derivative; the torch.func route is the one that composes with vmap, so it is the one used.

Coordinates: ``z = (x, y)`` for steady problems, ``z = (x, y, t)`` for the heat equation.
Every residual is zero for an exact solution; signs follow ``lhs - rhs``.

Incompressible 2-D flow is written with a stream function ``psi``: ``u = dpsi/dy``,
``v = -dpsi/dx`` is divergence-free for ANY network, so mass conservation is exact rather than
a penalty. Steady Navier-Stokes (kinematic pressure ``p``, density folded in) then needs the
velocity's Jacobian and Hessian, i.e. third derivatives of ``psi``: ``value_grad_hessian`` of
the per-point velocity (itself a ``jacrev`` of ``psi``) gives them in one more nested pass.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import jacfwd, jacrev

PDES = ("heat", "poisson", "darcy", "incompressible")
"""Supported equations; ``heat`` and ``darcy`` carry one unknown positive constant, and so does
``incompressible`` with the steady Navier-Stokes term when the viscosity is not given."""

INPUT_DIMS = {"heat": 3, "poisson": 2, "darcy": 2, "incompressible": 2}
PARAMETER_NAMES = {"heat": "kappa", "poisson": None, "darcy": "k", "incompressible": "nu"}


def value_grad_hessian(u: Callable, params, z: torch.Tensor):
    """``u(params, z)``, its gradient (d,) and Hessian (d, d) with respect to the point ``z`` (d,).

    One forward-over-reverse pass: ``jacfwd`` of ``jacrev`` with the value and gradient carried
    as auxiliary outputs, so the three come from a single trace.
    """

    def value_twice(p, zz):
        value = u(p, zz)
        return value, value

    def grad_with_aux(p, zz):
        g, value = jacrev(value_twice, argnums=1, has_aux=True)(p, zz)
        return g, (value, g)

    hess, (value, grad) = jacfwd(grad_with_aux, argnums=1, has_aux=True)(params, z)
    return value, grad, hess


def residual(pde: str, u: Callable, params, z: torch.Tensor, parameter: torch.Tensor | None,
             source: torch.Tensor | None) -> torch.Tensor:
    """Residual at one point ``z`` of the field ``u(params, .)``.

    * ``heat``:    ``u_t - kappa (u_xx + u_yy)``            (``parameter`` = kappa, ``z`` = x, y, t)
    * ``poisson``: ``-(u_xx + u_yy) - f``                    (``source`` = f at z)
    * ``darcy``:   ``-k (u_xx + u_yy) - f``                  (constant k: div(k grad u) = k laplace u)
    """
    _, grad, hess = value_grad_hessian(u, params, z)
    laplace = hess[0, 0] + hess[1, 1]
    if pde == "heat":
        return grad[2] - parameter * laplace
    if pde == "poisson":
        return -laplace - source
    if pde == "darcy":
        return -parameter * laplace - source
    raise ValueError(f"pde.residual: argument 'pde': expected one of {PDES}, got {pde!r}")


def velocity_from_stream(psi: Callable, params, z: torch.Tensor) -> torch.Tensor:
    """``(u, v) = (dpsi/dy, -dpsi/dx)`` (2,) at one point ``z`` (2,) of the stream function ``psi``."""
    g = jacrev(psi, argnums=1)(params, z)
    return torch.stack([g[1], -g[0]])


def navier_stokes_residual(velocity: Callable, pressure: Callable, params, z: torch.Tensor,
                           nu: torch.Tensor) -> torch.Tensor:
    """Steady incompressible momentum residual (2,) at one point ``z``:
    ``(u . grad) u + grad p - nu laplace u`` for ``velocity(params, z) -> (2,)`` and the kinematic
    pressure ``pressure(params, z) -> scalar``. (Continuity holds by construction.)"""
    vel, jac, hess = value_grad_hessian(velocity, params, z)  # jac[i, j] = d u_i / d z_j
    grad_p = jacrev(pressure, argnums=1)(params, z)
    return jac @ vel + grad_p - nu * (hess[:, 0, 0] + hess[:, 1, 1])
