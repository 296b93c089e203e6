"""Small simulated studies for flow and CLI tests (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inversa.data.synthetic import write_study

TINY_GEOMETRY = {"geometry": "parallel", "n_det": 48, "detector_spacing_mm": 1.6}


def tiny_study(directory: Path, n_slices: int = 4, seed: int = 7) -> tuple[Path, Path]:
    """Parallel-beam HTC-like discs, 32 x 32 pixels, 40 views over 180 degrees."""
    return write_study(
        directory,
        name="tiny",
        kind="htc-discs",
        n_slices=n_slices,
        image_size=32,
        pixel_size_mm=2.4,
        geometry=TINY_GEOMETRY,
        angles=np.linspace(0, np.pi, 40, endpoint=False),
        noise={"model": "gaussian", "relative_sigma": 0.01},
        seed=seed,
    )
