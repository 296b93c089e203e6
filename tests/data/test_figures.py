"""Figures rendered to PNG without pyplot: pixel-exact strips, robust limits, data URIs, threads."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from matplotlib.image import imread

from inversa.data.figures import data_uri, figure_png, image_png, new_figure, robust_limits


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png), format="png")


def test_image_png_has_one_pixel_per_value_on_the_given_scale():
    image = np.linspace(0.0, 1.0, 7 * 13).reshape(7, 13)
    image[0, 0] = 2.0  # beyond vmax: clipped to white, not rescaled
    decoded = _decode(image_png(image, "gray", 0.0, 1.0))
    assert decoded.shape[:2] == (7, 13)
    expected = np.clip(image, 0, 1)
    np.testing.assert_allclose(decoded[..., 0], expected, atol=1.5 / 255)
    np.testing.assert_allclose(decoded[..., 1], expected, atol=1.5 / 255)  # grey: every channel the same
    assert _decode(image_png(np.zeros((66, 8 * 66)))).shape[:2] == (66, 528)  # a training strip, to the pixel
    with pytest.raises(ValueError, match="2D"):
        image_png(np.zeros((2, 2, 2)))


def test_robust_limits_ignore_hot_pixels_nan_and_constant_images():
    image = np.zeros((100, 100))
    image[:50] = 1.0
    image[0, 0] = 1e6  # one hot pixel
    image[1, 1] = np.nan
    lo, hi = robust_limits(image)
    assert (lo, hi) == (0.0, 1.0)
    assert robust_limits(np.full((3, 3), np.nan)) == (0.0, 1.0)
    lo, hi = robust_limits(np.full((3, 3), 5.0))
    assert lo < 5.0 < hi


def test_data_uri_carries_the_png_bytes():
    png = image_png(np.eye(4))
    uri = data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_figures_render_concurrently_from_threads():
    def draw(k: int) -> bytes:
        fig = new_figure(2.0, 1.5)
        ax = fig.subplots()
        ax.imshow(np.full((5, 5), float(k)), cmap="viridis", vmin=0, vmax=7)
        ax.set_title(f"figure {k}")
        return figure_png(fig, dpi=50)

    with ThreadPoolExecutor(max_workers=4) as pool:
        pngs = list(pool.map(draw, range(8)))
    images = [_decode(p) for p in pngs]
    assert all(im.shape[:2] == (75, 100) for im in images)
    # each figure shows its own colour (the centre of its image), so no figure drew into another
    centres = [tuple(np.round(im[40, 50, :3], 2)) for im in images]
    assert len(set(centres)) == 8
