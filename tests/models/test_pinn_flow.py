"""Incompressible-flow PINN ensemble (PIV gap filling), vector posteriors and solver state export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inversa.models.solvers import FieldPosterior, SolverState
from inversa.models.solvers.pde import navier_stokes_residual
from inversa.models.solvers.pinn import PINNEnsembleSolver


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: threads only contend


def lamb_oseen(p, centre=(0.1, -0.1), core=0.35, circulation=1.0, drift=(0.3, 0.1)):
    """Lamb-Oseen vortex (velocity u_theta = G / (2 pi r) (1 - exp(-r^2 / rc^2))) in a uniform drift."""
    dx, dy = p[:, 0] - centre[0], p[:, 1] - centre[1]
    r2 = dx ** 2 + dy ** 2
    swirl = circulation / (2 * math.pi * r2) * (1 - np.exp(-r2 / core ** 2))
    return np.column_stack([drift[0] - swirl * dy, drift[1] + swirl * dx])


GAP_CENTRE, GAP_RADIUS = np.array([0.35, 0.3]), 0.3


def _vortex_with_gap(seed: int = 0, n: int = 400):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    keep = np.linalg.norm(x - GAP_CENTRE, axis=1) >= GAP_RADIUS
    xo = x[keep]
    return xo, lamb_oseen(xo) + 0.01 * rng.standard_normal(xo.shape)


@pytest.fixture(scope="module")
def vortex_solver():
    xo, yo = _vortex_with_gap()
    solver = PINNEnsembleSolver("incompressible", members=4, width=32, depth=2, steps=300, lr=1e-2, seed=0)
    return solver.fit(xo, yo, 0.01, domain=[(-1, 1), (-1, 1)]), xo


def _divergence(solver: PINNEnsembleSolver, z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member divergence (M, n) and the largest velocity derivative, by plain autograd."""
    zz = torch.as_tensor(z, dtype=solver.dtype).requires_grad_(True)
    vel = solver.ensemble_fields({k: v.detach() for k, v in solver.params.items()}, zz)  # (M, n, 2)
    div, biggest = 0.0, 0.0
    for c in range(2):
        rows = [torch.autograd.grad(vel[m, :, c].sum(), zz, retain_graph=True)[0] for m in range(solver.members)]
        d = torch.stack(rows)  # (M, n, 2): d vel_c / d (x, y)
        div = div + d[:, :, c]
        biggest = max(biggest, float(d.abs().max()))
    return div, biggest


def test_predicted_velocity_is_divergence_free(vortex_solver):
    solver, _ = vortex_solver
    z = np.random.default_rng(1).uniform(-1, 1, size=(200, 2))
    div, biggest = _divergence(solver, z)
    # The velocity gradients are O(1) (a vortex of core 0.35), so a zero sum is not a trivial zero.
    assert biggest > 0.5
    assert float(div.abs().max()) < 1e-5
    assert float(div.mean(0).abs().max()) < 1e-5  # and so is the ensemble mean's


def test_fills_a_gap_in_a_vortex_with_larger_spread_inside_it(vortex_solver):
    solver, xo = vortex_solver
    rng = np.random.default_rng(2)
    q = rng.uniform(-1, 1, size=(3000, 2))
    inside = np.linalg.norm(q - GAP_CENTRE, axis=1) < 0.8 * GAP_RADIUS
    mean, std = solver.predict(q)
    assert mean.shape == std.shape == (3000, 2)
    truth = lamb_oseen(q)
    rmse_gap = float(np.sqrt(np.mean((mean[inside] - truth[inside]) ** 2)))
    # Measured: gap RMSE 0.007 against a field std of 0.18 (no observation inside the gap).
    assert rmse_gap < 0.1 * float(truth.std()), rmse_gap
    _, std_obs = solver.predict(xo)
    # Measured: mean std 0.0042 inside the gap, 0.0029 at the observations.
    assert std[inside].mean() > 1.2 * std_obs.mean(), (std[inside].mean(), std_obs.mean())

    xs, ys = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    post = solver.predict_grid(xs, ys)
    assert isinstance(post, FieldPosterior) and post.components == ("u", "v")
    assert post.mean.shape == post.std.shape == (7, 9, 2)
    gx, gy = np.meshgrid(xs, ys)
    m, s = solver.predict(np.column_stack([gx.ravel(), gy.ravel()]))
    np.testing.assert_array_equal(post.mean, m.reshape(7, 9, 2))
    lower, upper = post.interval(0.9)
    np.testing.assert_allclose(upper - lower, 2 * 1.6448536 * post.std, rtol=1e-6)


