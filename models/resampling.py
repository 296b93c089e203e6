"""Moving images between a prior's working grid and the user's output grid.

A trained prior works on its own grid (its image_size pixels of its pixel_size_mm); the user
wants the result on the output grid (the recipe's, or the measurement's default). Samples are
drawn on the working grid and resampled to the output grid, both centred on the rotation axis
(pixel centres ``(i - (n - 1) / 2) * p``, docs/conventions.md). Pure numerics: no files, no
pipeline, so the samplers' callers and the benchmarks share one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Grid:
    """A square image grid: ``size`` x ``size`` pixels of ``pixel_size_mm``, centred on the axis."""

    size: int
    pixel_size_mm: float


def working_grid(prior, output: Grid) -> Grid:
    """The grid a prior was trained on; a prior that does not know its pixel size is taken to
    span the output grid's field of view (the only assumption that keeps the object in view)."""
    pixel = prior.pixel_size_mm
    if pixel is None:
        pixel = output.size * output.pixel_size_mm / prior.image_size
    return Grid(size=int(prior.image_size), pixel_size_mm=float(pixel))


def resampling_matrix(n_out: int, pixel_out: float, n_in: int, pixel_in: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights ``(n_out, n_in)`` from input pixel centres to output pixel centres, per axis.

    Centres are ``(i - (n - 1) / 2) * p`` (docs/conventions.md). An output centre inside the
    input's field of view (``|x| <= n_in * p_in / 2``) gets the linear interpolation of its two
    neighbouring input centres, clamped to the outermost centre in the half-pixel band beyond
    it; one outside the field of view gets a zero row. ``inside`` marks the rows that are not zero.
    Applied separably, ``W_y @ image @ W_x.T``, this is bilinear interpolation in 2D.
    """
    if n_out < 1 or n_in < 1 or not (pixel_out > 0 and pixel_in > 0):
        raise ValueError(f"resampling_matrix: sizes must be >= 1 and pixel sizes > 0, got "
                         f"{n_out} x {pixel_out} mm from {n_in} x {pixel_in} mm")
    x = (np.arange(n_out, dtype=np.float64) - (n_out - 1) / 2.0) * pixel_out
    inside = np.abs(x) <= n_in * pixel_in / 2.0 * (1 + 1e-9)
    u = np.clip(x / pixel_in + (n_in - 1) / 2.0, 0.0, n_in - 1)
    low = np.minimum(np.floor(u).astype(np.int64), max(n_in - 2, 0))
    frac = u - low
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    weights[rows, low] += 1.0 - frac
    if n_in > 1:
        weights[rows, low + 1] += frac
    else:
        weights[rows, 0] = 1.0
    weights[~inside] = 0.0
    return weights, inside


class GridResampler:
    """Moves images from the working grid to the output grid (bilinear, see ``resampling_matrix``).

    Equal grids are the identity, exactly. Outside the working grid's field of view images
    become 0: the operator had no pixels there, so the reconstruction asserts nothing but zero.
    Their standard deviation is not 0, though (the data said nothing about those pixels, and a
    zero std would claim certainty): ``extend_std`` copies the nearest in-view value outward.
    """

    def __init__(self, working: Grid, output: Grid):
        self.working, self.output = working, output
        self.identity = (working.size == output.size
                         and math.isclose(working.pixel_size_mm, output.pixel_size_mm, rel_tol=1e-9))
        weights, inside = resampling_matrix(output.size, output.pixel_size_mm, working.size, working.pixel_size_mm)
        self.weights = torch.from_numpy(weights)
        self.inside = inside
        self._on: dict[tuple, torch.Tensor] = {}

    @property
    def all_inside(self) -> bool:
        return bool(self.inside.all())

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(..., N, N)`` on the working grid -> ``(..., M, M)`` on the output grid."""
        if self.identity:
            return images
        key = (images.device, images.dtype)
        w = self._on.get(key)
        if w is None:
            w = self._on[key] = self.weights.to(device=images.device, dtype=images.dtype)
        return w @ images @ w.T

    def extend_std(self, std: np.ndarray) -> np.ndarray:
        """Fill output pixels beyond the working field of view with the nearest in-view value."""
        if self.identity or self.all_inside:
            return std
        index = np.flatnonzero(self.inside)
        if index.size == 0:
            raise ValueError(
                f"the output grid ({self.output.size} x {self.output.pixel_size_mm} mm) does not overlap "
                f"the prior's field of view ({self.working.size} x {self.working.pixel_size_mm} mm)"
            )
        nearest = np.clip(np.arange(self.output.size), index[0], index[-1])
        return std[..., nearest[:, None], nearest[None, :]]
