"""From a recipe to the measurement, the grid and the physics operator of a run.

Region tasks receive the recipe (a small dict) and re-derive the measurement and operator
themselves instead of receiving arrays: Prefect would hash and persist big inputs, and a Dask
worker in another process has to read the file anyway. Within one process the parsed
measurement and the built operator are cached, so threads working on neighbouring regions pay
for them once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from inversa.data.digest import file_digest
from inversa.data.readers import read_measurement, read_reference
from inversa.data.schema import default_grid
from inversa.data.subset import angular_wedge, every_kth_view
from inversa.models.physics.tomography import CTGeometry, ct_operator

FILE_READ_LOCK = threading.Lock()  # netCDF4/HDF5 is not thread-safe: one reader at a time per process


@dataclass(frozen=True)
class Grid:
    size: int
    pixel_size_mm: float


def _file_key(path: str) -> tuple:
    p = Path(path)
    try:
        st = p.stat()
        return (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(p), None, None)


@lru_cache(maxsize=2)
def _cached_measurement(key: tuple, path: str, fmt: str | None, options: tuple, wedge: tuple, step: int) -> xr.Dataset:
    ds = read_measurement(path, format=fmt, **dict(options))
    if wedge[0] is not None:
        ds = angular_wedge(ds, angular_range_deg=wedge[0], start_angle_deg=wedge[1])
    if step > 1:
        ds = every_kth_view(ds, step)
    return ds


@lru_cache(maxsize=8)
def _cached_digest(key: tuple, path: str) -> str:
    return file_digest(path)


def input_digest(path: str) -> str:
    """Digest of an input file, computed once per process while the file is unchanged."""
    return _cached_digest(_file_key(path), path)


@lru_cache(maxsize=2)
def _cached_reference(key: tuple, path: str, variable: str | None) -> xr.DataArray:
    return read_reference(path, variable=variable)


def load_reference(path: str, variable: str | None = None) -> xr.DataArray:
    """The reference a recipe names, read once per process (regions would otherwise re-read it)."""
    return _cached_reference(_file_key(path), path, variable)


def load_measurement(recipe: dict[str, Any]) -> xr.Dataset:
    """The validated, subset measurement a recipe describes (lazy where the format allows)."""
    if not recipe.get("input"):
        raise ValueError(f"recipe {recipe.get('name')!r}: no input; give one with --input PATH")
    path = str(recipe["input"])
    options = tuple(sorted((recipe.get("reader_options") or {}).items()))
    wedge = (recipe.get("angular_range_deg"), recipe.get("start_angle_deg") or 0.0)
    with FILE_READ_LOCK:
        return _cached_measurement(
            _file_key(path), path, recipe.get("format"), options, wedge, int(recipe.get("view_step") or 1)
        )


def grid_for(recipe: dict[str, Any], measurement: xr.Dataset) -> Grid:
    size, pixel = default_grid(measurement)
    grid = recipe.get("grid") or {}
    return Grid(size=int(grid.get("size") or size), pixel_size_mm=float(grid.get("pixel_size_mm") or pixel))


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


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("recipe asks for device 'cuda' but no CUDA device is available")
    return torch.device(name)


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


# --------------------------------------------------------------------------------------------
# Working grid and output grid
#
# A trained prior works on its own grid (its image_size pixels of its pixel_size_mm); the user
# wants the result on the output grid (the recipe's, or the measurement's default). Samples are
# drawn on the working grid and resampled to the output grid, both centred on the rotation axis.


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


def uses_gpu(recipe: dict[str, Any]) -> bool:
    """Whether the recipe's region work runs on a CUDA device (it then carries the `gpu` tag)."""
    device = recipe.get("device")
    return device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
