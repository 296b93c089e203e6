"""Simulated multi-coil MRI studies (data/synthetic_mri.py): truth, maps, noise, determinism, files."""

import numpy as np
import pytest
import xarray as xr

from inversa.data.mri import ifft2c, noise_sigma_from_outer_kspace, validate_mri
from inversa.data.readers import detect_format, mri_format, read_mri, read_mri_reference
from inversa.data.errors import UnknownFormat
from inversa.data.synthetic_mri import coil_maps, simulate_mri_study, smooth_phase, write_mri_study


def test_coil_maps_are_normalised_smooth_and_distinct():
    maps = coil_maps(8, (48, 40))
    assert maps.shape == (8, 48, 40) and maps.dtype == np.complex64
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(axis=0), 1.0, atol=1e-5)
    # smooth: neighbouring pixels differ little compared with the map's range
    assert np.abs(np.diff(maps, axis=-1)).max() < 0.2 * np.abs(maps).max()
    # each coil is most sensitive near its own place on the circle: the peaks differ
    peaks = {np.unravel_index(np.abs(m).argmax(), m.shape) for m in maps}
    assert len(peaks) == 8
    np.testing.assert_array_equal(coil_maps(8, (48, 40)), maps)  # deterministic without rng
    jittered = coil_maps(8, (48, 40), np.random.default_rng(1))
    assert not np.allclose(jittered, maps)
    np.testing.assert_allclose((np.abs(jittered) ** 2).sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.abs(coil_maps(1, (8, 8))), 1.0, atol=1e-6)


def test_smooth_phase_is_bounded_and_slowly_varying():
    phase = smooth_phase((64, 64), np.random.default_rng(0), max_radians=2.0)
    assert phase.dtype == np.float32 and np.abs(phase).max() == pytest.approx(2.0, rel=1e-5)
    assert np.abs(np.diff(phase, axis=0)).max() < 0.25 and np.abs(np.diff(phase, axis=1)).max() < 0.25


def test_the_study_is_valid_and_the_truth_is_the_noise_free_magnitude():
    measurement, truth = simulate_mri_study(n_slices=2, matrix=(48, 40), n_coils=4, acceleration=4,
                                            mask_kind="random", relative_noise=0.01, seed=5)
    xr.testing.assert_identical(validate_mri(measurement), measurement)
    assert measurement.kspace.shape == (2, 4, 48, 40) and measurement.sensitivity.shape == (2, 4, 48, 40)
    assert measurement.mask.dims == ("ky", "kx") and measurement.attrs["acceleration"] == pytest.approx(4, rel=0.35)
    assert measurement.attrs["noise_sigma"] == pytest.approx(0.01 * float(truth.reference.max()))
    fov = measurement.attrs["field_of_view_mm"]
    assert fov[0] / 48 == pytest.approx(fov[1] / 40)  # square pixels
    assert truth.reference.dtype == np.float32 and truth.reference.dims == ("slice", "y", "x")
    np.testing.assert_allclose(np.abs(truth.image.values), truth.reference.values, atol=1e-6)
    assert float(truth.reference.min()) >= 0 and 0.5 < float(truth.reference.max()) <= 1.0
    # the whole brain in view: nothing on the border rows and columns
    ref = truth.reference.values
    assert ref[:, [0, -1], :].max() < 0.01 and ref[:, :, [0, -1]].max() < 0.01
    brain = ref > 0.1
    rows, cols = np.nonzero(brain.any(axis=0))
    assert abs((rows.min() + rows.max()) / 2 - 24) <= 2 and abs((cols.min() + cols.max()) / 2 - 20) <= 2


