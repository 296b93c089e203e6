"""From a CT recipe to the measurement, the grid, the physics operator and the reference of a run.

Every task of a run (plan, calibration, each region) re-derives these from the recipe; within
one process the parsed measurement, the reference and the built operator are cached (by file
version, tasks/core/inputs.py), so threads working on neighbouring regions pay for them once.
"""

from __future__ import annotations


import numpy as np
import torch
import xarray as xr

from inversa.data.readers import read_measurement, read_reference
from inversa.data.schema import default_grid
from inversa.data.subset import angular_wedge, every_kth_view
from inversa.models.noise import estimate_noise_sigma
from inversa.models.physics.tomography import CTGeometry, ct_operator
from inversa.models.resampling import Grid
from inversa.tasks.core.inputs import FILE_READ_LOCK, cached_by_file_version, file_key
from inversa.tasks.kinds.ct.recipe import MAX_GRID, MIN_GRID, CTRecipe


# Eight versions: a batch's region threads work on several datasets at once, and an entry evicted
# while another dataset opens is closed by xarray's finaliser in whichever thread drops it last;
# with two, a three-dataset batch evicted under load and netCDF4 crashed in that close (twice in
# one afternoon's CI runs on a loaded machine).
@cached_by_file_version(maxsize=8)
def _cached_measurement(key: tuple, path: str, fmt: str | None, options: tuple, wedge: tuple, step: int) -> xr.Dataset:
    ds = read = read_measurement(path, format=fmt, **dict(options))
    if wedge[0] is not None:
        ds = angular_wedge(ds, angular_range_deg=wedge[0], start_angle_deg=wedge[1])
    if step > 1:
        ds = every_kth_view(ds, step)
    if ds is not read:
        ds.set_close(read.close)  # the cache closes a changed file's old version through the subset
    return ds


@cached_by_file_version(maxsize=8)
def _cached_reference(key: tuple, path: str, variable: str | None) -> xr.DataArray:
    return read_reference(path, variable=variable)


def load_reference(path: str, variable: str | None = None) -> xr.DataArray:
    """The reference a recipe names, read once per process (regions would otherwise re-read it)."""
    with FILE_READ_LOCK:  # as the measurement: one netCDF4/HDF5 open or close at a time
        return _cached_reference(file_key(path), path, variable)


def load_measurement(recipe: CTRecipe) -> xr.Dataset:
    """The validated, subset measurement a recipe describes (lazy where the format allows)."""
    if not recipe.input:
        raise ValueError(f"recipe {recipe.name!r}: no input; give one with --input PATH")
    path = str(recipe.input)
    options = tuple(sorted(recipe.reader_options.items()))
    wedge = (recipe.angular_range_deg, recipe.start_angle_deg)
    with FILE_READ_LOCK:
        return _cached_measurement(file_key(path), path, recipe.format, options, wedge, recipe.view_step)


def grid_for(recipe: CTRecipe, measurement: xr.Dataset) -> Grid:
    """The output grid: the recipe's size and pixel size where given, else the measurement's default."""
    size, pixel = default_grid(measurement)
    if recipe.grid.size is None and not MIN_GRID <= size <= MAX_GRID:
        where = "attribute image_size" if "image_size" in measurement.attrs else "its detector count"
        raise ValueError(f"{recipe.input}: {where} asks for a {size} x {size} grid; inversa reconstructs "
                         f"{MIN_GRID} to {MAX_GRID} pixels per side: set grid.size (--set grid.size=N)")
    return Grid(size=int(recipe.grid.size or size), pixel_size_mm=float(recipe.grid.pixel_size_mm or pixel))


def geometry_for(measurement: xr.Dataset, grid: Grid) -> CTGeometry:
    attrs = measurement.sinogram.attrs | measurement.attrs
    fan = attrs["geometry"] == "fan"
    return CTGeometry(
        kind=attrs["geometry"],
        angles=np.asarray(measurement["angle"].values, dtype=np.float64),
        n_det=int(measurement.sizes["detector"]),
        det_spacing=float(attrs["detector_spacing_mm"]),
        det_offset=float(attrs.get("detector_offset_mm", 0.0) or 0.0),
        source_origin=float(attrs["source_origin_mm"]) if fan else None,
        origin_detector=float(attrs["origin_detector_mm"]) if fan else None,
        image_size=grid.size,
        pixel_size=grid.pixel_size_mm,
    )


_operators: dict[tuple, torch.nn.Module] = {}


def operator_for(geometry: CTGeometry, device: torch.device, dtype: torch.dtype = torch.float32):
    """The projector for a geometry, built once per process and device."""
    key = (
        geometry.kind, geometry.angles.tobytes(), geometry.n_det, geometry.det_spacing, geometry.det_offset,
        geometry.source_origin, geometry.origin_detector, geometry.image_size, geometry.pixel_size,
        str(device), dtype,
    )
    with FILE_READ_LOCK:
        op = _operators.get(key)
        if op is None:
            if len(_operators) >= 4:
                _operators.pop(next(iter(_operators)))
            op = ct_operator(geometry).to(device=device, dtype=dtype)
            _operators[key] = op
        return op


def noise_levels(measurement: xr.Dataset, sino: torch.Tensor) -> torch.Tensor:
    """Per-slice noise sigma: the measurement's, else estimated from the sinogram."""
    sigma_attr = measurement.attrs.get("noise_sigma")
    if sigma_attr is not None:
        return torch.full((sino.shape[0],), float(sigma_attr), device=sino.device)
    return estimate_noise_sigma(sino)


def reference_block(recipe: CTRecipe, start: int, stop: int, shape: tuple[int, int]
                    ) -> tuple[np.ndarray, str] | None:
    """The reference slices of a region and their kind ("image" or "segmentation"), if any."""
    if not recipe.reference:
        return None
    ref = load_reference(recipe.reference, recipe.reference_variable)
    if tuple(ref.shape[-2:]) != tuple(shape):
        raise ValueError(
            f"{recipe.reference}: variable {ref.name!r}: expected images of {shape[0]} x {shape[1]} "
            f"(the reconstruction grid), got {ref.shape[-2]} x {ref.shape[-1]}"
        )
    block = np.asarray(ref.isel(slice=slice(start, stop)).values, dtype=np.float32)
    return block, ref.attrs.get("kind", "image")
