import pickle

import numpy as np
import pytest
import xarray as xr

from inversa.data.errors import (CorruptFile, InvalidMeasurement, MissingFile, MissingGeometry, NonFiniteValues,
                         ShapeMismatch)
from inversa.data.schema import build_ct, default_grid, validate_ct


def _dataset(sino=None, angles=None, **attrs):
    sino = np.ones((2, 4, 5), dtype=np.float64) if sino is None else sino
    angles = np.linspace(0, np.pi, sino.shape[-2], endpoint=False) if angles is None else angles
    base = {"geometry": "parallel", "detector_spacing_mm": 0.5}
    base.update(attrs)
    dims = ("slice", "angle", "detector")[-sino.ndim:]
    return xr.Dataset({"sinogram": (dims, sino)}, coords={"angle": ("angle", angles)}, attrs=base)


def test_error_message_names_file_variable_and_expectation_and_survives_pickling():
    err = ShapeMismatch("scans/tooth.h5", "exchange/data", "a 3D array (angle, row, column)", "shape (181, 640)")
    assert str(err) == ("scans/tooth.h5: variable 'exchange/data': expected a 3D array (angle, row, column), "
                        "got shape (181, 640)")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ShapeMismatch and str(again) == str(err) and again.variable == "exchange/data"
    assert isinstance(MissingFile("a", "b", "c"), FileNotFoundError)
    assert isinstance(CorruptFile("a", "b", "c"), ValueError)


def test_validate_casts_to_float32_adds_slice_coord_and_default_offset():
    ds = validate_ct(_dataset(), source="x.nc")
    assert ds.sinogram.dtype == np.float32
    assert ds.sinogram.dims == ("slice", "angle", "detector")
    assert ds.angle.dtype == np.float64
    assert list(ds.slice.values) == [0, 1]
    assert ds.attrs["detector_offset_mm"] == 0.0
    assert ds.attrs["source"] == "x.nc"


def test_two_dimensional_sinogram_gains_a_slice():
    ds = validate_ct(_dataset(sino=np.ones((4, 5), dtype=np.int16)))
    assert ds.sinogram.shape == (1, 4, 5) and ds.sinogram.dtype == np.float32


def test_nan_is_reported_with_count_and_position():
    sino = np.ones((2, 4, 5))
    sino[1, 2, 3] = np.nan
    sino[0, 0, 0] = np.inf
    with pytest.raises(NonFiniteValues, match=r"x\.nc: variable 'sinogram'.*2 NaN/Inf value\(s\), first at index \(0, 0, 0\)"):
        validate_ct(_dataset(sino=sino), source="x.nc")


def test_wrong_dims_and_missing_variable():
    bad = xr.Dataset({"sinogram": (("angle", "slice", "detector"), np.ones((4, 2, 5)))},
                     coords={"angle": np.arange(4.0)}, attrs={"geometry": "parallel", "detector_spacing_mm": 1.0})
    with pytest.raises(ShapeMismatch, match="dims"):
        validate_ct(bad)
    with pytest.raises(InvalidMeasurement, match="'sinogram'"):
        validate_ct(xr.Dataset({"data": ("x", [1.0])}))


def test_fan_beam_requires_positive_distances():
    with pytest.raises(MissingGeometry, match="source_origin_mm"):
        validate_ct(_dataset(geometry="fan", origin_detector_mm=100.0))
    with pytest.raises(MissingGeometry, match="origin_detector_mm.*positive"):
        validate_ct(_dataset(geometry="fan", source_origin_mm=400.0, origin_detector_mm=-1.0))
    with pytest.raises(MissingGeometry, match="'geometry'"):
        validate_ct(_dataset(geometry="cone"))
    with pytest.raises(InvalidMeasurement, match="detector_spacing_mm"):
        validate_ct(_dataset(detector_spacing_mm=0.0))


def test_angles_in_degrees_or_repeated_are_refused():
    with pytest.raises(InvalidMeasurement, match="radians"):
        validate_ct(_dataset(angles=np.array([0.0, 60.0, 120.0, 179.0])))
    with pytest.raises(InvalidMeasurement, match="monotonic"):
        validate_ct(_dataset(angles=np.array([0.0, 0.5, 0.5, 1.0])))
    # decreasing angles (a negated convention) are fine
    assert validate_ct(_dataset(angles=-np.arange(4) * 0.1)).sizes["angle"] == 4


def test_build_ct_checks_angle_count():
    with pytest.raises(ShapeMismatch, match=r"scan\.npz: variable 'angles': expected 4 angles"):
        build_ct(np.ones((4, 5)), np.arange(3.0), {"geometry": "parallel", "detector_spacing_mm": 1.0},
                 source="scan.npz", angles_name="angles")


def test_default_grid_follows_the_conventions():
    parallel = validate_ct(_dataset(detector_spacing_mm=0.5))
    assert default_grid(parallel) == (5, 0.5)
    fan = validate_ct(_dataset(geometry="fan", detector_spacing_mm=0.2, source_origin_mm=400.0,
                               origin_detector_mm=100.0))
    size, pixel = default_grid(fan)
    assert size == 5 and pixel == pytest.approx(0.2 * 400 / 500)
    assert default_grid(validate_ct(_dataset(image_size=64, pixel_size_mm=0.3))) == (64, 0.3)


def test_an_all_zero_sinogram_is_refused_eager_and_lazy():
    zeros = _dataset(sino=np.zeros((2, 4, 5)))
    for lazy in (False, True):
        with pytest.raises(InvalidMeasurement, match=r"'sinogram'.*all 40 values zero"):
            validate_ct(zeros, source="scan.nc", lazy=lazy)
    one = np.zeros((2, 4, 5))
    one[1, 2, 3] = 1e-3  # a single measured value is data
    assert validate_ct(_dataset(sino=one), lazy=True).sizes["slice"] == 2


@pytest.mark.parametrize("span, ok", [(10.0, False), (2 * np.pi + 0.5, False), (2 * np.pi, True),
                                      (np.pi, True)])
def test_angles_may_span_one_turn_and_no_more(span, ok):
    angles = np.linspace(0, span, 73)  # both ends kept, as many scanners store a full turn
    if ok:
        assert validate_ct(_dataset(sino=np.ones((1, 73, 5)), angles=angles)).sizes["angle"] == 73
    else:
        with pytest.raises(InvalidMeasurement, match="looks like degrees") as info:
            validate_ct(_dataset(sino=np.ones((1, 73, 5)), angles=angles), source="scan.nc")
        assert "scan.nc" in str(info.value) and "deg2rad" in str(info.value)
