"""The conformance suite every ``LinearOperator`` must pass.

Samplers trust ``adjoint`` to be the transpose of ``forward`` and ``norm`` to bound the step
size; a silently wrong adjoint makes gradient methods converge to the wrong image, so these
checks are shared by every operator rather than written once per operator. Each check takes
a factory ``make(dtype, device) -> LinearOperator`` (so it can build fresh instances in any
precision or on any device) and raises ``AssertionError`` with the measured error when the
operator falls short. ``check_cpu_gpu_agreement`` raises ``unittest.SkipTest`` (which pytest
reports as a skip) when there is no CUDA device. The module has no test-framework dependency.
"""

from __future__ import annotations

import math
import unittest
from typing import Callable

import torch

from inversa.models.physics.base import LinearOperator

OperatorFactory = Callable[[torch.dtype, torch.device], LinearOperator]

# |<Ax, y> - <x, A^T y>| / |<Ax, y>|: the bounds the project promises.
ADJOINT_TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-3}
# Relative error of identities that only rounding should disturb.
ROUNDING_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
DENSE_LIMIT = 4096  # largest in/out size for which the dense matrix is formed


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape, dtype, device, seed) -> torch.Tensor:
    return torch.randn(shape, generator=_generator(seed), dtype=torch.float64).to(dtype=dtype, device=device)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(torch.linalg.vector_norm(b.double())), 1e-300)
    return float(torch.linalg.vector_norm((a - b).double())) / scale


def _make(make: OperatorFactory, dtype: torch.dtype, device: torch.device | str) -> LinearOperator:
    op = make(dtype, torch.device(device))
    if not isinstance(op, LinearOperator):
        raise AssertionError(f"factory returned {type(op).__name__}, not a LinearOperator")
    return op


def check_shapes(make: OperatorFactory, dtype=torch.float64, device="cpu", batch: int = 3) -> None:
    """Batch-first shapes, dtype preserved, and a wrong shape refused."""
    op = _make(make, dtype, device)
    x = _randn((batch, *op.in_shape), dtype, device, 1)
    y = op(x)
    assert tuple(y.shape) == (batch, *op.out_shape), f"forward gave {tuple(y.shape)}, expected {(batch, *op.out_shape)}"
    assert y.dtype == dtype, f"forward changed dtype {dtype} -> {y.dtype}"
    z = op.adjoint(y)
    assert tuple(z.shape) == (batch, *op.in_shape), f"adjoint gave {tuple(z.shape)}, expected {(batch, *op.in_shape)}"
    assert z.dtype == dtype, f"adjoint changed dtype {dtype} -> {z.dtype}"
    try:
        op(x.reshape(batch, -1)[:, :-1])
    except (ValueError, TypeError):
        pass
    else:
        raise AssertionError("forward accepted an input of the wrong shape")


def adjoint_error(op: LinearOperator, dtype=torch.float64, device="cpu", batch: int = 2, seed: int = 0) -> float:
    """Dot-product test ``|<Ax, y> - <x, A^T y>| / |<Ax, y>|``.

    ``y`` is ``Ax`` plus an independent random vector of the same norm, so ``<Ax, y>`` is of
    the order of ``||Ax||^2`` and cannot vanish by chance, while a wrong adjoint still has to
    act on a generic vector.
    """
    x = _randn((batch, *op.in_shape), dtype, device, seed)
    ax = op(x)
    noise = _randn(ax.shape, dtype, device, seed + 1)
    y = ax + noise * (torch.linalg.vector_norm(ax) / torch.linalg.vector_norm(noise))
    lhs = torch.sum(ax.double() * y.double())
    rhs = torch.sum(x.double() * op.adjoint(y).double())
    return float(abs(lhs - rhs) / abs(lhs))


def check_adjoint(make: OperatorFactory, dtype=torch.float64, device="cpu") -> None:
    op = _make(make, dtype, device)
    for seed in (0, 10):
        err = adjoint_error(op, dtype, device, seed=seed)
        assert err < ADJOINT_TOLERANCE[dtype], f"dot-product test: relative error {err:.3e} >= {ADJOINT_TOLERANCE[dtype]:.0e} in {dtype}"


def check_linearity(make: OperatorFactory, dtype=torch.float64, device="cpu") -> None:
    op = _make(make, dtype, device)
    tol = ROUNDING_TOLERANCE[dtype] * 10
    x, z = (_randn((2, *op.in_shape), dtype, device, s) for s in (2, 3))
    a, b = 1.7, -0.4
    for apply, u, v in ((op.forward, x, z), (op.adjoint, op(z), op(x) + 0.3 * op(z))):
        lhs = apply(a * u + b * v)
        rhs = a * apply(u) + b * apply(v)
        err = _rel(lhs, rhs)
        assert err < tol, f"linearity of {apply.__name__}: relative error {err:.3e} >= {tol:.0e}"


def check_batch_equivalence(make: OperatorFactory, dtype=torch.float64, device="cpu", batch: int = 3) -> None:
    """A batch of B gives the same as B single calls, for forward and adjoint."""
    op = _make(make, dtype, device)
    tol = ROUNDING_TOLERANCE[dtype] * 10
    x = _randn((batch, *op.in_shape), dtype, device, 4)
    y = _randn((batch, *op.out_shape), dtype, device, 5)
    for apply, inp in ((op.forward, x), (op.adjoint, y)):
        together = apply(inp)
        alone = torch.cat([apply(inp[i:i + 1]) for i in range(batch)])
        err = _rel(together, alone)
        assert err < tol, f"batch equivalence of {apply.__name__}: relative error {err:.3e} >= {tol:.0e}"


