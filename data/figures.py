"""Matplotlib figures rendered to PNG bytes, safely from any thread.

Previews go to ``inversa show --png`` and, as data URIs, into Prefect markdown artifacts, and
they are drawn while regions and flows run in threads. So nothing here touches pyplot's global
state (the current figure, the interactive backend): every figure is a ``Figure`` of its own
with an explicit Agg canvas, which needs no display. Matplotlib does not promise thread safety
even across separate figures (its font and text-layout caches are shared), and a preview takes a
fraction of a second, so drawing and rendering take turns on one lock (``FIGURE_LOCK``).
Matplotlib is imported on first use: it costs most of a second, and most commands draw nothing.
"""

from __future__ import annotations

import base64
import io
import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_LOCK = threading.RLock()
"""Held while a figure is built and rendered (re-entrant: a builder may call other builders)."""


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure with its own Agg canvas and constrained layout (colour bars and titles fit)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: float) -> bytes:
    """The figure as PNG bytes at ``dpi`` (white background, so it reads on dark UIs too)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    with FIGURE_LOCK:
        if not isinstance(fig.canvas, FigureCanvasAgg):
            FigureCanvasAgg(fig)
        fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def image_png(image: np.ndarray, cmap: str = "gray", vmin: float = 0.0, vmax: float = 1.0) -> bytes:
    """A 2D array as a PNG with one pixel per value (no axes), coloured by ``cmap`` over [vmin, vmax].

    For strips of samples whose scale is fixed by the caller (a prior's training range), where
    pixel-exact output matters more than axes.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    from matplotlib import colormaps
    from matplotlib.image import imsave  # writes the pixels through Pillow: no figure, no pyplot

    rgba = colormaps[cmap]((np.clip(image, vmin, vmax) - vmin) / ((vmax - vmin) or 1.0), bytes=True)
    buffer = io.BytesIO()
    imsave(buffer, rgba, format="png")
    return buffer.getvalue()


def robust_limits(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Colour limits between percentiles of the finite values, so a few hot pixels do not wash
    out the rest; (0, 1) when nothing is finite, widened when the image is constant."""
    finite = np.asarray(image, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if hi <= lo:
        pad = abs(lo) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, which the Prefect UI shows inline in markdown."""
    return "data:image/png;base64," + base64.b64encode(png).decode()
