from pathlib import Path

import numpy as np
import pytest
import scipy.io

from inversa.data.errors import CorruptFile, InvalidMeasurement, MissingFile, ShapeMismatch
from inversa.data.readers import detect_format, read_measurement, read_reference
from inversa.data.schema import default_grid

HTC = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ct" / "htc2022"


def real(name: str) -> Path:
    path = HTC / name
    if not path.exists():
        pytest.skip(f"real data file not present: {path}")
    return path


def test_htc_full_scan_is_read_as_fan_beam_without_the_repeated_view():
    path = real("htc2022_ta_full.mat")
    assert detect_format(path) == "htc2022"
    ds = read_measurement(path)
    assert ds.sinogram.shape == (1, 720, 560)
    assert ds.sinogram.dtype == np.float32
    # Mapped onto docs/conventions.md: theta = pi - file angle, detector reversed.
    np.testing.assert_allclose(np.rad2deg(ds.angle.values), 180.0 - np.arange(720) * 0.5, atol=1e-9)
    assert ds.attrs["geometry"] == "fan"
    assert ds.attrs["source_origin_mm"] == pytest.approx(410.66)
    assert ds.attrs["origin_detector_mm"] == pytest.approx(553.74 - 410.66)
    assert ds.attrs["detector_spacing_mm"] == pytest.approx(0.2)
    assert ds.attrs["duplicate_view_dropped"] == 1
    assert default_grid(ds) == (512, pytest.approx(0.14832, abs=1e-5))
    raw = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["CtDataFull"].sinogram
    np.testing.assert_allclose(ds.sinogram.values[0], raw[:720, ::-1], rtol=1e-6, atol=1e-7)
    assert 2.0 < float(ds.sinogram.max()) < 2.4  # a 70 mm acrylic disc: about 0.032 / mm x 70 mm


def test_htc_references_are_image_and_segmentation():
    image = read_reference(real("htc2022_ta_full_recon_fbp.mat"))
    seg = read_reference(real("htc2022_ta_full_recon_fbp_seg.mat"))
    assert image.dims == ("slice", "y", "x") and image.shape == (1, 512, 512)
    assert image.attrs["kind"] == "image" and image.dtype == np.float32
    assert seg.attrs["kind"] == "segmentation" and seg.dtype == np.uint8
    assert set(np.unique(seg.values)) == {0, 1}
    # the reference is in attenuation per pixel: inside the object about 0.032 / mm x 0.148 mm
    inside = float(np.median(image.values[seg.values == 1]))
    assert 0.0035 < inside < 0.0060


def test_truncated_htc_file_is_corrupt(tmp_path):
    data = real("htc2022_ta_full.mat").read_bytes()
    cut = tmp_path / "half.mat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFile, match=r"half\.mat: variable .*complete, readable MATLAB"):
        read_measurement(cut)


def _write_limited(path, n_angles=5, n_angle_values=5, n_det=7):
    params = {"distanceSourceOrigin": 400.0, "distanceSourceDetector": 550.0, "pixelSizePost": 0.2,
              "numDetectorsPost": n_det, "effectivePixelSizePost": 0.2 * 400 / 550,
              "angles": np.arange(n_angle_values) * 0.5 + 10.0}
    struct = {"sinogram": np.ones((n_angles, n_det)), "parameters": params, "type": "limited"}
    scipy.io.savemat(path, {"CtDataLimited": struct})


def test_limited_struct_is_read_and_angle_mismatch_is_named(tmp_path):
    ok = tmp_path / "limited.mat"
    _write_limited(ok)
    ds = read_measurement(ok)
    assert ds.sizes["angle"] == 5 and ds.attrs["duplicate_view_dropped"] == 0
    assert ds.attrs["htc_variable"] == "CtDataLimited"
    np.testing.assert_allclose(np.rad2deg(ds.angle.values), [170, 169.5, 169, 168.5, 168])
    bad = tmp_path / "bad.mat"
    _write_limited(bad, n_angle_values=4)
    with pytest.raises(ShapeMismatch, match=r"bad\.mat: variable 'CtDataLimited\.parameters\.angles': expected 5 angles"):
        read_measurement(bad)


def test_mat_without_ct_struct_and_missing_file(tmp_path):
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"x": np.ones(3)})
    with pytest.raises(InvalidMeasurement, match="CtDataFull or CtDataLimited"):
        read_measurement(other)
    with pytest.raises(MissingFile):
        read_measurement(tmp_path / "absent.mat")