def check_normal(make: OperatorFactory, dtype=torch.float64, device="cpu") -> None:
    op = _make(make, dtype, device)
    x = _randn((2, *op.in_shape), dtype, device, 6)
    err = _rel(op.normal(x), op.adjoint(op(x)))
    tol = ROUNDING_TOLERANCE[dtype] * 10
    assert err < tol, f"normal(x) differs from adjoint(forward(x)): relative error {err:.3e}"


def dense_matrix(op: LinearOperator, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """``A`` as a dense ``(prod(out_shape), prod(in_shape))`` matrix, by applying it to a basis."""
    n_in, n_out = math.prod(op.in_shape), math.prod(op.out_shape)
    if max(n_in, n_out) > DENSE_LIMIT:
        raise ValueError(f"dense_matrix: operator is {n_out} x {n_in}; use an instance at most {DENSE_LIMIT} wide")
    basis = torch.eye(n_in, dtype=dtype, device=device).reshape(n_in, *op.in_shape)
    return op(basis).reshape(n_in, n_out).T


def check_dense_transpose(make: OperatorFactory, dtype=torch.float64, device="cpu") -> None:
    """The adjoint applied to a basis of the output space is exactly the transposed matrix."""
    op = _make(make, dtype, device)
    a = dense_matrix(op, dtype, device)
    n_out = a.shape[0]
    basis = torch.eye(n_out, dtype=dtype, device=device).reshape(n_out, *op.out_shape)
    at = op.adjoint(basis).reshape(n_out, -1)  # row k is A^T e_k, i.e. row k of A
    err = _rel(at, a)
    tol = ROUNDING_TOLERANCE[dtype] * 10
    assert err < tol, f"adjoint is not the transpose of the dense forward matrix: relative error {err:.3e}"


def check_norm(make: OperatorFactory, dtype=torch.float64, device="cpu", rtol: float = 1e-3) -> None:
    """``norm()`` matches the largest singular value of the dense matrix, and is cached."""
    op = _make(make, dtype, device)
    sigma = float(torch.linalg.matrix_norm(dense_matrix(op, torch.float64, device).cpu(), ord=2))
    estimate = op.norm(generator=_generator(7))
    assert abs(estimate - sigma) <= rtol * sigma, f"norm() = {estimate:.6g}, largest singular value {sigma:.6g}"
    assert op.norm() == estimate, "norm() is not cached: a second call changed the value"


def check_autograd(make: OperatorFactory, dtype=torch.float64, device="cpu") -> None:
    """d/dx 0.5||Ax||^2 = A^T A x and d/dy 0.5||A^T y||^2 = A A^T y through autograd."""
    op = _make(make, dtype, device)
    tol = ROUNDING_TOLERANCE[dtype] * 10
    x = _randn((2, *op.in_shape), dtype, device, 8).requires_grad_(True)
    (0.5 * op(x).pow(2).sum()).backward()
    err = _rel(x.grad, op.normal(x.detach()))
    assert err < tol, f"autograd through forward: gradient differs from A^T A x by {err:.3e}"
    y = _randn((2, *op.out_shape), dtype, device, 9).requires_grad_(True)
    (0.5 * op.adjoint(y).pow(2).sum()).backward()
    err = _rel(y.grad, op(op.adjoint(y.detach())))
    assert err < tol, f"autograd through adjoint: gradient differs from A A^T y by {err:.3e}"


def check_cpu_gpu_agreement(make: OperatorFactory, dtype=torch.float32, rtol: float | None = None) -> None:
    if not torch.cuda.is_available():
        raise unittest.SkipTest("no CUDA device")
    rtol = rtol if rtol is not None else ROUNDING_TOLERANCE[dtype] * 100
    cpu, gpu = _make(make, dtype, "cpu"), _make(make, dtype, "cuda")
    x = _randn((2, *cpu.in_shape), dtype, "cpu", 11)
    y = _randn((2, *cpu.out_shape), dtype, "cpu", 12)
    for name, a, b in (("forward", cpu(x), gpu(x.cuda()).cpu()),
                       ("adjoint", cpu.adjoint(y), gpu.adjoint(y.cuda()).cpu())):
        err = _rel(b, a)
        assert err < rtol, f"CPU and GPU {name} differ by {err:.3e} (relative)"


CHECKS: dict[str, Callable[..., None]] = {
    "shapes": check_shapes,
    "adjoint": check_adjoint,
    "linearity": check_linearity,
    "batch_equivalence": check_batch_equivalence,
    "normal": check_normal,
    "dense_transpose": check_dense_transpose,
    "norm": check_norm,
    "autograd": check_autograd,
}


def run_conformance(make: OperatorFactory, dtypes=(torch.float32, torch.float64), device="cpu") -> None:
    """Every check above for each dtype (the GPU comparison runs separately; it may skip)."""
    for dtype in dtypes:
        for check in CHECKS.values():
            check(make, dtype=dtype, device=device)
