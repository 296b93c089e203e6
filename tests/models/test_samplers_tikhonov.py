import pytest
import torch

from inversa.models.physics.base import MatrixOperator
from inversa.models.samplers import REGISTRY
from inversa.models.samplers.cgls import Tikhonov


def problem(m=40, n=30, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=g, dtype=torch.float64)
    a[:, -5:] *= 1e-3  # ill-conditioned: regularisation matters
    op = MatrixOperator(a, in_shape=(5, 6), out_shape=(m,))
    y = torch.randn(batch, m, generator=g, dtype=torch.float64)
    return a, op, y


def exact(a, y, alpha_abs):
    n = a.shape[1]
    return torch.linalg.solve(a.T @ a + alpha_abs * torch.eye(n, dtype=a.dtype), a.T @ y.T).T


@pytest.mark.parametrize("alpha", [1e-4, 1e-2])
def test_cgls_solves_the_tikhonov_normal_equations(alpha):
    a, op, y = problem()
    s = Tikhonov(alpha=alpha, max_iter=200, tol=1e-12)
    result = s.sample(y, op)
    x = result.samples
    assert x.shape == (1, 3, 5, 6)
    expected = exact(a, y, alpha * op.norm() ** 2)
    torch.testing.assert_close(x[0].reshape(3, -1), expected, rtol=1e-7, atol=1e-9)
    assert result.nfe == 1 + 2 * result.iterations


def test_slices_do_not_depend_on_their_batch():
    _, op, y = problem()
    s = Tikhonov(alpha=1e-3, max_iter=15, tol=1e-8)  # stopped early: per-slice steps matter
    both = s.sample(y, op).samples[0]
    alone = s.sample(y[2:], op).samples[0]
    torch.testing.assert_close(both[2], alone[0], rtol=1e-10, atol=1e-12)


def test_warm_start_from_the_answer_stops_at_once():
    a, op, y = problem()
    cold = Tikhonov(alpha=1e-2, max_iter=200, tol=1e-10)
    cold_result = cold.sample(y, op)
    x = cold_result.samples[0]
    warm = Tikhonov(alpha=1e-2, max_iter=200, tol=1e-6, warm_start=True)
    warm_result = warm.sample(y, op, x0=x)
    again = warm_result.samples[0]
    torch.testing.assert_close(again, x, rtol=1e-6, atol=1e-8)
    assert warm_result.iterations <= 2 < cold_result.iterations
    with pytest.raises(ValueError, match="x0"):
        warm.sample(y, op, x0=x[:1])


def test_parameters_are_validated_and_registered():
    with pytest.raises(ValueError, match="alpha"):
        Tikhonov(alpha=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        Tikhonov(max_iter=0)
    assert REGISTRY["tikhonov"] is Tikhonov
    assert Tikhonov().deterministic
