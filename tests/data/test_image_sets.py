"""Training image sets: batches are pure functions of (seed, step); MR images are complex channels; zarr sets."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from inversa.data.errors import InvalidMeasurement
from inversa.data.image_sets import MRBrainImages, ZarrImages, image_set, smooth_phase


def test_mr_brain_images_are_seeded_complex_head_slices():
    images = image_set({"source": "mri-brain", "image_size": 32})
    assert isinstance(images, MRBrainImages) and images.channels == 2 and images.pixel_size_mm is None
    batch = images.batch(seed=3, step=7, size=4)
    assert batch.shape == (4, 2, 32, 32) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, images.batch(seed=3, step=7, size=4))  # resumable training
    assert not np.array_equal(batch, images.batch(seed=3, step=8, size=4))
    magnitude = np.hypot(batch[:, 0], batch[:, 1])
    assert 0.5 < magnitude.max() < 1.5  # about unit magnitude, as the recipe's normalisation assumes
    assert (magnitude[:, :2, :2] < 1e-6).all()  # background in the corners: the head is inside the field
    phase = np.angle(batch[:, 0] + 1j * batch[:, 1])
    inside = magnitude > 0.2
    assert np.ptp(phase[inside]) > 0.3  # not a real image: a phase that varies across the head
    assert images.digest() == image_set({"source": "mri-brain", "image_size": 32}).digest()
    assert images.digest() != image_set({"source": "mri-brain", "image_size": 32, "phase_max": 1.0}).digest()


def test_smooth_phase_is_bounded_and_smooth():
    rng = np.random.default_rng(0)
    phase = smooth_phase((40, 50), rng, max_radians=1.0)
    centred = phase - phase[20, 25]
    assert np.abs(centred).max() <= 1.0 + 1e-9
    assert np.abs(np.diff(phase, axis=0)).max() < 0.2 and np.abs(np.diff(phase, axis=1)).max() < 0.2


def test_zarr_sets_take_real_complex_and_channel_images(tmp_path):
    rng = np.random.default_rng(1)
    real = zarr.open_array(str(tmp_path / "real.zarr"), mode="w", shape=(5, 8, 8), dtype="f4")
    real[:] = rng.random((5, 8, 8))
    complex_ = zarr.open_group(str(tmp_path / "complex.zarr"), mode="w")
    values = (rng.random((6, 8, 8)) + 1j * rng.random((6, 8, 8))).astype(np.complex64)
    complex_.create_array("images", shape=values.shape, dtype=values.dtype)[:] = values
    one = ZarrImages(tmp_path / "real.zarr")
    two = image_set({"source": "zarr", "path": str(tmp_path / "complex.zarr")})
    assert (one.channels, two.channels) == (1, 2)
    assert one.batch(0, 0, 3).shape == (3, 8, 8)
    batch = two.batch(0, 0, 3)
    assert batch.shape == (3, 2, 8, 8)
    picked = np.sort(np.random.default_rng(np.random.SeedSequence([0, 0])).integers(0, 6, size=3))
    np.testing.assert_allclose(batch[:, 0] + 1j * batch[:, 1], values[picked])
    bad = zarr.open_array(str(tmp_path / "bad.zarr"), mode="w", shape=(5, 8, 6), dtype="f4")
    bad[:] = 0
    with pytest.raises(InvalidMeasurement, match="square images"):
        ZarrImages(tmp_path / "bad.zarr")
