"""Exact GP field solver: closed form, hyperparameter recovery, tiling, coverage, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from inversa.models.solvers import ExactGPSolver, FieldPosterior


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems: threads only contend


def matern52(a, b, lengthscale, outputscale):
    """Matern 5/2 ARD kernel in numpy, the reference the solver is checked against."""
    d = (a[:, None, :] - b[None, :, :]) / np.asarray(lengthscale)
    r = np.sqrt(np.sum(d * d, axis=-1))
    s5r = np.sqrt(5.0) * r
    return outputscale * (1 + s5r + 5.0 / 3.0 * r * r) * np.exp(-s5r)


def rbf(a, b, lengthscale, outputscale):
    d = (a[:, None, :] - b[None, :, :]) / np.asarray(lengthscale)
    return outputscale * np.exp(-0.5 * np.sum(d * d, axis=-1))


def matern32(a, b, lengthscale, outputscale):
    d = (a[:, None, :] - b[None, :, :]) / np.asarray(lengthscale)
    s3r = np.sqrt(3.0) * np.sqrt(np.sum(d * d, axis=-1))
    return outputscale * (1 + s3r) * np.exp(-s3r)


def draw_prior(rng, n, lengthscale, outputscale, noise, extent=(0.0, 1.0)):
    """Scattered points, a latent GP sample at them, and noisy observations."""
    x = rng.uniform(*extent, size=(n, 2))
    K = matern52(x, x, lengthscale, outputscale) + 1e-10 * np.eye(n)
    f = np.linalg.cholesky(K) @ rng.standard_normal(n)
    return x, f, f + np.sqrt(noise) * rng.standard_normal(n)


@pytest.mark.parametrize("kernel,kfun", [("matern52", matern52), ("matern32", matern32), ("rbf", rbf)])
def test_fixed_hyperparameters_match_closed_form(kernel, kfun):
    rng = np.random.default_rng(1)
    # Original units far from the standardised ones, so a missed offset or scale shows.
    x = rng.uniform(0, 1, size=(30, 2)) * [2000.0, 500.0] + [3e5, 7e6]
    y = 980.0 + 25.0 * np.sin(x[:, 0] / 400.0) + 5.0 * rng.standard_normal(30)
    xq = rng.uniform(0, 1, size=(50, 2)) * [2000.0, 500.0] + [3e5, 7e6]
    hp = {"lengthscale": [600.0, 250.0], "outputscale": 400.0, "noise": 9.0, "mean": 975.0}
    s = ExactGPSolver(kernel=kernel).fit(x, y, optimise=False, initial=hp)
    got = s.hyperparameters()
    np.testing.assert_allclose(got["lengthscale"], hp["lengthscale"], rtol=1e-10)
    assert got["outputscale"] == pytest.approx(400.0, rel=1e-10)
    assert got["noise"] == pytest.approx(9.0, rel=1e-10)
    assert got["mean"] == pytest.approx(975.0, rel=1e-12)

    K = kfun(x, x, hp["lengthscale"], hp["outputscale"]) + hp["noise"] * np.eye(30)
    Ks = kfun(xq, x, hp["lengthscale"], hp["outputscale"])
    mean_ref = hp["mean"] + Ks @ np.linalg.solve(K, y - hp["mean"])
    var_ref = hp["outputscale"] - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T))
    mean, std = s.predict(xq)
    np.testing.assert_allclose(mean, mean_ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(std ** 2, var_ref, rtol=0, atol=1e-4)
    # With observation noise the predictive variance is larger by exactly the noise variance.
    _, std_y = s.predict(xq, include_noise=True)
    np.testing.assert_allclose(std_y ** 2, var_ref + hp["noise"], rtol=0, atol=1e-4)
    # Log marginal likelihood in original units.
    sign, logdet = np.linalg.slogdet(K)
    r = y - hp["mean"]
    lml = -0.5 * r @ np.linalg.solve(K, r) - 0.5 * logdet - 15.0 * np.log(2 * np.pi)
    assert s.info["log_marginal_likelihood"] == pytest.approx(lml, abs=1e-6)


def test_sum_of_kernels_matches_closed_form_and_round_trips():
    """A two-term kernel is the sum of its terms; its hyperparameters restore the same posterior."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(40, 2)) * [2000.0, 500.0] + [3e5, 7e6]
    y = 10.0 * np.sin(x[:, 0] / 300.0) + 3.0 * np.cos(x[:, 1] / 40.0) + rng.standard_normal(40)
    xq = rng.uniform(0, 1, size=(25, 2)) * [2000.0, 500.0] + [3e5, 7e6]
    hp = {"lengthscale": [[900.0, 400.0], 60.0], "outputscale": [50.0, 4.0], "noise": 1.0, "mean": 0.5}
    s = ExactGPSolver(kernel="matern52+rbf").fit(x, y, optimise=False, initial=hp)
    got = s.hyperparameters()
    np.testing.assert_allclose(got["lengthscale"], [[900.0, 400.0], [60.0, 60.0]], rtol=1e-10)
    np.testing.assert_allclose(got["outputscale"], [50.0, 4.0], rtol=1e-10)

    def k(a, b):
        return matern52(a, b, [900.0, 400.0], 50.0) + rbf(a, b, [60.0, 60.0], 4.0)

    K = k(x, x) + np.eye(40)
    Ks = k(xq, x)
    mean, std = s.predict(xq)
    np.testing.assert_allclose(mean, 0.5 + Ks @ np.linalg.solve(K, y - 0.5), atol=1e-4)
    np.testing.assert_allclose(std ** 2, 54.0 - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T)), atol=1e-4)

    # Fitted hyperparameters handed back as ``initial`` rebuild the identical posterior.
    fitted = ExactGPSolver(kernel="matern52+matern52", max_iter=30).fit(x, y)
    ls = np.asarray(fitted.hyperparameters()["lengthscale"])
    assert ls.shape == (2, 2)
    rebuilt = ExactGPSolver(kernel="matern52+matern52").fit(x, y, optimise=False,
                                                            initial=fitted.hyperparameters())
    np.testing.assert_allclose(rebuilt.predict(xq)[0], fitted.predict(xq)[0], rtol=1e-9)
    with pytest.raises(ValueError, match="one per term"):
        ExactGPSolver(kernel="matern52+matern52").fit(x, y, optimise=False, initial={"outputscale": 3.0})


