"""Everything a CT reconstruction needs, derived from the recipe in one place.

Planning, calibration and every region build the same things in the same order: the
measurement, the output grid, the sampler (with its prior's network on the run's device), the
grid the sampler works on (the prior's, else the output grid), the projector for that grid and
the resampler from it to the output grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import xarray as xr

from inversa.models.physics.tomography import CTGeometry
from inversa.models.resampling import Grid, GridResampler, working_grid
from inversa.models.samplers import Sampler
from inversa.tasks.core.devices import resolve_device
from inversa.tasks.kinds.ct.measurement import geometry_for, grid_for, load_measurement, operator_for
from inversa.tasks.kinds.ct.methods import build_sampler, prior_of
from inversa.tasks.kinds.ct.recipe import CTRecipe


@dataclass(frozen=True)
class Setup:
    measurement: xr.Dataset
    grid: Grid  # the output grid
    work: Grid  # the grid the sampler works on
    geometry: CTGeometry  # of the working grid
    device: torch.device
    sampler: Sampler
    prior: Any  # the sampler's trained prior (any family), or None

    @property
    def resampler(self) -> GridResampler:
        return GridResampler(self.work, self.grid)

    def operator(self):
        """The projector of the working grid on the run's device (cached per process)."""
        return operator_for(self.geometry, self.device)


# What the geometry's fields are called where a user sets them (the input's attrs, the recipe).
GEOMETRY_WORDS = {
    "CTGeometry.det_spacing": "attribute detector_spacing_mm", "CTGeometry.det_offset": "attribute detector_offset_mm",
    "CTGeometry.source_origin": "attribute source_origin_mm", "CTGeometry.origin_detector": "attribute origin_detector_mm",
    "CTGeometry.n_det": "the detector count", "CTGeometry.angles": "coordinate angle",
    "CTGeometry.image_size": "grid.size", "CTGeometry.pixel_size": "grid.pixel_size_mm",
    "CTGeometry.kind": "attribute geometry",
}


def geometry_words(message: str) -> str:
    for internal, public in GEOMETRY_WORDS.items():
        message = message.replace(internal, public)
    return message


def validated(measurement: xr.Dataset, grid: Grid, recipe: CTRecipe) -> CTGeometry:
    """The scan's geometry on ``grid``, or an error that names the input file and the setting at fault."""
    try:
        return geometry_for(measurement, grid).validate()
    except ValueError as exc:
        raise ValueError(f"{recipe.input}: {geometry_words(str(exc))}") from None


def solving_grid(recipe: CTRecipe, grid: Grid) -> Grid:
    """The recipe's ``working_grid`` for a method without a prior, over the output's field of view
    unless it sets its own pixel size; else the output grid itself."""
    spec = recipe.working_grid
    if spec is None or (spec.size is None and spec.pixel_size_mm is None):
        return grid
    fov = grid.size * grid.pixel_size_mm
    size = spec.size or max(8, round(fov / spec.pixel_size_mm))
    return Grid(size=int(size), pixel_size_mm=float(spec.pixel_size_mm or fov / size))


def setup_for(recipe: CTRecipe, device: torch.device | None = None) -> Setup:
    """The run's pieces; ``device`` defaults to the recipe's (``auto``: a GPU when there is one)."""
    device = resolve_device(recipe.device) if device is None else device
    measurement = load_measurement(recipe)
    grid = grid_for(recipe, measurement)
    sampler = build_sampler(recipe.method.name, recipe.method.params, device)
    prior = prior_of(sampler)
    work = working_grid(prior, grid) if prior is not None else solving_grid(recipe, grid)
    geometry = validated(measurement, work, recipe)
    return Setup(measurement, grid, work, geometry, device, sampler, prior)
