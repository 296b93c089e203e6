"""Drawing a kind's ``Preview``: a PNG for ``inversa show --png`` and markdown for the Prefect UI.

The kind chooses the panels (mean, std, error against a reference, oriented as they should be
seen); drawing them is the same for every kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inversa.data.png import data_uri, downsample, side_by_side, write_png
from inversa.tasks.core.kind import Preview

UI_PANEL_PIXELS = 160  # the larger side of each panel in the UI's markdown (keeps artifacts small)


def preview_image(preview: Preview, max_panel_pixels: int | None = None) -> np.ndarray:
    """The panels side by side as one uint8 image (each panel scaled on its own)."""
    panels = [p.image if max_panel_pixels is None else downsample(p.image, max_panel_pixels)
              for p in preview.panels]
    return side_by_side(panels)


def write_preview_png(preview: Preview, path: str | Path) -> Path:
    """The panels at full resolution as a PNG file."""
    return write_png(path, preview_image(preview))


def preview_markdown(preview: Preview, title: str) -> str:
    """A markdown section with the panels embedded as a data URI (the UI shows it inline)."""
    names = ", ".join(p.label for p in preview.panels)
    image = preview_image(preview, UI_PANEL_PIXELS)
    return f"### {title}\n\n{preview.caption}, left to right: {names}.\n\n![preview]({data_uri(image)})\n"
