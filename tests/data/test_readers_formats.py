import numpy as np
import pytest
import xarray as xr

from inversa.data.errors import (CorruptFile, InvalidMeasurement, MissingFile, MissingGeometry, NonFiniteValues,
                         ShapeMismatch, UnknownFormat)
from inversa.data.readers import detect_format, read_measurement, read_reference

ANGLES = np.linspace(0, np.pi, 6, endpoint=False)


def _measurement(sino=None):
    sino = np.random.default_rng(0).random((2, 6, 5)) if sino is None else sino
    return xr.Dataset({"sinogram": (("slice", "angle", "detector"), sino.astype(np.float32))},
                      coords={"angle": ANGLES},
                      attrs={"geometry": "fan", "detector_spacing_mm": 0.3, "source_origin_mm": 400.0,
                             "origin_detector_mm": 150.0, "noise_sigma": 0.01})


def test_npy_needs_angles_and_geometry_from_options(tmp_path):
    path = tmp_path / "sino.npy"
    np.save(path, np.ones((6, 5)))
    with pytest.raises(MissingGeometry, match=r"sino\.npy: variable 'angles, geometry, detector_spacing_mm'"):
        read_measurement(path)
    with pytest.raises(MissingGeometry, match="source_origin_mm, origin_detector_mm"):
        read_measurement(path, angles=ANGLES, geometry="fan", detector_spacing_mm=1.0)
    ds = read_measurement(path, angles=ANGLES, geometry="parallel", detector_spacing_mm=1.0)
    assert ds.sinogram.shape == (1, 6, 5)
    with pytest.raises(ShapeMismatch, match="'angles': expected 6 angles"):
        read_measurement(path, angles=ANGLES[:4], geometry="parallel", detector_spacing_mm=1.0)


def test_npz_carries_geometry_and_options_override_it(tmp_path):
    path = tmp_path / "scan.npz"
    np.savez(path, sinogram=np.ones((2, 6, 5)), angles=ANGLES, geometry="parallel", detector_spacing_mm=0.25)
    ds = read_measurement(path)
    assert ds.attrs["detector_spacing_mm"] == 0.25 and ds.sizes["slice"] == 2
    assert read_measurement(path, detector_spacing_mm=0.5).attrs["detector_spacing_mm"] == 0.5
    bad = tmp_path / "bad.npz"
    np.savez(bad, sinogram=np.ones((6, 5)), angles=ANGLES[:5], geometry="parallel", detector_spacing_mm=1.0)
    with pytest.raises(ShapeMismatch, match=r"bad\.npz: variable 'angles'"):
        read_measurement(bad)
    nan = tmp_path / "nan.npz"
    np.savez(nan, sinogram=np.full((6, 5), np.nan), angles=ANGLES, geometry="parallel", detector_spacing_mm=1.0)
    with pytest.raises(NonFiniteValues, match="'sinogram'"):
        read_measurement(nan)


def test_netcdf_and_zarr_round_trip_and_are_detected_by_content(tmp_path):
    original = _measurement()
    nc = tmp_path / "scan.data"  # the name says nothing; the content decides
    original.to_netcdf(nc)
    assert detect_format(nc) == "netcdf"
    store = tmp_path / "scan.zarr"
    original.to_zarr(store, consolidated=False)
    assert detect_format(store) == "zarr"
    for path in (nc, store):
        ds = read_measurement(path)
        np.testing.assert_array_equal(ds.sinogram.values, original.sinogram.values)
        np.testing.assert_array_equal(ds.angle.values, ANGLES)
        assert ds.attrs["geometry"] == "fan" and ds.attrs["noise_sigma"] == 0.01
        assert type(ds.attrs["source_origin_mm"]) is float


def test_format_override_and_unknown_content(tmp_path):
    nc = tmp_path / "scan.nc"
    _measurement().to_netcdf(nc)
    with pytest.raises(CorruptFile):
        read_measurement(nc, format="htc2022")
    with pytest.raises(UnknownFormat, match="format"):
        read_measurement(nc, format="tiff")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UnknownFormat, match=r"notes\.txt.*MATLAB v5"):
        read_measurement(text)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFile, match="0 bytes"):
        read_measurement(empty)
    with pytest.raises(MissingFile, match="absent.nc"):
        read_measurement(tmp_path / "absent.nc")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(UnknownFormat, match="zarr"):
        read_measurement(tmp_path / "plain_dir")


