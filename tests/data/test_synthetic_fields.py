"""Synthetic PDE studies: solvers converge to analytic solutions, outputs are seeded and valid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from inversa.data.errors import InvalidMeasurement
from inversa.data.fields import validate_field_observations, validate_gridded_field
from inversa.data.synthetic_fields import (
    bilinear,
    gaussian_random_field,
    grid_nodes,
    simulate_darcy_study,
    simulate_heat_study,
    solve_darcy,
)


def sine(n):
    xx, yy = np.meshgrid(grid_nodes(n), grid_nodes(n))
    return xx, yy, np.sin(math.pi * xx) * np.sin(math.pi * yy)


def test_poisson_constant_k_converges_at_second_order():
    errors = []
    for n in (17, 33, 65):  # h = 1/16, 1/32, 1/64
        xx, yy, exact = sine(n)
        u = solve_darcy(np.full((n, n), 2.0), 2 * math.pi ** 2 * exact)
        errors.append(np.abs(u - exact / 2.0).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # The leading error term of the 5-point scheme at the peak: (pi h)^2 / 12 * max|u| (max|u| = 1/2).
    assert errors[-1] == pytest.approx((math.pi / 64) ** 2 / 12 * 0.5, rel=0.02)
    np.testing.assert_allclose(ratios, 4.0, rtol=0.05)


def test_variable_coefficient_manufactured_solution_converges_at_second_order():
    # k = 1 + x^2 + y, u = sin(pi x) sin(pi y)  =>  f = -(k_x u_x + k_y u_y + k laplace u).
    errors = []
    for n in (17, 33, 65):
        xx, yy, u = sine(n)
        k = 1 + xx ** 2 + yy
        ux = math.pi * np.cos(math.pi * xx) * np.sin(math.pi * yy)
        uy = math.pi * np.sin(math.pi * xx) * np.cos(math.pi * yy)
        f = -(2 * xx * ux + uy - 2 * math.pi ** 2 * k * u)
        errors.append(np.abs(solve_darcy(k, f) - u).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.1)
    assert errors[-1] < 1e-3


def test_jumping_coefficient_converges_at_second_order_with_harmonic_faces():
    # k jumps by 100 at x = 1/2, midway between nodes for n - 1 odd. The harmonic face mean is the
    # exact series conductivity there, so the error against a fine reference falls as h^2; an
    # arithmetic mean gives ratios near 2 and 40 times the error at n = 64 (checked by hand).
    def solve(n):
        xx, _, _ = sine(n)
        return solve_darcy(np.where(xx < 0.5, 1.0, 100.0), np.ones((n, n)))

    reference = solve(256)
    errors = []
    for n in (16, 32, 64):
        xx, yy, _ = sine(n)
        errors.append(np.abs(solve(n) - bilinear(reference, xx.ravel(), yy.ravel()).reshape(n, n)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all(ratios > 3.5)
    assert errors[-1] < 1e-4


def test_discrete_divergence_theorem_total_source_leaves_through_the_boundary():
    # Conservation of the finite-volume scheme: the sum of f h^2 over the interior nodes equals
    # the flux through the boundary faces, with the jump in k inside.
    n = 33
    h = 1.0 / (n - 1)
    xx, _, _ = sine(n)
    k = np.where(xx < 0.49, 1.0, 100.0) * (1 + 0.5 * np.cos(3 * xx))
    u = solve_darcy(k, np.ones((n, n)))
    hm = lambda a, b: 2 * a * b / (a + b)
    outflow = (
        (hm(k[1:-1, 1], k[1:-1, 0]) * u[1:-1, 1]).sum() + (hm(k[1:-1, -2], k[1:-1, -1]) * u[1:-1, -2]).sum()
        + (hm(k[1, 1:-1], k[0, 1:-1]) * u[1, 1:-1]).sum() + (hm(k[-2, 1:-1], k[-1, 1:-1]) * u[-2, 1:-1]).sum()
    )
    assert outflow == pytest.approx((n - 2) ** 2 * h ** 2, rel=1e-9)
    # The low-conductivity half holds the high head: its maximum is far above the other half's.
    assert u[:, xx[0] < 0.5].max() > 10 * u[:, xx[0] > 0.5].max()


def test_heat_sine_decays_at_the_analytic_rate():
    kappa = 0.05
    _, truth = simulate_heat_study(n=33, n_times=11, t_end=1.0, kappa=kappa, initial="sine", noise_sigma=0.0)
    t = truth.time.values
    peak = truth.u.values.max(axis=(1, 2))
    rate = -np.polyfit(t, np.log(peak), 1)[0]
    assert rate == pytest.approx(2 * kappa * math.pi ** 2, rel=0.01)
    exact = np.exp(-2 * kappa * math.pi ** 2 * t[-1]) * sine(33)[2]
    np.testing.assert_allclose(truth.u.values[-1], exact, atol=2e-3 * exact.max())


def test_heat_bump_obeys_maximum_principle_and_spreads():
    _, truth = simulate_heat_study(n=33, n_times=6, initial="gaussian-bump", noise_sigma=0.0)
    u = truth.u.values
    peaks = u.max(axis=(1, 2))
    assert np.all(np.diff(peaks) < 0) and peaks[0] == pytest.approx(1.0)
    assert u.min() > -1e-3 * peaks[0]
    total = u.sum(axis=(1, 2))
    assert np.all(np.diff(total) < 0)  # heat leaves through the cold boundary


def test_random_field_has_unit_variance_and_gaussian_correlation():
    n, length = 129, 0.05
    g = np.stack([gaussian_random_field(n, length, np.random.default_rng(s)) for s in range(12)])
    assert (g ** 2).mean() == pytest.approx(1.0, abs=0.1)
    h = 1.0 / (n - 1)
    for lag in (4, 8):
        corr = (g[:, :, :-lag] * g[:, :, lag:]).mean() / (g ** 2).mean()
        assert corr == pytest.approx(math.exp(-((lag * h) ** 2) / (2 * length ** 2)), abs=0.05)


def test_lognormal_coefficient_is_seeded_and_log_scaled():
    _, a = simulate_darcy_study(n=33, seed=3, k_value=2.0, log_k_sigma=0.5, n_sensors=5)
    _, b = simulate_darcy_study(n=33, seed=3, k_value=2.0, log_k_sigma=0.5, n_sensors=50)
    _, c = simulate_darcy_study(n=33, seed=4, k_value=2.0, log_k_sigma=0.5, n_sensors=5)
    np.testing.assert_array_equal(a.k.values, b.k.values)  # independent of n_sensors
    assert not np.allclose(a.k.values, c.k.values)
    log_k = np.log(a.k.values / 2.0) / 0.5
    _, unit = simulate_darcy_study(n=33, seed=3, k_value=1.0, log_k_sigma=1.0, n_sensors=5)
    np.testing.assert_allclose(log_k, np.log(unit.k.values), atol=1e-12)


def test_darcy_observations_are_bilinear_truth_plus_noise_and_valid():
    obs, truth = simulate_darcy_study(n=33, n_sensors=400, noise_sigma=0.0, seed=1)
    interp = RegularGridInterpolator((truth.y.values, truth.x.values), truth.u.values)
    np.testing.assert_allclose(obs.value.values, interp(np.stack([obs.y.values, obs.x.values], 1)), atol=1e-14)
    noisy, _ = simulate_darcy_study(n=33, n_sensors=400, noise_sigma=0.01, seed=1)
    np.testing.assert_array_equal(noisy.x.values, obs.x.values)
    assert np.std(noisy.value.values - obs.value.values) == pytest.approx(0.01, rel=0.15)
    valid = validate_field_observations(noisy)
    assert valid.sizes["sensor"] == 400 and valid.attrs["n_dropped"] == 0
    assert valid.x.attrs["units"] == "m" and valid.attrs["pde"] == "darcy"
    assert ((obs.x > 0) & (obs.x < 1) & (obs.y > 0) & (obs.y < 1)).all()
    grid = validate_gridded_field(truth)
    assert bool(grid["mask"].all()) and set(truth.attrs) >= {"pde", "source", "boundary"}
    assert np.all(truth.u.values[[0, -1], :] == 0) and np.all(truth.u.values[:, [0, -1]] == 0)


def test_heat_observations_valid_and_prefix_independent_of_n_sensors():
    small, truth = simulate_heat_study(n=17, n_times=5, n_sensors=10, seed=2)
    big, truth_big = simulate_heat_study(n=17, n_times=5, n_sensors=30, seed=2)
    assert small.value.dims == ("time", "sensor") and small.value.shape == (5, 10)
    np.testing.assert_array_equal(big.isel(sensor=slice(0, 10)).value.values, small.value.values)
    np.testing.assert_array_equal(big.x.values[:10], small.x.values)
    np.testing.assert_array_equal(truth.u.values, truth_big.u.values)
    valid = validate_field_observations(big)
    assert bool(valid["mask"].all()) and valid.attrs["kappa"] == 0.05 and valid.attrs["pde"] == "heat"
    assert truth.u.dims == ("time", "y", "x") and truth.time.attrs["units"] == "s"
    validate_gridded_field(truth)
    again, _ = simulate_heat_study(n=17, n_times=5, n_sensors=10, seed=2)
    other, _ = simulate_heat_study(n=17, n_times=5, n_sensors=10, seed=5)
    np.testing.assert_array_equal(again.value.values, small.value.values)
    assert not np.allclose(other.x.values, small.x.values)


def test_darcy_sensor_prefix_and_determinism():
    a, _ = simulate_darcy_study(n=17, n_sensors=20, seed=7)
    b, _ = simulate_darcy_study(n=17, n_sensors=60, seed=7)
    again, _ = simulate_darcy_study(n=17, n_sensors=20, seed=7)
    np.testing.assert_array_equal(b.value.values[:20], a.value.values)
    np.testing.assert_array_equal(again.value.values, a.value.values)


@pytest.mark.parametrize(
    "kwargs, variable",
    [
        (dict(n=3), "n"),
        (dict(n=16.0), "n"),
        (dict(n_sensors=0), "n_sensors"),
        (dict(noise_sigma=-0.1), "noise_sigma"),
        (dict(noise_sigma=float("nan")), "noise_sigma"),
        (dict(coefficient="gaussian"), "coefficient"),
        (dict(k_value=0.0), "k_value"),
        (dict(correlation_length=0), "correlation_length"),
        (dict(source="point"), "source"),
        (dict(seed=-1), "seed"),
    ],
)
def test_darcy_bad_arguments_name_the_argument(kwargs, variable):
    with pytest.raises(InvalidMeasurement) as info:
        simulate_darcy_study(**{"n": 8, **kwargs})
    assert info.value.variable == variable and "simulate_darcy_study" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, variable",
    [
        (dict(kappa=0.0), "kappa"),
        (dict(kappa="fast"), "kappa"),
        (dict(t_end=-1.0), "t_end"),
        (dict(n_times=1), "n_times"),
        (dict(initial="step"), "initial"),
        (dict(substeps=0), "substeps"),
        (dict(n_sensors=True), "n_sensors"),
    ],
)
def test_heat_bad_arguments_name_the_argument(kwargs, variable):
    with pytest.raises(InvalidMeasurement) as info:
        simulate_heat_study(**{"n": 8, **kwargs})
    assert info.value.variable == variable and "expected" in str(info.value)
