"""The MRI measurement schema (data/mri.py): normalisation, every refusal, and the k-space tools."""

import pickle

import numpy as np
import pytest
import xarray as xr

from inversa.data.errors import InvalidMeasurement, NonFiniteValues, ShapeMismatch
from inversa.data.mri import (acceleration_of, build_mri, centre_crop, coil_combined, fft2c, ifft2c, nonzero_mask,
                              noise_sigma_from_outer_kspace, outer_kspace_region, remove_readout_oversampling,
                              validate_mri)

RNG = np.random.default_rng(0)


def _kspace(shape=(2, 3, 8, 6)):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def _dataset(kspace=None, mask=None, **extra):
    k = _kspace() if kspace is None else kspace
    m = np.ones(k.shape[-2:], dtype=bool) if mask is None else mask
    data = {"kspace": (("slice", "coil", "ky", "kx")[-k.ndim:], k),
            "mask": (("ky", "kx") if m.ndim == 2 else ("slice", "ky", "kx")[-m.ndim:], m)}
    data.update(extra)
    return xr.Dataset(data, attrs={"field_of_view_mm": [200.0, 150.0]})


def test_fft2c_is_centred_and_orthonormal():
    image = np.zeros((6, 5), dtype=np.complex128)
    image[3, 2] = 1.0  # the centre pixel (N // 2) has a flat, real, positive spectrum
    k = fft2c(image)
    np.testing.assert_allclose(k, np.full((6, 5), 1 / np.sqrt(30)), atol=1e-12)
    x = _kspace((4, 7, 9)).astype(np.complex128)
    np.testing.assert_allclose(np.linalg.norm(fft2c(x)), np.linalg.norm(x), rtol=1e-12)
    np.testing.assert_allclose(ifft2c(fft2c(x)), x, atol=1e-12)


def test_validate_normalises_dims_dtypes_coords_and_attrs():
    k = _kspace((3, 8, 6)).astype(np.complex128)  # (coil, ky, kx): gains a slice dim
    mask = np.zeros((8, 6), dtype=np.uint8)
    mask[::2] = 1
    ds = validate_mri(_dataset(k, mask), source="scan.h5")
    assert ds.kspace.dims == ("slice", "coil", "ky", "kx") and ds.kspace.dtype == np.complex64
    assert ds.mask.dtype == bool and ds.mask.dims == ("ky", "kx")
    assert list(ds.slice.values) == [0] and list(ds.coil.values) == [0, 1, 2]
    assert np.all(ds.kspace.values[0, :, 1::2] == 0)  # unsampled k-space is zero
    np.testing.assert_array_equal(ds.kspace.values[0, :, ::2], k[:, ::2].astype(np.complex64))
    assert ds.attrs["acceleration"] == 2.0 and ds.attrs["matrix"] == [8, 6]
    assert ds.attrs["readout_oversampling"] == 1.0 and ds.attrs["units"] == "a.u."
    assert ds.attrs["field_of_view_mm"] == [200.0, 150.0] and ds.attrs["source"] == "scan.h5"
    again = validate_mri(ds)
    xr.testing.assert_identical(again, ds)


def test_round_trip_through_netcdf_of_the_real_view(tmp_path):
    # NetCDF has no complex type; the schema survives a round trip of its parts.
    ds = build_mri(_kspace(), np.ones((8, 6), bool), sensitivity=_kspace(), reference=np.ones((2, 8, 6)),
                   attrs={"noise_sigma": np.float32(0.5)})
    assert isinstance(ds.attrs["noise_sigma"], float)
    plain = xr.Dataset({"re": ds.kspace.real, "im": ds.kspace.imag, "mask": ds.mask.astype(np.uint8),
                        "reference": ds.reference}, attrs=ds.attrs)
    plain.to_netcdf(tmp_path / "m.nc")
    back = xr.open_dataset(tmp_path / "m.nc").load()
    rebuilt = validate_mri(xr.Dataset({"kspace": back.re + 1j * back.im, "mask": back["mask"],
                                       "reference": back.reference}, attrs=back.attrs))
    np.testing.assert_array_equal(rebuilt.kspace.values, ds.kspace.values)
    assert rebuilt.attrs["acceleration"] == 1.0 and rebuilt.reference.dtype == np.float32


def test_a_per_slice_mask_is_kept_and_checked_per_slice():
    mask = np.ones((2, 8, 6), dtype=bool)
    mask[1, ::2] = False
    ds = validate_mri(_dataset(mask=mask))
    assert ds.mask.dims == ("slice", "ky", "kx")
    assert ds.attrs["acceleration"] == pytest.approx(96 / 72)
    mask[1] = False
    with pytest.raises(InvalidMeasurement, match=r"'mask': expected at least one sampled location in every slice, "
                                                 r"got no sample in slice\(s\) \[1\]"):
        validate_mri(_dataset(mask=mask))