RE = 20.0
LAMBDA = RE / 2 - math.sqrt(RE ** 2 / 4 + 4 * math.pi ** 2)


def kovasznay_velocity(_, z):
    """Kovasznay (1948): an exact steady Navier-Stokes flow for nu = 1 / RE."""
    e = torch.exp(LAMBDA * z[0])
    return torch.stack([1 - e * torch.cos(2 * math.pi * z[1]),
                        LAMBDA / (2 * math.pi) * e * torch.sin(2 * math.pi * z[1])])


def kovasznay_pressure(_, z):
    return 0.5 * (1 - torch.exp(2 * LAMBDA * z[0]))


def test_navier_stokes_residual_vanishes_on_kovasznay_flow():
    z = torch.as_tensor(np.random.default_rng(3).uniform(-0.5, 0.5, size=(50, 2)), dtype=torch.float64)

    def r(nu):
        return torch.vmap(lambda zz: navier_stokes_residual(kovasznay_velocity, kovasznay_pressure, None, zz,
                                                            torch.tensor(nu, dtype=torch.float64)))(z)

    assert float(r(1 / RE).abs().max()) < 1e-10
    # A wrong viscosity leaves -(nu - 1/RE) laplace u, and laplace u of this flow is far from 0.
    assert float(r(2 / RE).abs().max()) > 0.1


def test_navier_stokes_ensemble_matches_independent_autograd():
    rng = np.random.default_rng(4)
    x = rng.uniform(-0.5, 0.5, size=(40, 2))
    y = kovasznay_velocity(None, torch.as_tensor(x.T)).T.numpy()
    solver = PINNEnsembleSolver("incompressible", navier_stokes=True, members=3, width=12, depth=2, steps=3,
                                n_collocation=16, dtype=torch.float64, parameter_init=0.1, seed=1)
    solver.fit(x, y, 0.05)
    assert solver.info["parameter"] == "nu" and len(solver.info["parameter_members"]) == 3
    assert len(set(solver.info["parameter_members"])) == 3  # each member its own prior draw
    z = torch.as_tensor(rng.uniform(-0.5, 0.5, size=(10, 2)), dtype=torch.float64)
    r_batched = solver.ensemble_residuals(solver.params, z, torch.zeros(10, dtype=torch.float64)).detach()
    assert r_batched.shape == (3, 10, 2)
    for m, net in enumerate(solver.member_modules()):
        # Independent path: module called directly, derivatives by torch.autograd.grad.
        zz = z.clone().requires_grad_(True)
        out = net((zz - solver._centre) / solver._scale)
        psi, p = solver._psi_scale * out[:, 0], solver._p_scale * out[:, 1]

        def d(f, i):
            return torch.autograd.grad(f.sum(), zz, create_graph=True)[0][:, i]

        u, v = solver._y_mean[0] + d(psi, 1), solver._y_mean[1] - d(psi, 0)
        nu = torch.exp(net.log_parameter)
        rx = u * d(u, 0) + v * d(u, 1) + d(p, 0) - nu * (d(d(u, 0), 0) + d(d(u, 1), 1))
        ry = u * d(v, 0) + v * d(v, 1) + d(p, 1) - nu * (d(d(v, 0), 0) + d(d(v, 1), 1))
        np.testing.assert_allclose(r_batched[m].numpy(), torch.stack([rx, ry], 1).detach().numpy(), atol=1e-9)
    losses = solver.ensemble_loss(solver.params, z, torch.zeros(10, dtype=torch.float64)).detach()
    single = {k: v[0] for k, v in solver.params.items()}
    anchors = {k: v[0] for k, v in solver.anchors.items()}
    ref = solver.member_loss(single, anchors, solver._y_members[0], z, torch.zeros(10, dtype=torch.float64)).detach()
    assert abs(float(losses[0] - ref)) < 1e-10

    fixed = PINNEnsembleSolver("incompressible", navier_stokes=True, nu=0.05, members=2, width=8, depth=1, steps=1)
    fixed.fit(x, y, 0.05)
    assert fixed.parameter_name is None and "log_parameter" not in fixed.params and fixed.info["nu"] == 0.05


