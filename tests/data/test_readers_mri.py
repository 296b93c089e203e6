"""MRI readers: fastMRI, ISMRMRD, BART, MATLAB v7.3, NumPy, references, format detection, real files."""

import h5py
import numpy as np
import pytest
import xarray as xr

from inversa.data.errors import CorruptFile, InvalidMeasurement, MissingGeometry, ShapeMismatch, UnknownFormat
from inversa.data.mri import build_mri, coil_combined, fft2c, ifft2c
from inversa.data.readers import mri_format, read_measurement, read_mri, read_mri_reference
from inversa.data.readers.bart import read_cfl, write_cfl
from inversa.data.readers.ismrmrd_header import make_header
from inversa.data.readers.mri_fastmri import write_fastmri
from inversa.data.readers.mri_ismrmrd import write_ismrmrd
from tests.conftest import shared_file

RNG = np.random.default_rng(0)
CHIEW = "mri/chiew_sense16/raw_data.mat"
SIGPY = "mri/sigpy_cartesian_brain/cartesian_ksp.npy"
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def _complex(*shape):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def _line_mask(ny, nx, every=2, centre=2):
    lines = np.zeros(ny, bool)
    lines[::every] = True
    lines[ny // 2 - centre: ny // 2 + centre] = True
    return np.broadcast_to(lines[:, None], (ny, nx)).copy()


def _measurement(n_slices=2, n_coils=3, ny=12, nx=10, mask=None, **attrs):
    k = _complex(n_slices, n_coils, ny, nx)
    return build_mri(k, _line_mask(ny, nx) if mask is None else mask, attrs=attrs)


def write_matlab73(path, arrays: dict, struct: bool = False) -> None:
    """A MATLAB v7.3 file: HDF5 behind a 512-byte user block with MATLAB's header; complex arrays
    as compound (real, imag) datasets or real/imag struct groups; HDF5 holds the reversed axes."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            value = np.asarray(value)
            stored = value.transpose()
            if np.iscomplexobj(value) and struct:
                group = f.create_group(name)
                group.attrs["MATLAB_class"] = np.bytes_(b"struct")
                group.create_dataset("real", data=stored.real)
                group.create_dataset("imag", data=stored.imag)
                continue
            if np.iscomplexobj(value):
                data = np.empty(stored.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                data["real"], data["imag"] = stored.real, stored.imag
            else:
                data = stored.astype(np.float64)
            f.create_dataset(name, data=data).attrs["MATLAB_class"] = np.bytes_(b"double")
    with open(path, "r+b") as f:
        f.write(MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


# ============================================================================ fastMRI
def test_fastmri_round_trip_in_our_layout(tmp_path):
    ds = _measurement(field_of_view_mm=[180.0, 150.0], noise_sigma=0.1)
    ds["sensitivity"] = (("slice", "coil", "y", "x"), _complex(2, 3, 12, 10))
    path = write_fastmri(tmp_path / "scan.h5", ds)
    assert mri_format(path) == "fastmri"
    back = read_mri(path)
    np.testing.assert_array_equal(back.kspace.values, ds.kspace.values)
    np.testing.assert_array_equal(back.mask.values, ds.mask.values)
    np.testing.assert_array_equal(back.sensitivity.values, ds.sensitivity.values)
    assert back.attrs["field_of_view_mm"] == pytest.approx([180.0, 150.0])
    assert back.attrs["noise_sigma"] == pytest.approx(0.1) and back.attrs["format"] == "fastmri"
    assert back.attrs["readout_oversampling"] == 1.0 and back.attrs["acceleration"] == ds.attrs["acceleration"]
    one = read_mri(path, slices=[1])
    np.testing.assert_array_equal(one.kspace.values, ds.kspace.values[1:])
    assert one.slice.values.tolist() == [1]


def _fastmri_native(path, image, recon_x, mask_lines=None, with_mask=True):
    """fastMRI's own layout: kspace (slice, coil, readout, phase) (or single-coil (slice, readout,
    phase)) from an image (slice, [coil,] phase, readout), with a 1-D mask over phase lines."""
    ny, nx = image.shape[-2:]  # readout oversampled to nx
    k = fft2c(image)
    if mask_lines is not None:
        k = k * mask_lines[:, None]
    header = make_header((ny, nx), (200.0, 400.0), recon_matrix=(ny, recon_x), n_slices=image.shape[0])
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=np.swapaxes(k, -1, -2).astype(np.complex64))
        f.create_dataset("ismrmrd_header", data=header)
        if mask_lines is not None and with_mask:
            f.create_dataset("mask", data=mask_lines.astype(np.float32))
        f.attrs["acquisition"] = "CORPD_FBK"
    return k


def test_fastmri_layout_with_readout_oversampling_gives_back_the_central_image(tmp_path):
    ny, nx, recon_x = 14, 24, 12
    image = np.zeros((1, 2, ny, nx), dtype=np.complex64)
    image[..., 6:18] = _complex(1, 2, ny, recon_x)  # nothing outside the central recon_x columns
    path = tmp_path / "knee.h5"
    _fastmri_native(path, image, recon_x)
    ds = read_mri(path)
    assert ds.kspace.shape == (1, 2, ny, recon_x)
    np.testing.assert_allclose(ifft2c(ds.kspace.values), image[..., 6:18], atol=1e-5)
    assert ds.attrs["readout_oversampling"] == 1.0 and ds.attrs["readout_oversampling_removed"] == 2.0
    assert ds.attrs["field_of_view_mm"] == pytest.approx([200.0, 200.0])  # the readout FOV halves
    assert ds.attrs["acceleration"] == 1.0 and ds.attrs["acquisition"] == "CORPD_FBK"
    kept = read_mri(path, remove_oversampling=False)
    assert kept.kspace.shape == (1, 2, ny, nx) and kept.attrs["readout_oversampling"] == 2.0


@pytest.mark.parametrize("with_mask", [True, False])
def test_fastmri_line_masks_from_the_file_or_the_nonzero_lines(tmp_path, with_mask):
    ny, nx, recon_x = 16, 20, 10
    image = np.zeros((2, 1, ny, nx), dtype=np.complex64)
    image[..., 5:15] = _complex(2, 1, ny, recon_x)
    lines = _line_mask(ny, 1, every=3)[:, 0]
    k = _fastmri_native(tmp_path / "s.h5", image[:, 0], recon_x, lines, with_mask=with_mask)
    ds = read_mri(tmp_path / "s.h5")
    assert ds.kspace.shape == (2, 1, ny, recon_x) and ds.mask.dims == ("ky", "kx")
    np.testing.assert_array_equal(ds.mask.values[:, 0], lines)
    assert (ds.mask.values == ds.mask.values[:, :1]).all()
    assert ds.attrs["acceleration"] == pytest.approx(ny / lines.sum())
    expected = ifft2c(k)[..., 5:15]
    np.testing.assert_allclose(ifft2c(ds.kspace.values[:, 0]), expected, atol=1e-5)


def test_fastmri_refusals_name_the_file_and_the_header_field(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_complex(1, 2, 8, 6))
    with pytest.raises(MissingGeometry, match=r"bad\.h5: variable 'ismrmrd_header': expected an ISMRMRD XML header"):
        read_mri(path)
    header = make_header((8, 6), (100, 100)).replace("<encodedSpace><matrixSize><x>6</x>", "<encodedSpace><matrixSize>")
    with h5py.File(path, "a") as f:
        f.create_dataset("ismrmrd_header", data=header)
    with pytest.raises(MissingGeometry, match=r"'ismrmrd_header: encodedSpace/matrixSize/x': expected this element"):
        read_mri(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=np.ones((1, 2, 8, 6), np.float32))
        f.create_dataset("ismrmrd_header", data=make_header((8, 6)))
    with pytest.raises(InvalidMeasurement, match="'kspace': expected complex k-space"):
        read_mri(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_complex(1, 2, 8, 6))
        f.create_dataset("ismrmrd_header", data=make_header((9, 7)))
    with pytest.raises(ShapeMismatch, match="encoded readout length 7"):
        read_mri(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_complex(1, 2, 8, 6))
        f.create_dataset("ismrmrd_header", data=make_header((8, 6)))
        f.create_dataset("mask", data=np.ones(5))
    with pytest.raises(ShapeMismatch, match="'mask': expected a line mask of 8 phase-encode lines"):
        read_mri(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_complex(1, 2, 8, 6))
        f.create_dataset("ismrmrd_header", data="<ismrmrdHeader><encoding>")
    with pytest.raises(CorruptFile, match="well-formed ISMRMRD XML header"):
        read_mri(path)


# ============================================================================ ISMRMRD
def test_ismrmrd_acquisitions_are_placed_by_their_counters_and_noise_is_skipped(tmp_path):
    ds = _measurement(n_slices=2, n_coils=3, ny=12, nx=10, field_of_view_mm=[120.0, 100.0])
    path = write_ismrmrd(tmp_path / "raw.h5", ds, noise_readouts=2)
    assert mri_format(path) == "ismrmrd"
    back = read_mri(path)
    np.testing.assert_array_equal(back.kspace.values, ds.kspace.values)
    np.testing.assert_array_equal(back.mask.values, ds.mask.values)
    assert back.attrs["format"] == "ismrmrd" and back.attrs["field_of_view_mm"] == pytest.approx([120.0, 100.0])


def test_ismrmrd_oversampled_readouts_are_cropped_like_fastmri(tmp_path):
    ny, nx = 10, 16
    image = np.zeros((1, 2, ny, nx), dtype=np.complex64)
    image[..., 4:12] = _complex(1, 2, ny, 8)
    ds = build_mri(fft2c(image).astype(np.complex64), _line_mask(ny, nx, every=2))
    path = write_ismrmrd(tmp_path / "os.h5", ds, recon_width=8)
    back = read_mri(path)
    assert back.kspace.shape == (1, 2, ny, 8) and back.attrs["readout_oversampling_removed"] == 2.0
    lines = back.mask.values[:, 0]
    np.testing.assert_allclose(ifft2c(back.kspace.values), ifft2c(fft2c(image) * lines[:, None])[..., 4:12],
                               atol=1e-5)


def test_ismrmrd_refuses_several_repetitions(tmp_path):
    import ismrmrd

    ds = _measurement(n_slices=1, n_coils=2, ny=6, nx=4, mask=np.ones((6, 4), bool))
    path = write_ismrmrd(tmp_path / "rep.h5", ds)
    out = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    acq = ismrmrd.Acquisition.from_array(_complex(2, 4))
    acq.idx.repetition = 1
    out.append_acquisition(acq)
    out.close()
    with pytest.raises(InvalidMeasurement, match=r"'dataset/data: idx.repetition': expected a single repetition"):
        read_mri(path)


# ============================================================================ BART
def test_bart_dims_and_the_nonzero_pattern(tmp_path):
    nx, ny, n_coils, n_slices = 10, 12, 3, 2
    bart = np.zeros((nx, ny, 1, n_coils) + (1,) * 9 + (n_slices,), dtype=np.complex64)
    data = _complex(nx, ny, n_coils, n_slices)
    data[:, 1::2] = 0  # every other phase-encode line not acquired
    bart[:, :, 0, :, *([0] * 9), :] = data
    base = write_cfl(tmp_path / "ksp", bart)
    np.testing.assert_array_equal(read_cfl(base), bart)
    for name in ("ksp", "ksp.cfl", "ksp.hdr"):
        assert mri_format(tmp_path / name) == "bart"
    ds = read_mri(tmp_path / "ksp.cfl", field_of_view_mm=[240, 200])
    assert ds.kspace.shape == (n_slices, n_coils, ny, nx)
    np.testing.assert_array_equal(ds.kspace.values, data.transpose(3, 2, 1, 0))  # BART (x, y, coil, slice)
    assert ds.mask.dims == ("ky", "kx") and ds.attrs["acceleration"] == 2.0
    assert ds.attrs["field_of_view_mm"] == [240.0, 200.0] and ds.attrs["format"] == "bart"
    pattern = np.zeros((nx, ny), np.complex64)
    pattern[:, ::4] = 1
    write_cfl(tmp_path / "pat", pattern)
    assert read_mri(tmp_path / "ksp", mask=tmp_path / "pat").attrs["acceleration"] == 4.0


def test_bart_refusals(tmp_path):
    write_cfl(tmp_path / "vol", _complex(8, 8, 4, 2))
    with pytest.raises(InvalidMeasurement, match=r"expected 2-D Cartesian k-space: sizes > 1 only in READ, PHS1, COIL, "
                                                 r"SLICE \(3-D k-space"):
        read_mri(tmp_path / "vol")
    write_cfl(tmp_path / "maps", _complex(8, 8, 1, 2, 2))
    with pytest.raises(InvalidMeasurement, match="MAPS=2"):
        read_mri(tmp_path / "maps")
    (tmp_path / "nohdr.hdr").write_text("8 8 1 2\n")
    _complex(8, 8, 1, 2).reshape(-1).tofile(tmp_path / "nohdr.cfl")
    with pytest.raises(MissingGeometry, match=r"nohdr\.hdr: variable '# Dimensions'"):
        read_mri(tmp_path / "nohdr", format="bart")
    (tmp_path / "short.hdr").write_text("# Dimensions\n8 8 1 2\n")
    _complex(8, 8).reshape(-1).tofile(tmp_path / "short.cfl")
    with pytest.raises(CorruptFile, match="expected 128 complex64 values"):
        read_mri(tmp_path / "short")


# ============================================================================ MATLAB v7.3
def test_matlab_compound_and_struct_arrays_with_default_and_named_axes(tmp_path):
    k = _complex(12, 10, 1, 3)  # MATLAB [Nx, Ny, Nz, Nc]
    write_matlab73(tmp_path / "raw.mat", {"raw": k, "te": np.array([[5.0]])})
    assert mri_format(tmp_path / "raw.mat") == "matlab"
    ds = read_mri(tmp_path / "raw.mat")
    # MATLAB's display order: the first in-plane axis becomes the rows (ky)
    np.testing.assert_array_equal(ds.kspace.values[0], k[:, :, 0, :].transpose(2, 0, 1))
    assert ds.attrs["variable"] == "raw" and ds.attrs["matlab_axes"] == "x y z coil"
    named = read_mri(tmp_path / "raw.mat", axes="x y z coil")
    np.testing.assert_array_equal(named.kspace.values, ds.kspace.values)
    swapped = read_mri(tmp_path / "raw.mat", axes="kx ky z coil")
    np.testing.assert_array_equal(swapped.kspace.values[0], k[:, :, 0, :].transpose(2, 1, 0))
    write_matlab73(tmp_path / "struct.mat", {"data": k[:, :, 0, :]}, struct=True)
    np.testing.assert_array_equal(read_mri(tmp_path / "struct.mat").kspace.values, ds.kspace.values)
    slices = _complex(12, 10, 2, 3)
    write_matlab73(tmp_path / "slices.mat", {"k": slices})
    multi = read_mri(tmp_path / "slices.mat", axes="x y slice coil")
    np.testing.assert_array_equal(multi.kspace.values, slices.transpose(2, 3, 0, 1))


def test_matlab_refusals(tmp_path):
    write_matlab73(tmp_path / "real.mat", {"img": RNG.random((8, 8))})
    assert mri_format(tmp_path / "real.mat") is None
    with pytest.raises(InvalidMeasurement, match=r"'img': expected complex k-space"):
        read_mri(tmp_path / "real.mat", format="matlab", variable="img")
    write_matlab73(tmp_path / "two.mat", {"a": _complex(4, 4), "b": _complex(4, 4)})
    with pytest.raises(InvalidMeasurement, match=r"expected exactly one complex array, or variable= naming one, got "
                                                 r"complex arrays \['a', 'b'\]"):
        read_mri(tmp_path / "two.mat")
    write_matlab73(tmp_path / "vol.mat", {"k": _complex(8, 8, 4, 2)})
    with pytest.raises(InvalidMeasurement, match="a partition \\(z, kz\\) axis of length 1"):
        read_mri(tmp_path / "vol.mat")
    with pytest.raises(InvalidMeasurement, match="axes naming each of the array's 4 axes once"):
        read_mri(tmp_path / "vol.mat", axes="x y coil")
    with pytest.raises(UnknownFormat, match="MRI k-space: read_mri"):
        read_measurement(tmp_path / "vol.mat")


# ============================================================================ NumPy
@pytest.mark.parametrize("shape, expected", [((12, 10), (1, 1, 12, 10)), ((3, 12, 10), (1, 3, 12, 10)),
                                             ((2, 3, 12, 10), (2, 3, 12, 10))])
def test_npy_by_rank_with_the_nonzero_pattern(tmp_path, shape, expected):
    k = _complex(*shape)
    k[..., 1::3, :] = 0
    np.save(tmp_path / "k.npy", k)
    assert mri_format(tmp_path / "k.npy") == "numpy"
    ds = read_mri(tmp_path / "k.npy", noise_sigma=0.5)
    assert ds.kspace.shape == expected and ds.attrs["noise_sigma"] == 0.5
    np.testing.assert_array_equal(ds.kspace.values.reshape(shape), k)
    assert ds.attrs["acceleration"] == pytest.approx(12 / 8)


def test_npz_with_mask_sensitivity_reference_and_attrs(tmp_path):
    k = _complex(2, 3, 8, 6)
    mask = np.zeros(8, bool)
    mask[::2] = True
    sens, ref = _complex(2, 3, 8, 6), RNG.random((2, 8, 6)).astype(np.float32)
    np.savez(tmp_path / "k.npz", kspace=k, mask=mask, sensitivity=sens, reference=ref, noise_sigma=0.2,
             field_of_view_mm=np.array([160.0, 120.0]), units="a.u.")
    assert mri_format(tmp_path / "k.npz") == "numpy"
    ds = read_mri(tmp_path / "k.npz")
    np.testing.assert_array_equal(ds.kspace.values, k * mask[:, None])
    np.testing.assert_array_equal(ds.sensitivity.values, sens)
    np.testing.assert_array_equal(ds.reference.values, ref)
    assert ds.attrs["noise_sigma"] == 0.2 and ds.attrs["field_of_view_mm"] == [160.0, 120.0]
    assert ds.attrs["acceleration"] == 2.0
    np.savez(tmp_path / "odd.npz", kspace=k, sens=sens)
    with pytest.raises(InvalidMeasurement, match="'sens': expected one of kspace, mask"):
        read_mri(tmp_path / "odd.npz")


def test_numpy_refusals_and_ct_files_are_not_mri(tmp_path):
    np.save(tmp_path / "real.npy", RNG.random((3, 8, 6)))
    assert mri_format(tmp_path / "real.npy") is None
    with pytest.raises(InvalidMeasurement, match=r"real\.npy: variable '\(array\)': expected complex k-space"):
        read_mri(tmp_path / "real.npy", format="numpy")
    np.savez(tmp_path / "ct.npz", sinogram=RNG.random((4, 5)), angles=np.arange(4.0))
    assert mri_format(tmp_path / "ct.npz") is None
    with pytest.raises(UnknownFormat, match="expected MRI k-space in one of the formats"):
        read_mri(tmp_path / "ct.npz")
    np.save(tmp_path / "five.npy", _complex(1, 1, 2, 4, 4))
    with pytest.raises(ShapeMismatch, match="or axes= naming each axis"):
        read_mri(tmp_path / "five.npy")
    ct = xr.Dataset({"sinogram": (("slice", "angle", "detector"), np.ones((1, 4, 5), np.float32))},
                    coords={"angle": np.linspace(0, 3, 4)}, attrs={"geometry": "parallel", "detector_spacing_mm": 1})
    ct.to_netcdf(tmp_path / "ct.nc")
    assert mri_format(tmp_path / "ct.nc") is None
    with pytest.raises(TypeError, match="numpy files take the reader options"):
        read_mri(tmp_path / "five.npy", variable="k")


# ============================================================================ references
def test_references_from_netcdf_numpy_and_fastmri_hdf5(tmp_path):
    ref = RNG.random((2, 8, 6)).astype(np.float32)
    xr.Dataset({"reference": (("slice", "y", "x"), ref)}).to_netcdf(tmp_path / "s_truth.nc")
    np.testing.assert_array_equal(read_mri_reference(tmp_path / "s_truth.nc").values, ref)
    np.save(tmp_path / "r.npy", ref[0] * np.exp(1j))
    single = read_mri_reference(tmp_path / "r.npy")
    assert single.shape == (1, 8, 6) and single.attrs["from_complex"] == 1
    np.testing.assert_allclose(single.values[0], ref[0], rtol=1e-6)
    # fastMRI stores reconstruction_rss in its own layout (readout rows): transposed like its k-space
    image = np.zeros((1, 1, 8, 12), np.complex64)
    image[..., 3:9] = _complex(1, 1, 8, 6)
    _fastmri_native(tmp_path / "f.h5", image[:, 0], 6)
    rss = np.abs(image[:, 0, :, 3:9]).swapaxes(-1, -2)
    with h5py.File(tmp_path / "f.h5", "a") as f:
        f.create_dataset("reconstruction_rss", data=rss)
    got = read_mri_reference(tmp_path / "f.h5")
    assert got.name == "reconstruction_rss" and got.attrs["transposed_from_fastmri"] == 1
    np.testing.assert_allclose(got.values, np.abs(ifft2c(read_mri(tmp_path / "f.h5").kspace.values[:, 0])),
                               atol=1e-5)


# ============================================================================ real files
def _border_energy_and_centre(image: np.ndarray) -> tuple[float, np.ndarray]:
    """Energy fraction in the outer twelfth of each side, and the energy's centre of mass as a
    fraction of the size: a head whose image is wrapped (a missing FFT shift) is cut at the
    borders (about 35 % of its energy there for both real files, under 4 % when right)."""
    ny, nx = image.shape
    energy = image.astype(np.float64) ** 2
    frame = np.ones(image.shape, bool)
    frame[ny // 12: ny - ny // 12, nx // 12: nx - nx // 12] = False
    yy, xx = np.mgrid[:ny, :nx]
    centre = np.array([(energy * yy).sum() / ny, (energy * xx).sum() / nx]) / energy.sum()
    return float(energy[frame].sum() / energy.sum()), centre


def test_chiew_sense_tutorial_brain_reads_upright_and_fully_sampled():
    path = shared_file(CHIEW)
    assert mri_format(path) == "matlab"
    ds = read_mri(path, axes="x y z coil")
    assert ds.kspace.shape == (1, 16, 96, 96) and ds.attrs["acceleration"] == 1.0
    k = np.abs(ds.kspace.values).sum(axis=(0, 1))
    assert np.unravel_index(k.argmax(), k.shape) == (48, 48)  # centred k-space
    image = coil_combined(ds).values[0]
    border, centre = _border_energy_and_centre(image)
    assert border < 0.08 and np.all(np.abs(centre - 0.5) < 0.12)  # in the middle, not wrapped
    head = image > 0.2 * image.max()
    rows, cols = np.flatnonzero(head.any(axis=1)), np.flatnonzero(head.any(axis=0))
    assert np.ptp(rows) > np.ptp(cols)  # upright: the head is longer front to back (rows) than wide
    np.testing.assert_array_equal(read_mri(path).kspace.values, ds.kspace.values)  # the default axes agree


def test_sigpy_brain_is_poisson_undersampled_by_about_eight():
    path = shared_file(SIGPY)
    raw = np.load(path)
    ds = read_mri(path)
    assert ds.kspace.shape == (1, 8, 230, 180)
    np.testing.assert_array_equal(ds.mask.values, (raw != 0).any(axis=0))
    np.testing.assert_array_equal(ds.kspace.values[0], raw)
    assert ds.attrs["acceleration"] == pytest.approx(8.04, abs=0.05)
    mask = ds.mask.values
    assert mask[115 - 6: 115 + 6, 90 - 6: 90 + 6].all()  # a fully sampled calibration region
    image = coil_combined(ds, allow_undersampled=True).values[0]
    border, centre = _border_energy_and_centre(image)
    assert border < 0.08 and np.all(np.abs(centre - 0.5) < 0.12)