def test_fully_sampled_noiseless_sense_combination_is_the_truth():
    measurement, truth = simulate_mri_study(n_slices=2, matrix=(40, 48), n_coils=6, acceleration=1,
                                            noise_sigma=0.0, seed=2)
    assert measurement.attrs["acceleration"] == 1.0 and bool(measurement.mask.all())
    s = measurement.sensitivity.values
    combined = (np.conj(s) * ifft2c(measurement.kspace.values)).sum(axis=1)
    np.testing.assert_allclose(combined, truth.image.values, atol=1e-5 * float(np.abs(truth.image).max()))
    without = simulate_mri_study(n_slices=2, matrix=(40, 48), n_coils=6, acceleration=1, noise_sigma=0.0, seed=2,
                                 with_sensitivity=False)[0]
    assert "sensitivity" not in without and np.array_equal(without.kspace.values, measurement.kspace.values)


@pytest.mark.parametrize("mask_kind", ["equispaced", "random", "poisson"])
def test_noise_level_is_recovered_from_outer_kspace(mask_kind):
    sigma = 0.02
    measurement, _ = simulate_mri_study(n_slices=2, matrix=(96, 96), n_coils=4, acceleration=3, mask_kind=mask_kind,
                                        noise_sigma=sigma, seed=1)
    estimate = noise_sigma_from_outer_kspace(measurement.kspace.values, measurement.mask.values)
    assert estimate == pytest.approx(sigma, rel=0.1)


def test_same_seed_same_study_and_slices_do_not_depend_on_the_count():
    a, ta = simulate_mri_study(n_slices=2, matrix=(32, 32), n_coils=3, relative_noise=0.02, seed=7)
    b, tb = simulate_mri_study(n_slices=2, matrix=(32, 32), n_coils=3, relative_noise=0.02, seed=7)
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(ta, tb)
    c, tc = simulate_mri_study(n_slices=3, matrix=(32, 32), n_coils=3, noise_sigma=a.attrs["noise_sigma"], seed=7)
    np.testing.assert_array_equal(c.kspace.values[:2], a.kspace.values)
    np.testing.assert_array_equal(tc.brain_slice.values[:2], ta.brain_slice.values)
    assert len(set(tc.brain_slice.values.tolist())) == 3  # no slice drawn twice
    d, _ = simulate_mri_study(n_slices=2, matrix=(32, 32), n_coils=3, relative_noise=0.02, seed=8)
    assert not np.array_equal(d.kspace.values, a.kspace.values)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="not both"):
        simulate_mri_study(noise_sigma=0.1, relative_noise=0.1)
    with pytest.raises(ValueError, match="mask_kind"):
        simulate_mri_study(mask_kind="radial")
    with pytest.raises(ValueError, match="slice_range"):
        simulate_mri_study(n_slices=500, matrix=(16, 16))


def test_write_mri_study_writes_a_fastmri_file_and_its_truth(tmp_path):
    measurement_path, truth_path = write_mri_study(tmp_path, "brain", n_slices=2, matrix=(24, 24), n_coils=3,
                                                   acceleration=2, mask_kind="poisson", relative_noise=0.01, seed=4)
    assert measurement_path.name == "brain.h5" and truth_path.name == "brain_truth.nc"
    assert mri_format(measurement_path) == "fastmri" and mri_format(truth_path) is None
    with pytest.raises(UnknownFormat, match="read it with inversa.data.readers.read_mri"):
        detect_format(measurement_path)  # a CT reader is told what the file is
    measurement, truth = simulate_mri_study(n_slices=2, matrix=(24, 24), n_coils=3, acceleration=2,
                                            mask_kind="poisson", relative_noise=0.01, seed=4)
    back = read_mri(measurement_path)
    np.testing.assert_array_equal(back.kspace.values, measurement.kspace.values)
    np.testing.assert_array_equal(back.mask.values, measurement.mask.values)
    np.testing.assert_array_equal(back.sensitivity.values, measurement.sensitivity.values)
    for key in ("acceleration", "noise_sigma", "matrix", "readout_oversampling"):
        assert back.attrs[key] == pytest.approx(measurement.attrs[key])
    np.testing.assert_allclose(back.attrs["field_of_view_mm"], measurement.attrs["field_of_view_mm"], rtol=1e-5)
    reference = read_mri_reference(truth_path)
    np.testing.assert_array_equal(reference.values, truth.reference.values)
    assert reference.dims == ("slice", "y", "x") and reference.attrs["kind"] == "image"