def test_bad_flow_input_names_argument_and_expectation():
    x = np.random.default_rng(5).uniform(size=(10, 2))
    y = np.ones((10, 2))
    solver = PINNEnsembleSolver("incompressible", members=2, steps=1)
    with pytest.raises(ValueError, match=r"'y': expected shape \(10, 2\), one \(u, v\) vector per point, got \(10,\)"):
        solver.fit(x, y[:, 0], 0.1)
    with pytest.raises(ValueError, match=r"'y': expected shape \(10, 2\).*got \(10, 3\)"):
        solver.fit(x, np.ones((10, 3)), 0.1)
    with pytest.raises(ValueError, match=r"'y_noise_std': expected a scalar or shape \(10,\) or \(10, 2\)"):
        solver.fit(x, y, np.ones((10, 3)))
    with pytest.raises(ValueError, match=r"'y_noise_std': expected finite values > 0"):
        solver.fit(x, y, np.r_[np.ones(9), -1.0])
    # The flow has no source term: a given source is ignored (the FieldSolver contract), not used.
    small = dict(members=2, width=8, depth=1, steps=2, seed=1)
    plain = PINNEnsembleSolver("incompressible", **small).fit(x, y, 0.1)
    given = PINNEnsembleSolver("incompressible", **small).fit(x, y, 0.1, source=lambda z: z[:, 0])
    assert not plain.uses_source
    for a, b in zip(plain.predict(x), given.predict(x)):
        np.testing.assert_array_equal(a, b)
    for nu in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match=r"'nu': expected a finite kinematic viscosity > 0"):
            PINNEnsembleSolver("incompressible", navier_stokes=True, nu=nu)
    with pytest.raises(ValueError, match=r"'nu': expected None unless navier_stokes=True"):
        PINNEnsembleSolver("incompressible", nu=0.01)
    with pytest.raises(ValueError, match=r"'navier_stokes': expected False for pde='heat'"):
        PINNEnsembleSolver("heat", navier_stokes=True)
    with pytest.raises(ValueError, match=r"'input_gain': expected a finite number > 0"):
        PINNEnsembleSolver("incompressible", input_gain=0.0)


def _fitted(kind: str) -> tuple[PINNEnsembleSolver, list]:
    rng = np.random.default_rng(6)
    small = dict(members=3, width=8, depth=2, steps=5, n_collocation=16, seed=2)
    if kind == "heat":
        x = rng.uniform(size=(30, 3))
        return PINNEnsembleSolver("heat", **small).fit(x, np.sin(x.sum(1)), 0.1), [[0.1, 0.5], [0.2, 0.9], [0.0, 0.3]]
    if kind == "darcy":
        x = rng.uniform(size=(30, 2))
        solver = PINNEnsembleSolver("darcy", **small).fit(x, np.sin(x.sum(1)), 0.1, source=lambda z: z[:, 0] + 1.0)
        return solver, [[0.1, 0.5, 0.7], [0.2, 0.9]]
    x = rng.uniform(-1, 1, size=(30, 2))
    solver = PINNEnsembleSolver("incompressible", navier_stokes=kind == "navier-stokes", input_gain=3.0, **small)
    return solver.fit(x, lamb_oseen(x), 0.05), [[-0.5, 0.0, 0.5], [-0.2, 0.8]]