@pytest.mark.parametrize("case, error, message", [
    ("real", InvalidMeasurement, r"x\.h5: variable 'kspace': expected complex k-space \(complex64\), got real"),
    ("mask shape", ShapeMismatch, r"'mask': expected dims \(ky, kx\) of shape \(8, 6\)"),
    ("mask dims", ShapeMismatch, r"'mask': expected dims \(ky, kx\)"),
    ("no sample", InvalidMeasurement, r"'mask': expected at least one sampled k-space location, got a mask with no"),
    ("no mask", InvalidMeasurement, r"'mask': expected a data variable 'mask'"),
    ("mask values", InvalidMeasurement, r"'mask': expected booleans \(or 0/1 values\)"),
    ("all zero", InvalidMeasurement, r"'kspace': expected nonzero k-space at the sampled locations, got all-zero"),
    ("zero slice", InvalidMeasurement, r"'kspace': expected nonzero k-space in every slice, got all-zero k-space in "
                                       r"slice\(s\) \[1\]"),
    ("nan", NonFiniteValues, r"'kspace': expected finite values only, got 1 NaN/Inf value\(s\), first at index "
                             r"\(0, 1, 2, 3\)"),
    ("kspace dims", ShapeMismatch, r"'kspace': expected dims \('slice', 'coil', 'ky', 'kx'\)"),
    ("coils", ShapeMismatch, r"'sensitivity': expected 3 coils \(as kspace\), got 2 coils"),
    ("sens coils in a dataset", ShapeMismatch, r"'sensitivity': expected dims \('slice', 'coil', 'y', 'x'\)"),
    ("sens shape", ShapeMismatch, r"'sensitivity': expected an image of the k-space matrix \(y, x\) = \(8, 6\), "
                                  r"got \(y, x\) = \(6, 8\)"),
    ("sens nan", NonFiniteValues, r"'sensitivity': expected finite values"),
    ("ref shape", ShapeMismatch, r"'reference': expected an image of the k-space matrix \(y, x\) = \(8, 6\)"),
    ("ref complex", InvalidMeasurement, r"'reference': expected a real \(magnitude\) image"),
    ("ref slices", ShapeMismatch, r"'reference': expected 2 slices \(as kspace\), got 3 slices"),
    ("matrix", ShapeMismatch, r"'matrix': expected the k-space grid \[ny, nx\] = \[8, 6\], got \[6, 8\]"),
    ("fov", InvalidMeasurement, r"'field_of_view_mm': expected two positive numbers \[y, x\]"),
    ("noise", InvalidMeasurement, r"'noise_sigma': expected a non-negative finite number"),
    ("oversampling", InvalidMeasurement, r"'readout_oversampling': expected a number >= 1"),
])
def test_every_refusal_names_file_variable_and_expectation(case, error, message):
    k = _kspace()
    ds = _dataset(k)
    build = None  # arrays whose sizes clash cannot share an xarray.Dataset: build_mri checks them
    if case == "real":
        ds = _dataset(np.abs(k))
    elif case == "mask shape":
        build = {"mask": np.ones((6, 8), bool)}
    elif case == "mask dims":
        ds = _dataset(k).assign(mask=(("coil", "ky", "kx"), np.ones((3, 8, 6), bool)))
    elif case == "no sample":
        ds = _dataset(k, np.zeros((8, 6), bool))
    elif case == "no mask":
        ds = ds.drop_vars("mask")
    elif case == "mask values":
        ds = _dataset(k, np.full((8, 6), 0.5))
    elif case == "all zero":
        ds = _dataset(np.zeros_like(k))
    elif case == "zero slice":
        k[1] = 0
        ds = _dataset(k)
    elif case == "nan":
        k[0, 1, 2, 3] = np.nan
        ds = _dataset(k)
    elif case == "kspace dims":
        ds = xr.Dataset({"kspace": (("slice", "coil", "kx", "ky"), k), "mask": (("ky", "kx"), np.ones((6, 8), bool))})
    elif case == "coils":
        build = {"mask": None, "sensitivity": _kspace((2, 2, 8, 6))}
    elif case == "sens coils in a dataset":
        ds = _dataset(k, sensitivity=(("slice", "channel", "y", "x"), _kspace((2, 2, 8, 6))))
    elif case == "sens shape":
        ds = _dataset(k, sensitivity=(("coil", "y", "x"), _kspace((3, 6, 8))))
    elif case == "sens nan":
        s = _kspace()
        s[0, 0, 0, 0] = np.inf
        ds = _dataset(k, sensitivity=(("slice", "coil", "y", "x"), s))
    elif case == "ref shape":
        ds = _dataset(k, reference=(("slice", "y", "x"), np.ones((2, 8, 5), np.float32)))
    elif case == "ref complex":
        ds = _dataset(k, reference=(("slice", "y", "x"), np.ones((2, 8, 6), np.complex64)))
    elif case == "ref slices":
        build = {"mask": None, "reference": np.ones((3, 8, 6), np.float32)}
    elif case == "matrix":
        ds.attrs["matrix"] = [6, 8]
    elif case == "fov":
        ds.attrs["field_of_view_mm"] = [200.0]
    elif case == "noise":
        ds.attrs["noise_sigma"] = -1.0
    elif case == "oversampling":
        ds.attrs["readout_oversampling"] = 0.5
    with pytest.raises(error, match=message) as caught:
        if build is None:
            validate_mri(ds, source="x.h5")
        else:
            build_mri(k, source="x.h5", **build)
    assert caught.value.path == "x.h5"
    assert type(pickle.loads(pickle.dumps(caught.value))) is error


