import math

import numpy as np
import pytest

from inversa.data.phantoms import Ellipse, disc_with_holes, rasterize
from inversa.data.readers import read_measurement, read_reference
from inversa.data.schema import default_grid
from inversa.data.synthetic import (add_poisson_noise, detector_positions, project_fan, project_parallel,
                            simulate_ct_study, write_study)

ANGLES = np.linspace(0, 2 * np.pi, 24, endpoint=False)


def test_centred_disc_equals_the_chord_formula_in_both_geometries():
    mu, r = 0.03, 20.0
    disc = [Ellipse(mu, 0.0, 0.0, r, r, 0.3)]
    s = detector_positions(101, 0.5, 0.2)
    parallel = project_parallel(disc, ANGLES, 101, 0.5, 0.2)
    expected = 2 * mu * np.sqrt(np.clip(r * r - s * s, 0, None))
    np.testing.assert_allclose(parallel, np.broadcast_to(expected, parallel.shape), atol=1e-12)
    big_r, big_d = 400.0, 150.0
    fan = project_fan(disc, ANGLES, 101, 0.5, big_r, big_d, 0.2)
    distance = big_r * np.abs(s) / np.hypot(big_r + big_d, s)  # ray to the centre
    expected = 2 * mu * np.sqrt(np.clip(r * r - distance**2, 0, None))
    np.testing.assert_allclose(fan, np.broadcast_to(expected, fan.shape), atol=1e-12)


def _peak(profile, s):
    return float((profile * s).sum() / profile.sum())


def test_off_centre_disc_lands_where_the_conventions_say():
    cx, cy = 12.0, -7.0
    dot = [Ellipse(1.0, cx, cy, 0.4, 0.4, 0.0)]
    s = detector_positions(4001, 0.01)
    parallel = project_parallel(dot, ANGLES, 4001, 0.01)
    fan = project_fan(dot, ANGLES, 4001, 0.01, 300.0, 100.0)
    for theta, par_row, fan_row in zip(ANGLES, parallel, fan):
        u = np.array([math.cos(theta), math.sin(theta)])
        r = np.array([-math.sin(theta), math.cos(theta)])
        s_point, t_point = u @ (cx, cy), r @ (cx, cy)
        assert _peak(par_row, s) == pytest.approx(s_point, abs=2e-3)
        # magnified from the source at t = -R onto the detector at t = D
        assert _peak(fan_row, s) == pytest.approx(s_point * 400.0 / (300.0 + t_point), abs=1e-2)


def test_fan_beam_tends_to_parallel_beam_with_the_same_signs():
    phantom = disc_with_holes(np.random.default_rng(0))
    parallel = project_parallel(phantom, ANGLES, 128, 0.6, 1.0)
    errors = [np.abs(project_fan(phantom, ANGLES, 128, 0.6, big_r, 1e-3, 1.0) - parallel).max()
              for big_r in (1e5, 1e7)]
    # the fan-angle error shrinks like 1 / R; a flipped sign would leave an O(1) difference
    assert errors[1] < 2e-4 and errors[1] < errors[0] / 20


def test_parallel_sinogram_conserves_the_rasterised_mass():
    phantom = [Ellipse(1.0, 3.0, -2.0, 10.0, 6.0, 0.7), Ellipse(-0.5, 4.0, -1.0, 3.0, 2.0, 0.2)]
    p = 0.25
    image = rasterize(phantom, 128, p, supersample=8)
    sino = project_parallel(phantom, ANGLES, 200, 0.2)
    np.testing.assert_allclose(sino.sum(axis=1) * 0.2, image.sum() * p * p, rtol=2e-3)


def test_poisson_noise_has_the_photon_counting_variance():
    rng = np.random.default_rng(5)
    clean = np.full(200_000, 1.0)
    noisy, sigma = add_poisson_noise(clean, rng, incident_counts=1e4)
    expected_var = math.e / 1e4  # delta method: var(-log(N / I0)) = 1 / (I0 exp(-p))
    assert np.var(noisy) == pytest.approx(expected_var, rel=0.03)
    assert abs(np.mean(noisy) - 1.0) < 3e-4
    assert sigma == pytest.approx(math.sqrt(expected_var))
    hard, _ = add_poisson_noise(np.full(1000, 30.0), rng, incident_counts=100.0)
    assert np.all(np.isfinite(hard))


def test_gaussian_noise_level_relative_to_the_maximum():
    clean, _ = simulate_ct_study("shepp-logan", image_size=32, geometry={"geometry": "parallel"}, angles=30)
    noisy, _ = simulate_ct_study("shepp-logan", image_size=32, geometry={"geometry": "parallel"}, angles=30,
                                 noise={"model": "gaussian", "relative_sigma": 0.05})
    expected = 0.05 * float(clean.sinogram.max())
    assert noisy.attrs["noise_sigma"] == pytest.approx(expected, rel=1e-5)
    assert float((noisy.sinogram - clean.sinogram).std()) == pytest.approx(expected, rel=0.1)
    assert noisy.attrs["noise_model"] == "gaussian"


def test_same_seed_same_study_and_slices_do_not_depend_on_the_count():
    options = dict(kind="htc-discs", image_size=32, angles=20, noise={"model": "poisson", "I0": 1e3})
    a_meas, a_truth = simulate_ct_study(n_slices=2, seed=7, **options)
    b_meas, b_truth = simulate_ct_study(n_slices=3, seed=7, **options)
    np.testing.assert_array_equal(a_meas.sinogram.values, b_meas.sinogram.values[:2])
    np.testing.assert_array_equal(a_truth.reference.values, b_truth.reference.values[:2])
    c_meas, _ = simulate_ct_study(n_slices=2, seed=8, **options)
    assert not np.array_equal(a_meas.sinogram.values, c_meas.sinogram.values)
    assert not np.array_equal(a_meas.sinogram.values[0], a_meas.sinogram.values[1])


def test_written_study_reads_back_with_its_truth(tmp_path):
    measurement_path, truth_path = write_study(tmp_path, name="demo", kind="ellipses", n_slices=2,
                                               image_size=32, angles=40, seed=1)
    assert measurement_path.name == "demo.nc" and truth_path.name == "demo_truth.nc"
    ds = read_measurement(measurement_path)
    assert ds.sinogram.shape == (2, 40, 32) and ds.attrs["geometry"] == "fan"
    assert default_grid(ds) == (32, pytest.approx(76.0 / 32))
    reference = read_reference(truth_path)
    assert reference.attrs["kind"] == "image" and reference.shape == (2, 32, 32)
    seg = read_reference(truth_path, variable="segmentation")
    assert seg.attrs["kind"] == "segmentation"
    with pytest.raises(ValueError, match="kind"):
        simulate_ct_study(kind="cubes")
