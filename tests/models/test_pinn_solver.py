"""PINN deep ensemble: diffusivity recovery, batched == separate members, spread vs data, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inversa.models.solvers import FieldPosterior
from inversa.models.solvers.pinn import PINNEnsembleSolver


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: threads only contend


KAPPA = 0.1


def heat_solution(p):
    """u = exp(-2 kappa pi^2 t) sin(pi x) sin(pi y) solves u_t = kappa (u_xx + u_yy)."""
    return np.exp(-2 * KAPPA * math.pi ** 2 * p[:, 2]) * np.sin(math.pi * p[:, 0]) * np.sin(math.pi * p[:, 1])


def poisson_source(z):
    """f for u = sin(pi x) sin(pi y): -laplace u = 2 pi^2 u."""
    return 2 * math.pi ** 2 * torch.sin(math.pi * z[:, 0]) * torch.sin(math.pi * z[:, 1])


def test_recovers_constant_diffusivity_from_clean_heat_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(300, 3))
    x[:, 2] *= 0.5
    # Prior median 0.2 (twice the truth) so the answer must come from the data and the PDE.
    solver = PINNEnsembleSolver("heat", members=4, width=32, depth=2, steps=800, lr=1e-2,
                                n_collocation=128, pde_weight=10.0, parameter_init=0.2,
                                parameter_prior_std=0.2, seed=0)
    solver.fit(x, heat_solution(x), 1e-2, domain=[(0, 1), (0, 1), (0, 0.5)])
    info = solver.info
    assert info["parameter"] == "kappa"
    assert abs(info["parameter_mean"] - KAPPA) < 0.10 * KAPPA
    assert all(abs(k - KAPPA) < 0.15 * KAPPA for k in info["parameter_members"])
    assert len(info["parameter_members"]) == 4 and info["seconds"] > 0
    post = solver.predict_grid(np.linspace(0, 1, 9), np.linspace(0, 1, 7), ts=[0.0, 0.25])
    assert isinstance(post, FieldPosterior) and post.mean.shape == (2, 7, 9)
    gt, gy, gx = np.meshgrid([0.0, 0.25], np.linspace(0, 1, 7), np.linspace(0, 1, 9), indexing="ij")
    truth = heat_solution(np.column_stack([gx.ravel(), gy.ravel(), gt.ravel()])).reshape(post.mean.shape)
    # Field amplitude 1; no boundary data is given, so the edges are least constrained.
    assert np.max(np.abs(post.mean - truth)) < 0.08
    assert np.sqrt(np.mean((post.mean - truth) ** 2)) < 0.03


@pytest.mark.parametrize("pde", ["heat", "poisson"])
def test_batched_ensemble_equals_separate_members(pde):
    dim = 3 if pde == "heat" else 2
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(30, dim))
    y = np.sin(x.sum(axis=1))
    source = poisson_source if pde == "poisson" else None
    solver = PINNEnsembleSolver(pde, members=3, width=16, depth=2, steps=3, dtype=torch.float64, seed=3)
    solver.fit(x, y, 0.1, source=source)
    z = torch.as_tensor(rng.uniform(size=(20, dim)), dtype=torch.float64)
    f = poisson_source(z) if pde == "poisson" else torch.zeros(20, dtype=torch.float64)
    with torch.no_grad():
        u_batched = solver.ensemble_fields(solver.params, z)
    r_batched = solver.ensemble_residuals(solver.params, z, f).detach()
    # The members share no weights: the three fields must differ.
    assert float((u_batched[0] - u_batched[1]).abs().max()) > 1e-3

    for m, net in enumerate(solver.member_modules()):
        # Independent path: the module called directly, derivatives by torch.autograd.grad.
        zz = z.clone().requires_grad_(True)
        zs = (zz - solver._centre) / solver._scale
        u = solver._y_mean + solver._y_scale * net(zs)
        (g,) = torch.autograd.grad(u.sum(), zz, create_graph=True)
        lap = sum(torch.autograd.grad(g[:, i].sum(), zz, retain_graph=True)[0][:, i] for i in range(2))
        if pde == "heat":
            r = g[:, 2] - torch.exp(net.log_parameter) * lap
        else:
            r = -lap - f
        np.testing.assert_allclose(u_batched[m].numpy(), u.detach().numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(r_batched[m].numpy(), r.detach().numpy(), rtol=0, atol=1e-6)

    # The vmapped loss is the per-member loss evaluated one member at a time.
    losses = solver.ensemble_loss(solver.params, z, f).detach()
    for m in range(solver.members):
        single = {k: v[m] for k, v in solver.params.items()}
        anchors = {k: v[m] for k, v in solver.anchors.items()}
        ref = solver.member_loss(single, anchors, solver._y_members[m], z, f).detach()
        assert abs(float(losses[m] - ref)) < 1e-6 * max(1.0, abs(float(ref)))


def _poisson_spread(n_obs: int) -> float:
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(n_obs, 2))
    y = np.sin(math.pi * x[:, 0]) * np.sin(math.pi * x[:, 1]) + 0.05 * rng.standard_normal(n_obs)
    # The residual scales with f (2 pi^2 ~ 20 times the field), so a weight of 0.1 still makes
    # the PDE term comparable to the data term.
    solver = PINNEnsembleSolver("poisson", members=4, width=24, depth=2, steps=300, lr=1e-2,
                                n_collocation=64, pde_weight=0.1, seed=5)
    solver.fit(x, y, 0.05, source=poisson_source, domain=[(0, 1), (0, 1)])
    grid = np.linspace(0, 1, 15)
    return float(solver.predict_grid(grid, grid).std.mean())


def test_ensemble_spread_shrinks_with_more_observations():
    few, many = _poisson_spread(20), _poisson_spread(200)
    # Measured: 0.026 with 20 observations, 0.009 with 200.
    assert many < 0.6 * few, (few, many)


def test_bad_input_names_argument_and_expectation():
    x = np.random.default_rng(0).uniform(size=(10, 3))
    y = np.ones(10)
    with pytest.raises(ValueError, match=r"'pde': expected one of"):
        PINNEnsembleSolver("wave")
    with pytest.raises(ValueError, match=r"'members': expected an integer >= 2"):
        PINNEnsembleSolver("heat", members=1)
    solver = PINNEnsembleSolver("heat", members=2, steps=1)
    with pytest.raises(RuntimeError, match="call fit"):
        solver.predict(x)
    with pytest.raises(ValueError, match=r"PINNEnsembleSolver.fit: argument 'x': expected shape \(n, 3\)"):
        solver.fit(x[:, :2], y, 0.1)
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"argument 'y': expected finite values, got 1 NaN"):
        solver.fit(x, bad, 0.1)
    with pytest.raises(ValueError, match=r"argument 'y': expected shape \(10,\)"):
        solver.fit(x, y[:5], 0.1)
    with pytest.raises(ValueError, match=r"'y_noise_std': expected finite values > 0"):
        solver.fit(x, y, 0.0)
    with pytest.raises(ValueError, match=r"'domain': expected 3 finite \(low, high\) pairs"):
        solver.fit(x, y, 0.1, domain=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match=r"'source': expected a number or a callable"):
        PINNEnsembleSolver("poisson", members=2, steps=1).fit(x[:, :2], y, 0.1)
    with pytest.raises(ValueError, match=r"'y_noise_std': expected the observation noise std"):
        solver.fit(x, y)  # the ensemble does not learn the noise
    with pytest.raises(ValueError, match=r"'source': expected a callable returning a tensor of shape"):
        PINNEnsembleSolver("poisson", members=2, steps=1).fit(x[:, :2], y, 0.1, source=lambda z: z)
    solver.fit(x, y, 0.1)
    with pytest.raises(ValueError, match=r"'ts': expected a non-empty 1-D array of times"):
        solver.predict_grid([0.0, 1.0], [0.0, 1.0])


def test_recovers_constant_darcy_conductivity():
    k_true = 2.0

    def source(z):  # -div(k grad u) = f for u = sin(pi x) sin(pi y) and constant k
        return k_true * poisson_source(z)

    rng = np.random.default_rng(3)
    x = rng.uniform(size=(200, 2))
    y = np.sin(math.pi * x[:, 0]) * np.sin(math.pi * x[:, 1]) + 0.01 * rng.standard_normal(200)
    solver = PINNEnsembleSolver("darcy", members=4, width=24, depth=2, steps=400, lr=1e-2,
                                n_collocation=64, pde_weight=0.1, parameter_init=1.0, seed=1)
    solver.fit(x, y, 0.01, source=source, domain=[(0, 1), (0, 1)])
    assert solver.info["parameter"] == "k"
    # Prior median 1.0, truth 2.0: measured members 1.990-2.008 (400 steps; 2.06-2.08 after 300).
    assert abs(solver.info["parameter_mean"] - k_true) < 0.05 * k_true
    assert solver.info["parameter_std"] < 0.05 * k_true