@pytest.mark.parametrize("kind", ["heat", "darcy", "incompressible", "navier-stokes"])
def test_state_round_trip_predicts_identically(kind, tmp_path):
    solver, axes = _fitted(kind)
    state = solver.state()
    arrays, meta = state.arrays, state.meta
    # Through the formats a store would use: one .npz for the arrays, JSON for the rest.
    np.savez(tmp_path / "state.npz", **arrays)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "state.npz") as f:
        loaded = {k: f[k] for k in f.files}
    again = PINNEnsembleSolver.from_state(loaded, json.loads((tmp_path / "meta.json").read_text()))
    q = np.random.default_rng(7).uniform(size=(25, solver.dim))
    for a, b in zip(solver.predict(q), again.predict(q)):
        np.testing.assert_array_equal(a, b)
    p1, p2 = solver.predict_grid(*axes), again.predict_grid(*axes)
    np.testing.assert_array_equal(p1.mean, p2.mean)
    np.testing.assert_array_equal(p1.std, p2.std)
    assert p1.components == p2.components and p2.info == p1.info
    assert float(np.abs(p1.std).max()) > 0  # members differ, so equality of std is not vacuous
    # The interface's restore: a fresh solver with the same settings reloads the same state.
    fresh = PINNEnsembleSolver(**meta["config"])
    restored = fresh.restore(SolverState(json.loads((tmp_path / "meta.json").read_text()), loaded))
    for a, b in zip(solver.predict(q), restored.predict(q)):
        np.testing.assert_array_equal(a, b)
    assert restored.noise_variance() == pytest.approx(solver.noise_variance(), rel=0)


def test_from_state_rejects_incomplete_state():
    solver, _ = _fitted("incompressible")
    state = solver.state()
    arrays, meta = state.arrays, state.meta
    with pytest.raises(ValueError, match=r"from_state: argument 'meta': expected a dict with format"):
        PINNEnsembleSolver.from_state(arrays, {"config": meta["config"]})
    missing = {k: v for k, v in arrays.items() if k != "y_mean"}
    with pytest.raises(ValueError, match=r"arrays\['y_mean'\]\": expected finite values of shape \(2,\), got missing"):
        PINNEnsembleSolver.from_state(missing, meta)
    wrong = dict(arrays, **{"param.net.0.weight": arrays["param.net.0.weight"][:2]})
    with pytest.raises(ValueError, match=r"param.net.0.weight.*expected finite values of shape \(3, 8, 2\)"):
        PINNEnsembleSolver.from_state(wrong, meta)


def test_field_posterior_component_axis():
    mean, std = np.zeros((4, 5, 2)), np.ones((4, 5, 2))
    post = FieldPosterior(mean, std, components=("u", "v"))
    lower, upper = post.interval(0.9)
    np.testing.assert_allclose(upper[..., 1], 1.6448536, rtol=1e-6)
    assert FieldPosterior(np.zeros((3, 4, 5, 2)), np.ones((3, 4, 5, 2)), components=["u", "v"]).components == ("u", "v")
    assert FieldPosterior(np.zeros((3, 4, 5)), np.ones((3, 4, 5))).components is None  # scalar (time, y, x)
    with pytest.raises(ValueError, match=r"with components \('u', 'v', 'w'\) expected \(ny, nx, 3\)"):
        FieldPosterior(mean, std, components=("u", "v", "w"))
    with pytest.raises(ValueError, match=r"expected \(ny, nx\) or \(time, ny, nx\) arrays"):
        FieldPosterior(mean[..., None], std[..., None])
    with pytest.raises(ValueError, match="components must be distinct"):
        FieldPosterior(mean, std, components=("u", "u"))


def test_minibatch_data_term_is_an_unbiased_estimate_of_the_full_one():
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, size=(24, 2))
    solver = PINNEnsembleSolver("incompressible", members=2, width=8, depth=1, steps=2, batch_size=6,
                                dtype=torch.float64, seed=4)
    solver.fit(x, lamb_oseen(x), 0.05)
    assert solver.info["batch_size"] == 6 and solver.info["n_observations"] == 24
    z, f = torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    with torch.no_grad():
        full = solver.ensemble_loss(solver.params, z, f)
        # Every observation as the batch: the same loss; the four disjoint batches average to it.
        assert torch.allclose(solver.ensemble_loss(solver.params, z, f, torch.arange(24)), full, rtol=1e-12)
        parts = [solver.ensemble_loss(solver.params, z, f, torch.arange(i, 24, 4)) for i in range(4)]
        assert torch.allclose(sum(parts) / 4, full, rtol=1e-12)
        assert float((parts[0] - parts[1]).abs().max()) > 1e-6 * float(full.abs().max())  # batches do differ
    with pytest.raises(ValueError, match=r"'batch_size': expected None \(all observations every step\) or an integer"):
        PINNEnsembleSolver("incompressible", batch_size=0)
