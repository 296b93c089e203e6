"""Physics-informed GP (-k laplace u = f as pseudo-observations): kernel derivatives, closed form,
reproducible re-conditioning, accuracy against the plain GP on a Darcy study, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from inversa.data.synthetic_fields import simulate_darcy_study
from inversa.models.solvers import ExactGPSolver, PhysicsGPSolver
from inversa.models.solvers.gp_physics import rbf_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: threads only contend

Z90 = norm.ppf(0.95)


def sine_source(p):
    """f = 2 pi^2 sin(pi x) sin(pi y): with k, the exact u is sin(pi x) sin(pi y) / k on the unit square."""
    return 2 * math.pi ** 2 * np.sin(math.pi * p[:, 0]) * np.sin(math.pi * p[:, 1])


# ---------------------------------------------------------------- numpy reference kernels

def np_blocks(a, b, ls, s):
    """Kernel and its Laplacian covariances in numpy, written per axis from the 1-D derivatives
    of exp(-t^2 / 2l^2): g'' = (t^2/l^4 - 1/l^2) g, g'''' = (t^4/l^8 - 6 t^2/l^6 + 3/l^4) g."""
    d = a[:, None, :] - b[None, :, :]
    ls = np.asarray(ls, dtype=np.float64)
    k = s * np.exp(-0.5 * np.sum((d / ls) ** 2, axis=-1))
    second = [d[..., i] ** 2 / ls[i] ** 4 - 1 / ls[i] ** 2 for i in range(2)]
    fourth = [d[..., i] ** 4 / ls[i] ** 8 - 6 * d[..., i] ** 2 / ls[i] ** 6 + 3 / ls[i] ** 4 for i in range(2)]
    lap = sum(second)
    bilap = lap ** 2 - sum(g * g for g in second) + sum(fourth)
    return k, -k * lap, k * bilap


# ---------------------------------------------------------------- kernel identities

def test_laplacian_covariances_match_finite_differences():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(9, 2))
    b = rng.uniform(-1, 1, size=(7, 2))
    ls = torch.tensor([0.7, 1.3], dtype=torch.float64)   # anisotropic: catches a swapped axis
    s = 2.5
    T = lambda v: torch.from_numpy(v)  # noqa: E731

    def block(which, p, q):
        return rbf_blocks(T(p), T(q), ls, s, which).numpy()

    h = 1e-3
    shifts = [np.array([h, 0.0]), np.array([0.0, h])]

    def fd_laplace_b(which):
        """5-point Laplacian in the column points b of the block."""
        centre = block(which, a, b)
        return sum((block(which, a, b + e) - 2 * centre + block(which, a, b - e)) / h ** 2 for e in shifts)

    def fd_laplace_a(which):
        centre = block(which, a, b)
        return sum((block(which, a + e, b) - 2 * centre + block(which, a - e, b)) / h ** 2 for e in shifts)

    ul, ll = block("ul", a, b), block("ll", a, b)
    # cov(u(a), -laplace u(b)) = -laplace_b k
    np.testing.assert_allclose(ul, -fd_laplace_b("uu"), rtol=0, atol=1e-5 * np.abs(ul).max())
    # cov(-laplace u(a), -laplace u(b)) = -laplace_a cov(u(a), -laplace u(b))
    np.testing.assert_allclose(ll, -fd_laplace_a("ul"), rtol=0, atol=1e-5 * np.abs(ll).max())
    # and the closed forms agree with the per-axis numpy reference used below
    k_np, ul_np, ll_np = np_blocks(a, b, ls.numpy(), s)
    np.testing.assert_allclose(block("uu", a, b), k_np, rtol=1e-12)
    np.testing.assert_allclose(ul, ul_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ll, ll_np, rtol=1e-12, atol=1e-12)
    # joint covariance of (u, -laplace u) is a covariance: symmetric positive semi-definite
    pts = np.vstack([a, b])
    K = np.block([[block("uu", pts, pts), block("ul", pts, pts)],
                  [block("ul", pts, pts).T, block("ll", pts, pts)]])
    np.testing.assert_allclose(K, K.T, atol=1e-10 * np.abs(K).max())
    assert np.linalg.eigvalsh(K).min() > -1e-8 * np.abs(K).max()


# ---------------------------------------------------------------- closed-form conditioning

@pytest.mark.parametrize("with_data", [False, True])
def test_fixed_hyperparameters_match_closed_form(with_data):
    """Original units far from the standardised ones (offset domain, 200 m wide, k = 2.5)."""
    rng = np.random.default_rng(3)
    dom = [(100.0, 300.0), (-50.0, 50.0)]
    k = 2.5
    source = lambda p: 1e-3 * (1.0 + np.cos((p[:, 0] - 100.0) / 60.0))  # noqa: E731
    hp = {"lengthscale": [70.0, 45.0], "outputscale": 4.0, "noise": 0.01, "mean": 0.5}
    pde_noise = 2e-5
    solver = PhysicsGPSolver(n_collocation=40, pde_noise=pde_noise, seed=5, n_boundary=24, k=k)
    if with_data:
        x = rng.uniform(0, 1, size=(12, 2)) * [200.0, 100.0] + [100.0, -50.0]
        y = 1.0 + 0.3 * rng.standard_normal(12)
        sd = rng.uniform(0.05, 0.2, size=12)
        boundary = lambda p: 0.1 * (p[:, 0] - 100.0) / 200.0  # noqa: E731
    else:
        x, y, sd, boundary = np.empty((0, 2)), np.empty(0), None, None
    solver.fit(x, y, sd, source=source, domain=dom, boundary=boundary, optimise=False, initial=hp)
    assert solver.hyperparameters()["lengthscale"] == pytest.approx(hp["lengthscale"], rel=1e-12)
    assert solver.hyperparameters()["noise"] == pytest.approx(hp["noise"], rel=1e-12)

    # Independent numpy construction of the joint Gaussian of (observations, pseudo-observations).
    xc = solver.collocation_points(dom)
    assert xc.shape == (40, 2) and np.all((xc[:, 0] > 100) & (xc[:, 0] < 300) & (np.abs(xc[:, 1]) < 50))
    xu, yu, nu = x, y, (np.zeros(0) if sd is None else sd ** 2 + hp["noise"])
    if with_data:
        from inversa.models.solvers.gp_physics import perimeter_points
        xb = perimeter_points(dom, 24)
        xu, yu = np.vstack([x, xb]), np.concatenate([y, boundary(xb)])
        nu = np.concatenate([nu, np.full(24, hp["noise"])])
    Kuu, _, _ = np_blocks(xu, xu, hp["lengthscale"], hp["outputscale"])
    _, Kul, _ = np_blocks(xu, xc, hp["lengthscale"], hp["outputscale"])
    _, _, Kll = np_blocks(xc, xc, hp["lengthscale"], hp["outputscale"])
    K = np.block([[Kuu + np.diag(nu), Kul], [Kul.T, Kll + (pde_noise / k) ** 2 * np.eye(40)]])
    r = np.concatenate([yu - hp["mean"], source(xc) / k])
    xq = rng.uniform(0, 1, size=(30, 2)) * [200.0, 100.0] + [100.0, -50.0]
    Kqu, _, _ = np_blocks(xq, xu, hp["lengthscale"], hp["outputscale"])
    _, Kqc, _ = np_blocks(xq, xc, hp["lengthscale"], hp["outputscale"])
    Kq = np.hstack([Kqu, Kqc])
    mean_ref = hp["mean"] + Kq @ np.linalg.solve(K, r)
    var_ref = hp["outputscale"] - np.einsum("ij,ji->i", Kq, np.linalg.solve(K, Kq.T))

    mean, std = solver.predict(xq)
    np.testing.assert_allclose(mean, mean_ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(std ** 2, var_ref, rtol=0, atol=1e-8)
    # the physics alone moves the mean away from the prior mean: the test is not vacuous
    assert np.abs(mean - hp["mean"]).max() > 0.05
    assert var_ref.max() < 0.5 * hp["outputscale"]
    _, logdet = np.linalg.slogdet(K)
    lml = -0.5 * r @ np.linalg.solve(K, r) - 0.5 * logdet - 0.5 * r.size * math.log(2 * math.pi)
    assert solver.info["log_marginal_likelihood"] == pytest.approx(lml, abs=1e-6)


def test_boundary_as_points_equals_boundary_as_function():
    from inversa.models.solvers.gp_physics import perimeter_points

    dom = [(0.0, 2.0), (0.0, 1.0)]
    g = lambda p: p[:, 0] * p[:, 1]  # noqa: E731
    pts = perimeter_points(dom, 20)
    # the perimeter points lie on the edges, equally spaced by arc length (perimeter 6, step 0.3)
    on_edge = np.isclose(pts[:, 0], 0) | np.isclose(pts[:, 0], 2) | np.isclose(pts[:, 1], 0) | np.isclose(pts[:, 1], 1)
    assert on_edge.all() and np.allclose(pts[1] - pts[0], [0.3, 0.0])
    hp = {"lengthscale": 0.5, "outputscale": 1.0, "noise": 1e-4, "mean": 0.0}
    common = dict(source=1.0, domain=dom, optimise=False, initial=hp)
    xq = np.random.default_rng(0).uniform(0, 1, size=(25, 2)) * [2, 1]
    a = PhysicsGPSolver(n_collocation=30, n_boundary=20).fit(np.empty((0, 2)), None, boundary=g, **common)
    b = PhysicsGPSolver(n_collocation=30).fit(np.empty((0, 2)), [], boundary=(pts, g(pts)), **common)
    (ma, sa), (mb, sb) = a.predict(xq), b.predict(xq)
    np.testing.assert_allclose(mb, ma, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sb, sa, rtol=0, atol=1e-12)
    # the boundary values are honoured at the boundary: posterior close to g there
    mean_b, _ = a.predict(pts)
    np.testing.assert_allclose(mean_b, g(pts), atol=0.02)


# ---------------------------------------------------------------- the Darcy study

@pytest.fixture(scope="module")
def darcy():
    obs, truth = simulate_darcy_study(n=64, seed=0, n_sensors=15, noise_sigma=0.01, coefficient="constant",
                                      source="sine", k_value=1.0)
    x = np.column_stack([obs["x"].values, obs["y"].values])
    return x, obs["value"].values, truth


@pytest.fixture(scope="module")
def physics_fit(darcy):
    x, y, _ = darcy
    return PhysicsGPSolver(n_collocation=128, seed=0, k=1.0).fit(x, y, source=sine_source, domain=[(0, 1), (0, 1)],
                                                               boundary=0.0)


def grid_scores(post, u):
    lo, hi = post.interval(0.9)
    return float(np.sqrt(np.mean((post.mean - u) ** 2))), float(np.mean((u >= lo) & (u <= hi)))


def test_physics_beats_plain_gp_on_darcy(darcy, physics_fit):
    """15 sensors, u = sin(pi x) sin(pi y): measured RMSE 0.0011 (physics) vs 0.084 (plain RBF GP);
    90 % coverage on the 64 x 64 grid 0.93 (band required: 0.75-1.0)."""
    x, y, truth = darcy
    u, xs, ys = truth["u"].values, truth["x"].values, truth["y"].values
    rmse_phys, cover_phys = grid_scores(physics_fit.predict_grid(xs, ys), u)
    rmse_plain, _ = grid_scores(ExactGPSolver(kernel="rbf").fit(x, y).predict_grid(xs, ys), u)
    assert rmse_phys < 0.5 * rmse_plain
    assert rmse_phys < 0.01
    assert 0.75 <= cover_phys <= 1.0
    info = physics_fit.info
    assert info["n_collocation"] == 128 and info["n_boundary"] == 64 and info["n"] == 15
    assert info["pde_noise"] == pytest.approx(1e-3 * np.sqrt(np.mean(sine_source(
        physics_fit.collocation_points([(0, 1), (0, 1)])) ** 2)), rel=1e-12)
    assert info["seconds"] > 0 and np.isfinite(info["log_marginal_likelihood"])


def test_optimised_hyperparameters_reproduce_posterior_and_beat_defaults(darcy, physics_fit):
    """The pipeline stores hyperparameters() as JSON and re-conditions with optimise=False."""
    import json

    x, y, _ = darcy
    hp = json.loads(json.dumps(physics_fit.hyperparameters()))
    again = PhysicsGPSolver(n_collocation=128, seed=0, k=1.0).fit(x, y, source=sine_source, domain=[(0, 1), (0, 1)],
                                                                boundary=0.0, optimise=False, initial=hp)
    xq = np.random.default_rng(1).uniform(0, 1, size=(200, 2))
    m1, s1 = physics_fit.predict(xq)
    m2, s2 = again.predict(xq, tile_size=17)     # tiles of another size: same numbers
    np.testing.assert_allclose(m2, m1, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(s2, s1, rtol=1e-6, atol=1e-12)  # a variance is a difference: cancellation
    assert again.info["log_marginal_likelihood"] == pytest.approx(physics_fit.info["log_marginal_likelihood"],
                                                                  rel=1e-9)
    default = PhysicsGPSolver(n_collocation=128, seed=0).fit(x, y, source=sine_source, domain=[(0, 1), (0, 1)],
                                                           boundary=0.0, optimise=False)
    assert physics_fit.info["log_marginal_likelihood"] > default.info["log_marginal_likelihood"] + 1.0


def test_darcy_coefficient_scales_the_solution():
    """k = 4: u = sin sin / 4. Conditioning with the right k is accurate; with k = 1 it is not."""
    obs, truth = simulate_darcy_study(n=33, seed=2, n_sensors=8, noise_sigma=0.002, coefficient="constant",
                                      source="sine", k_value=4.0)
    x = np.column_stack([obs["x"].values, obs["y"].values])
    xs, ys, u = truth["x"].values, truth["y"].values, truth["u"].values
    hp = {"lengthscale": 0.4, "outputscale": 0.1, "noise": 1e-5, "mean": 0.0}
    errors = {}
    for k in (4.0, 1.0):
        s = PhysicsGPSolver(n_collocation=64, k=k).fit(x, obs["value"].values, source=sine_source,
                                                        domain=[(0, 1), (0, 1)], boundary=0.0, optimise=False,
                                                        initial=hp)
        errors[k] = grid_scores(s.predict_grid(xs, ys), u)[0]
    assert errors[4.0] < 0.005 < 0.02 < errors[1.0]


# ---------------------------------------------------------------- bad input

def _fit(**kw):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(6, 2))
    k = kw.pop("k", 1.0)
    args = dict(source=1.0, domain=[(0, 1), (0, 1)], optimise=False)
    args.update(kw)
    return PhysicsGPSolver(n_collocation=8, k=k).fit(x, np.sin(x[:, 0]), **args)


@pytest.mark.parametrize("kw,pattern", [
    (dict(source=lambda p: np.ones((p.shape[0], 1))), r"'source'.*shape \(8,\).*got \(8, 1\)"),
    (dict(source=lambda p: np.ones(p.shape[0] + 1)), r"'source'.*shape \(8,\).*got \(9,\)"),
    (dict(source=lambda p: np.full(p.shape[0], np.nan)), r"'source'.*finite values.*8 NaN"),
    (dict(source="f"), r"'source'.*a number or a callable"),
    (dict(source=None), r"'source'.*a number or a callable"),
    (dict(domain=[(0, 0), (0, 1)]), r"'domain'.*non-empty rectangle.*xmax > xmin"),
    (dict(domain=[(0, 1), (1, 0.5)]), r"'domain'.*non-empty rectangle"),
    (dict(domain=(0, 1, 0)), r"'domain'.*2 finite \(low, high\) pairs"),
    (dict(domain=(0, 1, 0, 1)), r"'domain'.*2 \(low, high\) pairs \[\[xmin, xmax\], \[ymin, ymax\]\], not a flat list"),
    (dict(boundary=lambda p: np.zeros(3)), r"'boundary'.*shape \(64,\)"),
    (dict(boundary=(np.zeros((3, 2)), np.zeros(3), 1.0)), r"'boundary'.*a pair \(points.*got a tuple of 3"),
    (dict(boundary=(np.zeros((3, 2)), np.zeros(4))), r"'boundary\[1\]'.*shape \(3,\)"),
    (dict(initial={"lengthscale": -1.0}), r"initial\['lengthscale'\].*positive"),
    (dict(initial={"variance": 1.0}), r"'initial'.*keys among"),
])
def test_bad_input_is_named(kw, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        _fit(**kw)
    assert str(err.value).startswith("PhysicsGPSolver.fit: argument")


@pytest.mark.parametrize("k", [0.0, -2.0, float("nan")])
def test_bad_coefficient_is_named(k):
    """The known coefficient k is a constructor setting (a method parameter), checked there."""
    with pytest.raises(ValueError, match=r"'k'.*positive finite number") as err:
        _fit(k=k)
    assert str(err.value).startswith("PhysicsGPSolver: argument")


def test_bad_observations_and_constructor():
    x = np.array([[0.1, 0.2], [0.1, 0.2], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"'x'.*distinct coordinates.*1 duplicated"):
        PhysicsGPSolver().fit(x, np.zeros(3), source=1.0)
    with pytest.raises(ValueError, match=r"'y'.*shape \(3,\)"):
        PhysicsGPSolver().fit(x[1:].tolist() + [[0.9, 0.9]], np.zeros(2), source=1.0)
    with pytest.raises(ValueError, match=r"'domain'.*when there are no observations"):
        PhysicsGPSolver().fit(np.empty((0, 2)), np.empty(0), source=1.0)
    with pytest.raises(ValueError, match=r"'y'.*no values when x has no points"):
        PhysicsGPSolver().fit(np.empty((0, 2)), [1.0], source=1.0, domain=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match=r"'pde_noise'.*positive"):
        PhysicsGPSolver(pde_noise=0.0)
    with pytest.raises(ValueError, match=r"'n_collocation'.*integer >= 1"):
        PhysicsGPSolver(n_collocation=0)
    with pytest.raises(RuntimeError, match="call fit first"):
        PhysicsGPSolver().predict(np.zeros((1, 2)))