def test_build_mri_without_a_mask_uses_the_nonzero_pattern():
    k = _kspace((1, 2, 8, 6))
    k[..., 1::2, :] = 0
    k[..., 0, 0] = 0  # one zero sample in a sampled line
    ds = build_mri(k)
    assert ds.attrs["acceleration"] == pytest.approx(48 / 23)
    lines = build_mri(k, lines=True)
    assert lines.attrs["acceleration"] == 2.0
    assert lines.mask.values[::2].all() and not lines.mask.values[1::2].any()


def test_nonzero_mask_is_per_slice_only_when_slices_differ():
    k = _kspace((2, 2, 4, 4))
    assert nonzero_mask(k).shape == (4, 4)
    k[1, :, 0] = 0
    assert nonzero_mask(k).shape == (2, 4, 4)
    assert acceleration_of(nonzero_mask(k)) == pytest.approx(32 / 28)


def test_removing_readout_oversampling_keeps_the_central_image_and_the_noise_level():
    image = np.zeros((4, 16), dtype=np.complex128)
    image[:, 4:12] = RNG.standard_normal((4, 8)) + 1j * RNG.standard_normal((4, 8))
    k, mask = remove_readout_oversampling(fft2c(image), np.ones((4, 16), bool), 8)
    assert k.shape == (4, 8) and mask.shape == (4, 8) and k.dtype == np.complex64
    np.testing.assert_allclose(ifft2c(k), image[:, 4:12], atol=1e-5)
    np.testing.assert_array_equal(centre_crop(np.arange(16), 8), np.arange(4, 12))
    noise = RNG.standard_normal((64, 256)) + 1j * RNG.standard_normal((64, 256))
    cropped, _ = remove_readout_oversampling(noise, None, 128)
    assert np.std(cropped.real) == pytest.approx(1.0, rel=0.03)
    varying = np.ones((4, 16), bool)
    varying[0, 3] = False
    with pytest.raises(InvalidMeasurement, match="'mask': expected a line mask"):
        remove_readout_oversampling(fft2c(image), varying, 8, source="f.h5")


def test_coil_combined_is_the_root_sum_of_squares_of_the_coil_images():
    image = RNG.random((2, 8, 6)).astype(np.float32)
    maps = _kspace((1, 3, 8, 6))
    maps /= np.sqrt((np.abs(maps) ** 2).sum(axis=1, keepdims=True))
    ds = build_mri(fft2c(maps * image[:, None]).astype(np.complex64))
    rss = coil_combined(ds)
    assert rss.dims == ("slice", "y", "x") and rss.dtype == np.float32
    np.testing.assert_allclose(rss.values, image, atol=1e-5)
    mask = np.ones((8, 6), bool)
    mask[1::2] = False
    with pytest.raises(InvalidMeasurement, match="expected fully sampled k-space"):
        coil_combined(build_mri(fft2c(maps * image[:, None]).astype(np.complex64), mask))
    assert coil_combined(build_mri(fft2c(maps * image[:, None]).astype(np.complex64), mask),
                         allow_undersampled=True).shape == (2, 8, 6)


def test_noise_from_outer_kspace_recovers_a_known_sigma_under_an_image():
    yy, xx = np.mgrid[:128, :128]
    image = np.exp(-((yy - 64.0) ** 2 + (xx - 64.0) ** 2) / (2 * 20.0 ** 2)) * 50.0
    sigma = 0.3
    k = fft2c(np.broadcast_to(image, (4, 128, 128))) + sigma * (RNG.standard_normal((4, 128, 128))
                                                               + 1j * RNG.standard_normal((4, 128, 128)))
    mask = np.ones((128, 128), bool)
    mask[1::3] = False
    estimate = noise_sigma_from_outer_kspace(k * mask, mask)
    assert estimate == pytest.approx(sigma, rel=0.05)
    assert noise_sigma_from_outer_kspace(k * mask) == pytest.approx(sigma, rel=0.05)  # nonzero samples
    region = outer_kspace_region((100, 100), 0.1)
    assert region[0, 50] and region[97, 50] and region[50, 96] and not region[50, 50] and not region[6, 50]
    with pytest.raises(InvalidMeasurement, match="outer 10% of each axis"):
        noise_sigma_from_outer_kspace(k[:1, 60:68, 60:68] * 0 + 1j, np.zeros((8, 8), bool))
