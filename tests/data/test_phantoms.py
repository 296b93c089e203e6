import math

import numpy as np
import pytest

from inversa.data.phantoms import (HTC_DISC_MU_PER_MM, Ellipse, disc_with_holes, pixel_centres, random_ellipses,
                           rasterize, segmentation, shepp_logan)


def test_rasterised_area_and_centre_follow_the_grid_convention():
    p = 0.5
    e = Ellipse(2.0, cx=6.0, cy=-4.0, a=5.0, b=2.5, phi=math.radians(30))
    image = rasterize([e], 64, p, supersample=8)
    area = image.sum() * p * p / 2.0
    assert area == pytest.approx(math.pi * 5.0 * 2.5, rel=2e-3)
    x, y = pixel_centres(64, p)[None, :], pixel_centres(64, p)[:, None]
    # y grows with the row index, x with the column index
    assert (image * x).sum() / image.sum() == pytest.approx(6.0, abs=1e-2)
    assert (image * y).sum() / image.sum() == pytest.approx(-4.0, abs=1e-2)
    # a is along phi: the image's principal axis points at 30 degrees
    w = image / image.sum()
    cxx = (w * (x - 6) ** 2).sum()
    cyy = (w * (y + 4) ** 2).sum()
    cxy = (w * (x - 6) * (y + 4)).sum()
    assert 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy)) == pytest.approx(30.0, abs=0.5)


def test_shepp_logan_is_scaled_and_oriented_like_the_textbook():
    phantom = shepp_logan(100.0, intensity=2.0)
    image = rasterize(phantom, 128, 100.0 / 128)
    assert image.max() == pytest.approx(2.0 * 1.0, abs=1e-5)  # skull rim
    assert image[64, 64] == pytest.approx(2.0 * 0.2, abs=1e-5)  # brain matter
    # ellipse 5 (value +0.1 over brain) sits in the top half when row 0 is displayed on top
    top, bottom = image[:64], image[64:]
    assert np.isclose(top, 0.6).sum() > np.isclose(bottom, 0.6).sum()


def test_disc_with_holes_is_binary_with_separate_holes_inside_the_disc():
    for seed in range(20):
        phantom = disc_with_holes(np.random.default_rng(seed))
        disc, holes = phantom[0], phantom[1:]
        assert 1 <= len(holes) <= 6 and disc.a == disc.b == 35.0
        assert disc.value == HTC_DISC_MU_PER_MM and all(h.value == -disc.value for h in holes)
        for i, h in enumerate(holes):
            assert math.hypot(h.cx - disc.cx, h.cy - disc.cy) + max(h.a, h.b) <= disc.a - 1.5 + 1e-9
            for g in holes[i + 1:]:
                assert math.hypot(h.cx - g.cx, h.cy - g.cy) >= max(h.a, h.b) + max(g.a, g.b)
    image = rasterize(phantom, 96, 76.0 / 96, supersample=1)
    assert set(np.unique(image)) <= {0.0, np.float32(HTC_DISC_MU_PER_MM)}


def test_segmentation_and_random_ellipses():
    phantom = disc_with_holes(np.random.default_rng(3))
    mask = segmentation(phantom, 64, 76.0 / 64)
    image = rasterize(phantom, 64, 76.0 / 64)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert np.all(image[mask == 1] > 0.5 * HTC_DISC_MU_PER_MM)
    assert np.all(image[mask == 0] <= 0.5 * HTC_DISC_MU_PER_MM)
    ellipses = random_ellipses(np.random.default_rng(0), 50.0, n_ellipses=6)
    assert len(ellipses) == 7
    values = rasterize(ellipses, 64, 50.0 / 64)
    assert values.min() >= 0.0 and values.max() <= 1.5 + 1e-6
    assert random_ellipses(np.random.default_rng(0), 50.0, n_ellipses=6) == ellipses