def test_sum_of_kernels_separates_two_scales():
    """Data from a long- plus a short-range field: the sum's likelihood beats one Matern's."""
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 4, size=(400, 2))
    K = matern52(x, x, [2.0, 2.0], 4.0) + matern52(x, x, [0.1, 0.1], 0.5) + 1e-9 * np.eye(400)
    y = np.linalg.cholesky(K) @ rng.standard_normal(400) + 0.05 * rng.standard_normal(400)
    one = ExactGPSolver(max_iter=60).fit(x, y)
    two = ExactGPSolver(kernel="matern52+matern52", max_iter=60).fit(x, y)
    assert two.info["log_marginal_likelihood"] > one.info["log_marginal_likelihood"] + 5
    ls = sorted(np.mean(two.hyperparameters()["lengthscale"], axis=1))
    assert ls[0] < 0.3 and ls[1] > 1.0


def test_known_noise_matches_closed_form():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, size=(30, 2))
    y = np.cos(x[:, 0]) + 0.1 * rng.standard_normal(30)
    sd = rng.uniform(0.05, 0.3, size=30)
    xq = rng.uniform(0, 10, size=(50, 2))
    hp = {"lengthscale": 2.0, "outputscale": 1.5, "mean": 0.2}
    s = ExactGPSolver().fit(x, y, y_noise_std=sd, optimise=False, initial=hp, learn_extra_noise=False)
    K = matern52(x, x, [2.0, 2.0], 1.5) + np.diag(sd ** 2)
    Ks = matern52(xq, x, [2.0, 2.0], 1.5)
    mean, std = s.predict(xq)
    np.testing.assert_allclose(mean, 0.2 + Ks @ np.linalg.solve(K, y - 0.2), atol=1e-4)
    np.testing.assert_allclose(std ** 2, 1.5 - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T)), atol=1e-4)


