"""From a recipe to the measurement, the grid and the physics operator of a run.

Region tasks receive the recipe (a small dict) and re-derive the measurement and operator
themselves instead of receiving arrays: Prefect would hash and persist big inputs, and a Dask
worker in another process has to read the file anyway. Within one process the parsed
measurement and the built operator are cached, so threads working on neighbouring regions pay
for them once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from data.digest import file_digest
from data.readers import read_measurement, read_reference
from data.schema import default_grid
from data.subset import angular_wedge, every_kth_view
from models.physics.tomography import CTGeometry, ct_operator

_lock = threading.Lock()


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
    with _lock:
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
    with _lock:
        op = _operators.get(key)
        if op is None:
            if len(_operators) >= 4:
                _operators.pop(next(iter(_operators)))
            op = ct_operator(geometry).to(device=device, dtype=dtype)
            _operators[key] = op
        return op