def test_nan_and_missing_geometry_in_netcdf(tmp_path):
    sino = np.ones((1, 6, 5))
    sino[0, 1, 2] = np.inf
    path = tmp_path / "inf.nc"
    _measurement(sino).to_netcdf(path)
    with pytest.raises(NonFiniteValues, match=r"inf\.nc: variable 'sinogram'"):
        read_measurement(path)
    no_geometry = _measurement()
    del no_geometry.attrs["origin_detector_mm"]
    path = tmp_path / "fan.nc"
    no_geometry.to_netcdf(path)
    with pytest.raises(MissingGeometry, match=r"fan\.nc: variable 'origin_detector_mm'"):
        read_measurement(path)


def test_reference_from_numpy_and_netcdf(tmp_path):
    image = np.random.default_rng(1).random((8, 8))
    np.save(tmp_path / "ref.npy", image)
    ref = read_reference(tmp_path / "ref.npy")
    assert ref.dims == ("slice", "y", "x") and ref.attrs["kind"] == "image"
    np.testing.assert_allclose(ref.values[0], image, rtol=1e-6)
    np.savez(tmp_path / "both.npz", truth=(image > 0.5).astype(np.int64), other=image)
    seg = read_reference(tmp_path / "both.npz")
    assert seg.attrs["kind"] == "segmentation" and seg.dtype == np.uint8
    xr.Dataset({"image": (("slice", "y", "x"), image[None])}).to_netcdf(tmp_path / "ref.nc")
    assert read_reference(tmp_path / "ref.nc").attrs["variable"] == "image"
    with pytest.raises(InvalidMeasurement, match="'missing'"):
        read_reference(tmp_path / "ref.nc", variable="missing")


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_netcdf_and_zarr_open_lazily_one_slice_block_at_a_time(tmp_path, suffix):
    """A region reads its own slices only: nothing is loaded until asked, values equal the file's."""
    sino = np.random.default_rng(1).random((7, 6, 5)).astype(np.float32)
    path = tmp_path / f"many{suffix}"
    ds = _measurement(sino)
    ds.to_netcdf(path) if suffix == ".nc" else ds.to_zarr(path, zarr_format=3, consolidated=False)
    read = read_measurement(path)
    assert not read.sinogram.variable._in_memory, "the sinogram was loaded eagerly"
    assert read.sinogram.dtype == np.float32
    np.testing.assert_array_equal(read.sinogram.isel(slice=slice(3, 5)).values, sino[3:5])


def test_nonfinite_values_counted_over_all_blocks_with_global_index(tmp_path, monkeypatch):
    import inversa.data.schema as schema

    sino = np.ones((9, 6, 5))
    sino[4, 2, 1] = np.nan
    sino[7, 0, 0] = np.inf
    path = tmp_path / "late.nc"
    _measurement(sino).to_netcdf(path)
    blocks = schema._slice_blocks
    monkeypatch.setattr(schema, "_slice_blocks", lambda s: blocks(s, target_bytes=2 * 6 * 5 * 4))  # 2 slices
    with pytest.raises(NonFiniteValues, match=r"2 NaN/Inf value\(s\), first at index \(4, 2, 1\)"):
        read_measurement(path)


def test_zarr_inputs_with_damaged_metadata_or_missing_chunks_are_named(tmp_path):
    store = tmp_path / "scan.zarr"
    ds = _measurement()
    ds.to_zarr(store, zarr_format=3, consolidated=True, encoding={"sinogram": {"chunks": (1, 6, 5)}})
    assert read_measurement(store).sizes["slice"] == ds.sizes["slice"]
    meta = store / "sinogram" / "zarr.json"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])  # consolidated metadata alone would hide this
    with pytest.raises(CorruptFile, match=r"scan\.zarr: variable 'sinogram/zarr\.json': expected valid JSON"):
        read_measurement(store)
    meta.write_text(text)
    chunks = sorted(p for p in (store / "sinogram" / "c").rglob("*") if p.is_file())
    chunks[0].unlink()
    with pytest.raises(CorruptFile, match=r"1 of \d+ chunk files missing \(first sinogram/c/0/0/0\)"):
        read_measurement(store)
