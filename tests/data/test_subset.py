from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from inversa.data.errors import InvalidMeasurement
from inversa.data.readers import read_measurement
from inversa.data.subset import angular_wedge, every_kth_view

HTC_TA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct" / "htc2022" / "htc2022_ta_full.mat"


def _full_turn(step_deg=0.5, sign=1.0):
    angles = sign * np.deg2rad(np.arange(0, 360, step_deg))
    sino = np.arange(angles.size, dtype=np.float32)[None, :, None] * np.ones((1, 1, 3), np.float32)
    return xr.Dataset({"sinogram": (("slice", "angle", "detector"), sino)}, coords={"angle": angles},
                      attrs={"geometry": "parallel", "detector_spacing_mm": 1.0})


def test_ninety_degree_wedge_has_181_views_end_included():
    wedge = angular_wedge(_full_turn(), 90)
    assert wedge.sizes["angle"] == 181
    np.testing.assert_array_equal(wedge.sinogram.values[0, :, 0], np.arange(181))
    assert np.rad2deg(wedge.angle.values[-1]) == pytest.approx(90.0)
    assert "angular_wedge(range=90 deg, start=0 deg" in wedge.attrs["subset"]
    assert wedge.attrs["detector_spacing_mm"] == 1.0


def test_wedge_is_relative_to_the_first_view_in_scan_direction():
    negated = angular_wedge(_full_turn(sign=-1.0), 30, start_angle_deg=45)
    np.testing.assert_array_equal(negated.sinogram.values[0, :, 0], np.arange(90, 151))
    assert np.all(np.diff(negated.angle.values) < 0)


def test_wedge_wrapping_past_a_full_turn_stays_contiguous_and_monotonic():
    wedge = angular_wedge(_full_turn(), 60, start_angle_deg=330)
    views = wedge.sinogram.values[0, :, 0]
    np.testing.assert_array_equal(views, np.r_[np.arange(660, 720), np.arange(0, 61)])
    steps = np.rad2deg(np.diff(wedge.angle.values))
    np.testing.assert_allclose(steps, 0.5, atol=1e-9)
    assert np.rad2deg(wedge.angle.values[0]) == pytest.approx(330.0)


def test_every_kth_view_and_composition_are_recorded():
    sparse = every_kth_view(angular_wedge(_full_turn(), 90), 4)
    np.testing.assert_array_equal(sparse.sinogram.values[0, :, 0], np.arange(0, 181, 4))
    assert sparse.attrs["subset"].count(";") == 1 and "every_kth_view(k=4): 46 of 181" in sparse.attrs["subset"]


def test_bad_values_are_refused():
    ds = _full_turn(step_deg=10)
    for bad in (0, -5, 400, float("nan")):
        with pytest.raises(InvalidMeasurement, match="angular_range_deg"):
            angular_wedge(ds, bad)
    with pytest.raises(InvalidMeasurement, match="no view in that wedge"):
        angular_wedge(ds, 5, start_angle_deg=2)
    for k in (0, 1.5, True):
        with pytest.raises(InvalidMeasurement, match="'k'"):
            every_kth_view(ds, k)


def test_htc_wedge_on_real_data():
    if not HTC_TA.exists():
        pytest.skip(f"real data file not present: {HTC_TA}")
    full = read_measurement(HTC_TA)
    for degrees, views in ((90, 181), (60, 121), (30, 61)):
        wedge = angular_wedge(full, degrees)
        assert wedge.sizes["angle"] == views
        np.testing.assert_array_equal(wedge.sinogram.values, full.sinogram.values[:, :views])
