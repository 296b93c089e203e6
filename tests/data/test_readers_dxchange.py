from pathlib import Path

import h5py
import numpy as np
import pytest

from inversa.data.errors import CorruptFile, InvalidMeasurement, NonFiniteValues, ShapeMismatch
from inversa.data.readers import detect_format, read_measurement
from inversa.data.readers.center_of_rotation import center_of_mass_fit, opposite_view_center

TOOTH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct" / "tomopy_tooth" / "tooth.h5"


def tooth() -> Path:
    if not TOOTH.exists():
        pytest.skip(f"real data file not present: {TOOTH}")
    return TOOTH


def _write_exchange(path, center=27.3, n_angles=90, rows=2, cols=64, theta_len=None, white=True, nan=False):
    """Raw counts of a parallel-beam scan of two Gaussian blobs rotating about pixel ``center``."""
    theta = np.linspace(0, 180, n_angles, endpoint=False)
    t = np.deg2rad(theta)[:, None]
    k = np.arange(cols)[None, :]
    p = (0.8 * np.exp(-0.5 * ((k - (center + 9 * np.cos(t) - 4 * np.sin(t))) / 2.5) ** 2)
         + 0.5 * np.exp(-0.5 * ((k - (center - 3 * np.cos(t) + 6 * np.sin(t))) / 1.5) ** 2))
    flat, dark = 1000.0, 100.0
    counts = dark + (flat - dark) * np.exp(-p)
    data = np.repeat(counts[:, None, :], rows, axis=1).astype(np.float32)
    if nan:
        data[3, 0, 5] = np.nan
    with h5py.File(path, "w") as f:
        f["exchange/data"] = data
        if white:
            f["exchange/data_white"] = np.full((4, rows, cols), flat, np.float32)
        f["exchange/data_dark"] = np.full((4, rows, cols), dark, np.float32)
        f["exchange/theta"] = theta[: theta_len or n_angles]
        f["exchange/theta"].attrs["units"] = "degrees"
    return p


def test_synthetic_exchange_is_corrected_and_its_centre_found(tmp_path):
    path = tmp_path / "scan.h5"
    p = _write_exchange(path, center=27.3)
    assert detect_format(path) == "dxchange"
    ds = read_measurement(path, detector_spacing_mm=0.5)
    assert ds.sinogram.shape == (2, 90, 64) and ds.attrs["geometry"] == "parallel"
    np.testing.assert_allclose(ds.sinogram.values[1], p, atol=1e-5)
    assert ds.attrs["center_of_rotation_px"] == pytest.approx(27.3, abs=0.05)
    # axis at s = 0: s_c = (c - (K - 1) / 2) d + o = 0
    assert ds.attrs["detector_offset_mm"] == pytest.approx((31.5 - 27.3) * 0.5, abs=0.03)
    given = read_measurement(path, center_of_rotation=30.0, detector_spacing_mm=2.0)
    assert given.attrs["detector_offset_mm"] == pytest.approx((31.5 - 30.0) * 2.0)
    assert given.attrs["center_of_rotation_method"] == "given"


def test_tooth_centre_agrees_with_an_independent_estimate():
    ds = read_measurement(tooth())
    assert ds.sinogram.shape == (2, 181, 640)
    assert np.rad2deg(float(ds.angle[-1])) == pytest.approx(179.0, abs=0.01)
    center = ds.attrs["center_of_rotation_px"]
    # The opposite-view correlation (0 vs 179 degrees) uses a different property of the data;
    # both land near the ~295-296 px that TomoPy's tutorials use for this scan.
    check = opposite_view_center(ds.sinogram.values.sum(axis=0), ds.angle.values)
    assert abs(center - check) < 2.0
    assert 293.0 < center < 298.0
    _, residual = center_of_mass_fit(ds.sinogram.values.sum(axis=0), ds.angle.values)
    assert residual < 0.5  # the sinusoid model fits: object inside the field of view


def test_truncated_tooth_is_corrupt(tmp_path):
    data = tooth().read_bytes()
    cut = tmp_path / "half.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFile, match=r"half\.h5"):
        read_measurement(cut)


def test_exchange_errors_name_the_variable(tmp_path):
    _write_exchange(tmp_path / "theta.h5", theta_len=80)
    with pytest.raises(ShapeMismatch, match=r"variable 'exchange/theta': expected 90 angles"):
        read_measurement(tmp_path / "theta.h5")
    _write_exchange(tmp_path / "white.h5", white=False)
    with pytest.raises(InvalidMeasurement, match="'exchange/data_white'"):
        read_measurement(tmp_path / "white.h5")
    _write_exchange(tmp_path / "nan.h5", nan=True)
    with pytest.raises(NonFiniteValues, match="'exchange/data'.*first at index \\(3, 0, 5\\)"):
        read_measurement(tmp_path / "nan.h5")