def test_marginal_likelihood_recovers_lengthscale_and_noise():
    rng = np.random.default_rng(3)
    x, _, y = draw_prior(rng, 300, lengthscale=[0.3, 0.3], outputscale=2.0, noise=0.05, extent=(0, 2))
    s = ExactGPSolver(seed=0).fit(x, y)
    hp = s.hyperparameters()
    np.testing.assert_allclose(hp["lengthscale"], [0.3, 0.3], rtol=0.25)
    assert hp["noise"] == pytest.approx(0.05, rel=0.3)
    assert s.info["iterations"] > 1
    # The optimum is better than the initial guess it started from.
    start = ExactGPSolver().fit(x, y, optimise=False)
    assert s.info["log_marginal_likelihood"] > start.info["log_marginal_likelihood"] + 10


def test_tiled_prediction_equals_untiled():
    rng = np.random.default_rng(4)
    x, _, y = draw_prior(rng, 200, [0.4, 0.2], 1.0, 0.01)
    s = ExactGPSolver(max_iter=20).fit(x, y)
    xs, ys = np.linspace(0, 1, 23), np.linspace(0, 1, 17)
    whole = s.predict_grid(xs, ys, tile_size=10_000)
    tiled = s.predict_grid(xs, ys, tile_size=37)  # 391 points: ragged last tile
    np.testing.assert_allclose(tiled.mean, whole.mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(tiled.std, whole.std, rtol=0, atol=1e-10)
    assert whole.mean.shape == (17, 23)
    # Grid orientation: row j, column i is the point (xs[i], ys[j]).
    m, sd = s.predict(np.array([[xs[5], ys[3]]]))
    assert whole.mean[3, 5] == pytest.approx(m[0], abs=1e-12)
    assert whole.std[3, 5] == pytest.approx(sd[0], abs=1e-12)


def test_interval_covers_held_out_latent_values():
    rng = np.random.default_rng(5)
    covered = []
    for _ in range(3):
        x, f, y = draw_prior(rng, 400, [0.25, 0.25], 1.0, 0.04)
        train, test = np.arange(250), np.arange(250, 400)
        s = ExactGPSolver().fit(x[train], y[train])
        mean, std = s.predict(x[test])
        post = FieldPosterior(mean.reshape(1, -1), std.reshape(1, -1))
        lo, hi = post.interval(0.9)
        covered.append(np.mean((f[test] >= lo[0]) & (f[test] <= hi[0])))
    coverage = float(np.mean(covered))
    assert 0.8 <= coverage <= 0.97, covered
    # The std is informative, not just wide: standardised errors have about unit spread.
    z = (f[test] - mean) / std
    assert 0.7 < np.std(z) < 1.4


def test_field_posterior_interval_and_shape_checks():
    p = FieldPosterior(np.zeros((2, 3)), np.ones((2, 3)))
    lo, hi = p.interval(0.9)
    np.testing.assert_allclose(hi, norm.ppf(0.95), rtol=1e-12)
    np.testing.assert_allclose(lo, -norm.ppf(0.95), rtol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        FieldPosterior(np.zeros((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        FieldPosterior(np.zeros((2, 3)), -np.ones((2, 3)))


@pytest.mark.parametrize("case,argument", [
    ("nan_x", "'x'"), ("nan_y", "'y'"), ("short_y", "'y'"), ("two_points", "'x'"),
    ("duplicates", "'x'"), ("x_shape", "'x'"), ("noise_len", "'y_noise_std'"), ("noise_neg", "'y_noise_std'"),
])
def test_bad_input_names_the_argument(case, argument):
    rng = np.random.default_rng(6)
    x = rng.uniform(size=(10, 2))
    y = rng.standard_normal(10)
    noise = None
    if case == "nan_x":
        x[3, 1] = np.nan
    elif case == "nan_y":
        y[4] = np.nan
    elif case == "short_y":
        y = y[:9]
    elif case == "two_points":
        x, y = x[:2], y[:2]
    elif case == "duplicates":
        x[7] = x[2]
    elif case == "x_shape":
        x = rng.uniform(size=(10, 3))
    elif case == "noise_len":
        noise = np.ones(8)
    elif case == "noise_neg":
        noise = np.ones(10)
        noise[0] = 0.0
    with pytest.raises(ValueError, match=f"ExactGPSolver.fit: argument {argument}"):
        ExactGPSolver().fit(x, y, y_noise_std=noise)


def test_bad_query_and_unfitted_use():
    rng = np.random.default_rng(7)
    with pytest.raises(RuntimeError, match="fit first"):
        ExactGPSolver().predict(np.zeros((1, 2)))
    s = ExactGPSolver(max_iter=5).fit(rng.uniform(size=(10, 2)), rng.standard_normal(10))
    with pytest.raises(ValueError, match="argument 'xq'"):
        s.predict(np.array([[0.1, np.inf]]))
    with pytest.raises(ValueError, match="argument 'xs'"):
        s.predict_grid(np.array([]), np.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="argument 'kernel'"):
        ExactGPSolver(kernel="matern12")


def test_subset_hyperparameters_condition_on_all_points_and_are_deterministic():
    rng = np.random.default_rng(8)
    x, _, y = draw_prior(rng, 300, [0.3, 0.3], 1.0, 0.02)
    a = ExactGPSolver(fit_max_points=120, seed=3).fit(x, y)
    b = ExactGPSolver(fit_max_points=120, seed=3).fit(x, y)
    assert a.info["n_fit"] == 120 and a.info["n"] == 300
    assert a.hyperparameters() == b.hyperparameters()
    # Same hyperparameters, fixed, on all 300 points: the subset only chose them.
    full = ExactGPSolver().fit(x, y, optimise=False, initial=a.hyperparameters())
    xq = rng.uniform(size=(40, 2))
    for got, want in zip(a.predict(xq), full.predict(xq)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # And conditioning on all points is not the same as on the subset alone.
    sub = np.sort(np.random.default_rng(3).choice(300, 120, replace=False))
    only = ExactGPSolver().fit(x[sub], y[sub], optimise=False, initial=a.hyperparameters())
    assert np.max(np.abs(only.predict(xq)[1] - a.predict(xq)[1])) > 1e-3


def test_a_line_search_into_a_singular_kernel_keeps_the_best_hyperparameters():
    """SST winter 32 with 30 % of the ocean withheld: a kernel sum drives the noise to its floor
    and a lengthscale upwards until the line search meets NaNs. The fit must stop at the best
    point it evaluated, not crash, and still predict the withheld points well."""
    from inversa.data.readers.field_input import read_field_input
    from tests.conftest import shared_file

    ds = read_field_input(shared_file("fields/eofs/sst_ndjfm_anom.nc"), {"units": "K"}, variable="sst")
    gx, gy = np.meshgrid(ds.x.values, ds.y.values)
    values = ds["value"].values[32]
    ocean = np.isfinite(values)
    x, y = np.column_stack([gx[ocean], gy[ocean]]), values[ocean]
    out = np.zeros(y.size, dtype=bool)
    out[np.random.default_rng((0, 32)).choice(y.size, int(round(0.3 * y.size)), replace=False)] = True
    s = ExactGPSolver(kernel="matern52+matern52", max_iter=50).fit(x[~out], y[~out])
    assert "NanError" in s.info["optimiser_note"]
    start = ExactGPSolver(kernel="matern52+matern52").fit(x[~out], y[~out], optimise=False)
    assert s.info["log_marginal_likelihood"] > start.info["log_marginal_likelihood"] + 50
    mean, std = s.predict(x[out], include_noise=True)
    assert np.sqrt(np.mean((mean - y[out]) ** 2)) < 0.1  # K; the anomalies' std is 0.57
    assert 0.85 <= np.mean(np.abs(mean - y[out]) <= 1.6448536 * std) <= 1.0
