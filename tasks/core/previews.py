"""Drawing a kind's ``Preview``: a PNG for ``inversa show --png`` and markdown for the Prefect UI.

The kind chooses the panels (mean, std, error against a reference, where the reference falls
outside the interval, oriented as they should be seen) and the hints for drawing them (units,
colour map and limits, the axes' extent and labels); drawing is the same for every kind: one
row of panels, each with a title and a colour bar labelled with its units. The UI gets the same
figure at a lower resolution, so the artifact stays small (tens of kilobytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inversa.data.figures import FIGURE_LOCK, data_uri, figure_png, new_figure, robust_limits
from inversa.tasks.core.kind import Panel, Preview

if TYPE_CHECKING:  # matplotlib itself is imported on first drawing (data/figures.py)
    from matplotlib.figure import Figure

PANEL_INCHES = 3.4  # width of one panel with its colour bar
FILE_DPI = 110  # `inversa show --png`: ~370 px per panel
UI_DPI = 64  # the UI's markdown: ~220 px per panel, a PNG of a few tens of kB


def preview_figure(preview: Preview) -> Figure:
    """One row of panels (``fig.axes``), each an image with its colour bar as an inset axes."""
    n = len(preview.panels)
    height = _panel_height(preview)
    with FIGURE_LOCK:
        fig = new_figure(PANEL_INCHES * n, height)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, panel in zip(axes, preview.panels):
            _draw_panel(fig, ax, panel, preview)
    return fig


def _panel_height(preview: Preview) -> float:
    """Tall enough for the image at its aspect in a panel's width, plus the titles."""
    if preview.extent is None:
        shape = preview.panels[0].image.shape
        ratio = shape[0] / max(shape[1], 1)
    else:
        left, right, bottom, top = preview.extent
        unit = preview.aspect if isinstance(preview.aspect, (int, float)) else 1.0
        ratio = abs(top - bottom) * unit / (abs(right - left) or 1.0)
        if preview.aspect == "auto":
            ratio = 1.0
    image_width = PANEL_INCHES * (0.62 if preview.extent else 0.75)  # beside the colour bar (and y labels)
    return float(np.clip(image_width * ratio, 0.5, 2.5 * PANEL_INCHES)) + (1.1 if preview.extent else 0.6)


def _draw_panel(fig: Figure, ax, panel: Panel, preview: Preview) -> None:
    lo, hi = robust_limits(panel.image)
    vmin = lo if panel.vmin is None else panel.vmin
    vmax = hi if panel.vmax is None else panel.vmax
    if not vmax > vmin:
        vmax = vmin + (abs(vmin) * 0.01 or 1.0)
    image = ax.imshow(np.ma.masked_invalid(panel.image), cmap=panel.cmap, vmin=vmin, vmax=vmax,
                      extent=preview.extent, aspect=preview.aspect, origin="upper", interpolation="nearest")
    # The bar is an inset of the panel, so it is exactly as tall as the image at its aspect.
    bar = fig.colorbar(image, cax=ax.inset_axes((1.04, 0.0, 0.05, 1.0)))
    bar.ax.tick_params(labelsize=7)
    if panel.units:
        bar.set_label(panel.units, fontsize=8)
    if panel.ticks is not None:
        bar.set_ticks(list(panel.ticks), labels=list(panel.tick_labels) if panel.tick_labels else None)
    ax.set_title(panel_title(panel, preview), fontsize=9)
    if preview.extent is None:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xlabel(preview.xlabel, fontsize=8)
        ax.set_ylabel(preview.ylabel, fontsize=8)
        ax.tick_params(labelsize=7)


def panel_title(panel: Panel, preview: Preview) -> str:
    """``slice 3, dds`` over ``mean [1/mm]``: where, which method, which panel, in which units."""
    name = f"{panel.label} [{panel.units}]" if panel.units else panel.label
    return f"{preview.title}\n{name}" if preview.title else name


def preview_png(preview: Preview, dpi: float = FILE_DPI) -> bytes:
    with FIGURE_LOCK:
        return figure_png(preview_figure(preview), dpi)


def write_preview_png(preview: Preview, path: str | Path) -> Path:
    """The preview figure as a PNG file at full resolution."""
    path = Path(path)
    path.write_bytes(preview_png(preview, FILE_DPI))
    return path


def preview_markdown(preview: Preview, title: str) -> str:
    """A markdown section with the figure embedded as a data URI (the UI shows it inline)."""
    names = ", ".join(p.label for p in preview.panels)
    return (f"### {title}\n\n{preview.caption}; left to right: {names}.\n\n"
            f"![preview]({data_uri(preview_png(preview, UI_DPI))})\n")
