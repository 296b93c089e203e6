"""Sparse variational GP solver: exactness at m = n, accuracy and coverage at n = 5,000,
determinism, tiling, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from inversa.models.solvers import ExactGPSolver, FieldPosterior, SparseGPSolver

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: threads only contend


def smooth_field(rng, n_features=300, lengthscale=0.15):
    """A smooth random field: random Fourier features of an RBF kernel (an approximate GP draw)."""
    omega = rng.standard_normal((n_features, 2)) / lengthscale
    phase = rng.uniform(0, 2 * np.pi, n_features)
    weights = rng.standard_normal(n_features) * np.sqrt(2.0 / n_features)
    return lambda x: np.cos(x @ omega.T + phase) @ weights


@pytest.mark.parametrize("kernel", ["matern52", "matern32", "rbf"])
def test_inducing_points_on_the_data_reproduce_the_exact_posterior(kernel):
    rng = np.random.default_rng(0)
    # Original units far from the standardised ones, so a missed offset or scale shows.
    x = np.column_stack([rng.uniform(500.0, 900.0, 120), rng.uniform(-3.0, -1.0, 120)])
    f = smooth_field(rng)((x - [500.0, -3.0]) / [400.0, 2.0])
    y = 40.0 + 25.0 * f + 2.0 * rng.standard_normal(120)
    hyper = {"lengthscale": [90.0, 0.6], "outputscale": 500.0, "noise": 4.0, "mean": 41.0}
    exact = ExactGPSolver(kernel=kernel).fit(x, y, optimise=False, initial=hyper)
    sparse = SparseGPSolver(kernel=kernel, inducing=x, jitter=1e-10).fit(x, y, optimise=False, initial=hyper)
    xq = np.column_stack([rng.uniform(450.0, 950.0, 200), rng.uniform(-3.2, -0.8, 200)])
    me, se = exact.predict(xq)
    ms, ss = sparse.predict(xq)
    # RBF Kuu with Z = X is ill conditioned: agreement to ~1e-5 of the data spread, not 1e-12.
    np.testing.assert_allclose(ms, me, rtol=0, atol=1e-4 * np.std(y))
    np.testing.assert_allclose(ss, se, rtol=1e-3, atol=1e-4 * np.std(y))
    # With Z = X the collapsed bound is the exact log marginal likelihood.
    assert sparse.info["collapsed_elbo"] == pytest.approx(exact.info["log_marginal_likelihood"], rel=2e-5)
    assert sparse.hyperparameters()["lengthscale"] == pytest.approx(hyper["lengthscale"], rel=1e-9)
    # With the noise included, the std grows by exactly the noise variance.
    _, sn = sparse.predict(xq, include_noise=True)
    np.testing.assert_allclose(sn ** 2, ss ** 2 + 4.0, rtol=1e-9)


def test_few_inducing_points_degrade_the_bound():
    """Sanity of the approximation: a 10-point sparse GP is a strictly worse fit than 120 points."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (120, 2))
    y = smooth_field(rng)(x) + 0.1 * rng.standard_normal(120)
    hyper = {"lengthscale": 0.2, "outputscale": 1.0, "noise": 0.01, "mean": 0.0}
    full = SparseGPSolver(inducing=x).fit(x, y, optimise=False, initial=hyper)
    few = SparseGPSolver(inducing=x[:10]).fit(x, y, optimise=False, initial=hyper)
    assert few.info["collapsed_elbo"] < full.info["collapsed_elbo"] - 10.0


def matern52(a, b, lengthscale):
    """Matern 5/2 kernel (unit variance) in numpy, for the prior draw."""
    s5r = cdist(a, b)
    s5r *= np.sqrt(5.0) / lengthscale
    k = np.square(s5r)  # (1 + s + s^2 / 3) exp(-s) with s = sqrt(5) r, in place: 5,400^2 entries
    k /= 3.0
    k += s5r
    k += 1.0
    np.negative(s5r, out=s5r)
    np.exp(s5r, out=s5r)
    k *= s5r
    return k


@pytest.fixture(scope="module")
def five_thousand():
    """5,000 noisy observations of a Matern 5/2 GP draw (plus 400 held-out latent values)."""
    rng = np.random.default_rng(2)
    pts = rng.uniform(0.0, 1.0, (5400, 2)) * [2.0, 1.0]
    K = matern52(pts, pts, 0.3)
    K[np.diag_indices(5400)] += 1e-8
    f = np.linalg.cholesky(K) @ rng.standard_normal(5400)
    del K
    noise = 0.1
    x, xt = pts[:5000] * 1000.0, pts[5000:] * 1000.0
    y = f[:5000] + noise * rng.standard_normal(5000)
    sparse = SparseGPSolver(inducing=150, batch_size=1000, min_steps=250, lr=0.05, seed=3).fit(x, y)
    return x, y, xt, f[5000:], noise, sparse


