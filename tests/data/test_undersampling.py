"""Retrospective undersampling masks (data/undersampling.py) and applying them."""

import numpy as np
import pytest

from inversa.data.errors import ShapeMismatch
from inversa.data.mri import acceleration_of, build_mri
from inversa.data.undersampling import equispaced_mask, poisson_disc_mask, random_mask, undersample


@pytest.mark.parametrize("make", [equispaced_mask, random_mask])
def test_line_masks_keep_whole_lines_and_a_fastmri_centre_band(make):
    mask = make((96, 40), 4, center_fraction=0.08, seed=3)
    assert mask.shape == (96, 40) and mask.dtype == bool
    assert (mask == mask[:, :1]).all()  # every kx of a kept ky line
    band = np.zeros(96, bool)
    band[44:52] = True  # round(0.08 * 96) = 8 lines from (96 - 8 + 1) // 2 = 44, holding DC (48)
    assert mask[band].all()
    np.testing.assert_array_equal(make((96, 40), 4, center_fraction=0.08, seed=3), mask)


@pytest.mark.parametrize("acceleration, fraction", [(2, 0.16), (4, 0.08), (8, 0.04), (3.5, 0.1)])
def test_equispaced_reaches_the_overall_acceleration(acceleration, fraction):
    for ny in (96, 230, 320):
        got = acceleration_of(equispaced_mask((ny, 8), acceleration, fraction, seed=1))
        assert got == pytest.approx(acceleration, rel=0.05)


def test_equispaced_lines_are_evenly_spaced_outside_the_centre():
    mask = equispaced_mask((200, 4), 4, 0.04, seed=0)[:, 0]
    gaps = np.diff(np.flatnonzero(mask[:90]))
    assert set(gaps.tolist()) <= {4, 5}  # the adjusted spacing R' = 4.35, rounded


def test_random_mask_uses_the_adjusted_probability():
    # Expected lines ny / R = 64: 20 centre lines plus a binomial count over the other 236 lines
    # with p = (64 - 20) / 236; the mean over seeds hits it, each seed within 4 binomial stds.
    lines = np.array([random_mask((256, 4), 4, 0.08, seed=s)[:, 0].sum() for s in range(40)])
    p = (64 - 20) / 236
    assert lines.mean() == pytest.approx(64, rel=0.04)
    assert np.all(np.abs(lines - 64) < 4 * np.sqrt(236 * p * (1 - p)))
    assert not np.array_equal(random_mask((256, 4), 4, 0.08, seed=1), random_mask((256, 4), 4, 0.08, seed=2))


def test_line_masks_refuse_a_centre_band_that_alone_is_too_dense():
    with pytest.raises(ValueError, match="lower center_fraction"):
        equispaced_mask((100, 4), 8, 0.2)
    assert equispaced_mask((10, 3), 1, 0.0).all()


def _ring_density(mask, edges):
    ny, nx = mask.shape
    ry = (np.arange(ny) - ny // 2) / (ny / 2)
    rx = (np.arange(nx) - nx // 2) / (nx / 2)
    r = np.hypot(ry[:, None], rx[None, :])
    return [mask[(r >= lo) & (r < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("shape, acceleration", [((96, 96), 4), ((128, 100), 6), ((230, 180), 8)])
def test_poisson_disc_reaches_the_acceleration_with_density_falling_outward(shape, acceleration):
    mask = poisson_disc_mask(shape, acceleration, calib=(12, 12), seed=0)
    assert acceleration_of(mask) == pytest.approx(acceleration, rel=0.03)
    ny, nx = shape
    assert mask[ny // 2 - 6: ny // 2 + 6, nx // 2 - 6: nx // 2 + 6].all()  # the calibration box
    density = _ring_density(mask, [0.15, 0.35, 0.55, 0.75, 1.0])
    assert all(a > b for a, b in zip(density[:-1], density[1:])), density
    r = np.hypot(*np.meshgrid((np.arange(ny) - ny // 2) / (ny / 2), (np.arange(nx) - nx // 2) / (nx / 2),
                              indexing="ij"))
    assert not mask[r > 1.0].any()  # corners cropped
    np.testing.assert_array_equal(poisson_disc_mask(shape, acceleration, calib=(12, 12), seed=0), mask)
    assert not np.array_equal(poisson_disc_mask(shape, acceleration, calib=(12, 12), seed=1), mask)


def _mean_nearest_distance(points):
    d = np.hypot(*(points[:, None] - points[None]).transpose(2, 0, 1)).astype(float)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1).mean()


def test_poisson_disc_samples_are_spread_more_evenly_than_random_ones():
    mask = poisson_disc_mask((64, 64), 5, calib=(0, 0), seed=2, crop_corner=False)
    ring = np.hypot(*np.mgrid[-32:32, -32:32]) > 20
    ours = np.argwhere(mask & ring)
    pixels = np.argwhere(ring)
    uniform = pixels[np.random.default_rng(0).choice(len(pixels), size=len(ours), replace=False)]
    # Blue noise: in the same region, the nearest neighbour is farther than for as many random samples.
    assert _mean_nearest_distance(ours) > 1.25 * _mean_nearest_distance(uniform)


def test_poisson_disc_acceleration_matches_sigpy():
    sigpy_mri = pytest.importorskip("sigpy.mri")
    theirs = sigpy_mri.poisson((96, 80), 5, calib=(10, 10), seed=0, crop_corner=True)
    ours = poisson_disc_mask((96, 80), 5, calib=(10, 10), seed=0, crop_corner=True)
    assert acceleration_of(ours) == pytest.approx(5, rel=0.03)
    assert acceleration_of(ours) == pytest.approx(acceleration_of(np.abs(theirs) > 0), rel=0.1)


def test_undersample_applies_the_mask_and_updates_acceleration():
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, 3, 16, 8)) + 1j * rng.standard_normal((2, 3, 16, 8))).astype(np.complex64)
    full = build_mri(k, np.ones((16, 8), bool), attrs={"noise_sigma": 1.0}, source="scan.h5")
    mask = equispaced_mask((16, 8), 2, 0.125, seed=0)
    under = undersample(full, mask)
    assert under.attrs["acceleration"] == acceleration_of(mask) == 16 / mask[:, 0].sum()
    assert under.attrs["noise_sigma"] == 1.0 and under.attrs["source"] == "scan.h5"
    np.testing.assert_array_equal(under.kspace.values, k * mask)
    np.testing.assert_array_equal(under.mask.values, mask)
    twice = undersample(under, np.roll(mask, 1, axis=0))  # only samples measured and selected survive
    np.testing.assert_array_equal(twice.mask.values, mask & np.roll(mask, 1, axis=0))
    per_slice = undersample(full, np.stack([mask, np.roll(mask, 1, axis=0)]))
    assert per_slice.mask.dims == ("slice", "ky", "kx")
    with pytest.raises(ShapeMismatch, match=r"scan\.h5: variable 'mask': expected an undersampling mask of shape "
                                            r"\(ky, kx\) = \(16, 8\)"):
        undersample(full, mask.T)