def test_sparse_mean_matches_exact_and_intervals_cover(five_thousand):
    x, y, xt, ft, noise, sparse = five_thousand
    exact = ExactGPSolver(fit_max_points=600, max_iter=60).fit(x, y)
    me, _ = exact.predict(xt, return_std=False)
    ms, ss = sparse.predict(xt)
    rmse_vs_exact = float(np.sqrt(np.mean((ms - me) ** 2)))
    assert rmse_vs_exact < 0.3 * noise, rmse_vs_exact
    rmse_vs_truth = float(np.sqrt(np.mean((ms - ft) ** 2)))
    assert rmse_vs_truth < 0.5 * noise, rmse_vs_truth
    # The learned noise is the true one.
    assert np.sqrt(sparse.hyperparameters()["noise"]) == pytest.approx(noise, rel=0.2)
    lo, hi = FieldPosterior(ms.reshape(1, -1), ss.reshape(1, -1)).interval(0.9)
    coverage = float(np.mean((ft >= lo[0]) & (ft <= hi[0])))
    assert 0.8 <= coverage <= 0.97, coverage
    # Tiled grid prediction equals point prediction.
    post = sparse.predict_grid(np.array([100.0, 700.0, 1900.0]), np.array([50.0, 900.0]), tile_size=2)
    m2, s2 = sparse.predict(np.array([[700.0, 900.0]]))
    assert post.mean.shape == (2, 3)
    assert post.mean[1, 1] == pytest.approx(m2[0], abs=1e-12)
    assert post.std[1, 1] == pytest.approx(s2[0], abs=1e-12)


def test_same_seed_same_result_other_seed_differs(five_thousand):
    x, y, xt, *_ = five_thousand
    kw = dict(inducing=30, batch_size=500, min_steps=20, epochs=0)
    a = SparseGPSolver(seed=7, **kw).fit(x[:1000], y[:1000]).predict(xt[:50])
    b = SparseGPSolver(seed=7, **kw).fit(x[:1000], y[:1000]).predict(xt[:50])
    c = SparseGPSolver(seed=8, **kw).fit(x[:1000], y[:1000]).predict(xt[:50])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.max(np.abs(a[0] - c[0])) > 1e-6


@pytest.mark.parametrize("args,kwargs,argument", [
    ((np.zeros((5, 3)), np.zeros(5)), {}, "'x'"),
    ((np.zeros((5, 2)), np.zeros(4)), {}, "'y'"),
    ((np.array([[0.0, 0.0], [1.0, np.nan], [2.0, 1.0]]), np.zeros(3)), {}, "'x'"),
    ((np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]), np.array([0.0, np.inf, 1.0])), {}, "'y'"),
    ((np.column_stack([np.arange(5.0), np.ones(5)]), np.arange(5.0)), {}, "'x'"),
    ((np.random.default_rng(0).uniform(size=(5, 2)), np.arange(5.0)), {"initial": {"scale": 1.0}}, "'initial'"),
])
def test_bad_input_names_the_argument(args, kwargs, argument):
    with pytest.raises(ValueError, match=f"SparseGPSolver.fit: argument {argument}"):
        SparseGPSolver(inducing=3, min_steps=1, epochs=0).fit(*args, **kwargs)


def test_bad_settings_and_unfitted_use():
    with pytest.raises(ValueError, match="argument 'kernel'"):
        SparseGPSolver(kernel="cubic")
    with pytest.raises(ValueError, match="argument 'inducing'"):
        SparseGPSolver(inducing=0)
    with pytest.raises(ValueError, match="argument 'inducing'"):
        SparseGPSolver(inducing=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="argument 'batch_size'"):
        SparseGPSolver(batch_size=0)
    with pytest.raises(ValueError, match="argument 'lr'"):
        SparseGPSolver(lr=0.0)
    with pytest.raises(ValueError, match="at least as many observations as inducing points"):
        SparseGPSolver(inducing=50).fit(np.random.default_rng(0).uniform(size=(10, 2)), np.arange(10.0))
    with pytest.raises(RuntimeError, match="call fit first"):
        SparseGPSolver().predict(np.zeros((1, 2)))
    s = SparseGPSolver(inducing=3, min_steps=1, epochs=0).fit(np.random.default_rng(0).uniform(size=(6, 2)),
                                                               np.arange(6.0))
    with pytest.raises(ValueError, match="SparseGPSolver.predict: argument 'xq'"):
        s.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="SparseGPSolver.predict_grid: argument 'ys'"):
        s.predict_grid(np.arange(3.0), np.zeros((2, 2)))
