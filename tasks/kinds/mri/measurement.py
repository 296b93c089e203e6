"""From an MRI recipe to k-space, coil sensitivities, noise level and scale, slice by slice.

Every task of a run (plan, calibration, each region) re-derives these from the recipe; within
one process the read (and retrospectively undersampled) k-space, the reference and the ESPIRiT
maps are cached by file version (tasks/core/inputs.py), so threads working on neighbouring
regions pay for them once.

Scale: MR intensities are arbitrary (a scanner's gain, a file's units), while a prior and the
compressed-sensing weight expect images of about unit magnitude. Each slice is therefore
divided by ``scale``, the 99th percentile of its zero-filled SENSE magnitude, before it is
reconstructed, and the result is multiplied back: linear methods are unchanged, and the others
see every dataset at the scale they were made for. Recorded per region in the store's manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from inversa.data.mri import coil_combined, noise_sigma_from_outer_kspace
from inversa.data.readers.mri import read_mri
from inversa.data.readers.mri_reference import read_mri_reference
from inversa.data.undersampling import equispaced_mask, poisson_disc_mask, random_mask, undersample
from inversa.models.physics.espirit import espirit_maps
from inversa.models.physics.mri import SenseOperator
from inversa.tasks.core.inputs import FILE_READ_LOCK, cached_by_file_version, file_key
from inversa.tasks.kinds.mri.recipe import MRIRecipe, SensitivitySpec, UndersamplingSpec

SCALE_PERCENTILE = 99.0
MIN_CALIBRATION = 6  # the smallest fully sampled centre (lines and columns) ESPIRiT is run on
NOISE_FLOOR = 1e-4  # relative to the scale: noiseless (simulated) data still need a noise level > 0


def _mask_for(spec: UndersamplingSpec, shape: tuple[int, int]) -> np.ndarray:
    if spec.pattern == "equispaced":
        return equispaced_mask(shape, spec.acceleration, spec.center_fraction, spec.seed)
    if spec.pattern == "random":
        return random_mask(shape, spec.acceleration, spec.center_fraction, spec.seed)
    return poisson_disc_mask(shape, spec.acceleration, calib=spec.calib, seed=spec.seed)


@dataclass(frozen=True)
class Loaded:
    """The measurement as runs see it, and for a retrospective study the fully sampled data."""

    measurement: xr.Dataset
    fully_sampled: xr.Dataset | None = None


@cached_by_file_version(maxsize=2)
def _cached(key: tuple, path: str, fmt: str | None, options: str, undersampling: str) -> Loaded:
    ds = read_mri(path, format=fmt, **json.loads(options))
    if not undersampling:
        return Loaded(ds)
    spec = UndersamplingSpec.model_validate_json(undersampling)
    if not np.asarray(ds["mask"].values).all():
        raise ValueError(f"{path}: undersampling: the k-space is already undersampled (acceleration "
                         f"{ds.attrs.get('acceleration', 0):.3g}); a retrospective study needs fully sampled data")
    mask = _mask_for(spec, (ds.sizes["ky"], ds.sizes["kx"]))
    return Loaded(undersample(ds, mask), ds)


def load_measurement(recipe: MRIRecipe) -> xr.Dataset:
    """The validated k-space the recipe describes, retrospectively undersampled when it says so."""
    return _load(recipe).measurement


def _load(recipe: MRIRecipe) -> Loaded:
    if not recipe.input:
        raise ValueError(f"recipe {recipe.name!r}: no input; give one with --input PATH")
    path = str(recipe.input)
    spec = recipe.undersampling.model_dump_json() if recipe.undersampling is not None else ""
    with FILE_READ_LOCK:
        return _cached(file_key(path), path, recipe.format, json.dumps(recipe.reader_options, sort_keys=True), spec)


@cached_by_file_version(maxsize=2)
def _cached_reference(key: tuple, path: str, variable: str | None) -> xr.DataArray:
    return read_mri_reference(path, variable)


def load_reference(recipe: MRIRecipe) -> xr.DataArray | None:
    """The magnitude reference for metrics: the recipe's file; else, for a retrospectively
    undersampled study, the root sum of squares of the fully sampled data; else the input's own
    ``reference`` variable; else None."""
    if recipe.reference:
        with FILE_READ_LOCK:
            return _cached_reference(file_key(recipe.reference), recipe.reference, recipe.reference_variable)
    loaded = _load(recipe)
    if loaded.fully_sampled is not None:
        return coil_combined(loaded.fully_sampled)
    ds = loaded.measurement
    return ds["reference"] if "reference" in ds else None


def maps_source(recipe: MRIRecipe, ds: xr.Dataset) -> str:
    """Where this run's maps come from: ``file``, ``espirit`` (the measured centre) or ``prescan``
    (``auto``: the file's, else for a retrospective study the fully sampled data's centre, else
    the measured centre)."""
    source = recipe.sensitivity.source
    if source == "auto":
        return "file" if "sensitivity" in ds else ("prescan" if recipe.undersampling is not None else "espirit")
    return source


def pixel_size_mm(ds: xr.Dataset) -> float:
    """The image's pixel size along x from the header's field of view, else 1 (pixel units)."""
    fov = ds.attrs.get("field_of_view_mm")
    return float(fov[1]) / ds.sizes["kx"] if fov else 1.0


_maps: dict[tuple, np.ndarray] = {}


def sensitivities(recipe: MRIRecipe, ds: xr.Dataset, index: int) -> np.ndarray:
    """Complex ``(C, H, W)`` maps of slice ``index``: the file's, or ESPIRiT's (cached per process)."""
    spec: SensitivitySpec = recipe.sensitivity
    source = maps_source(recipe, ds)
    if source == "file":
        if "sensitivity" not in ds:
            raise ValueError(f"{recipe.input}: sensitivity.source is 'file' but the input has no 'sensitivity' "
                             "variable; use 'espirit' (or 'auto') to estimate them from the calibration region")
        return np.asarray(ds["sensitivity"].isel(slice=index).values)
    undersampling = recipe.undersampling.model_dump_json() if recipe.undersampling is not None else ""
    key = (file_key(str(recipe.input)), undersampling, index, spec.model_dump_json())
    with FILE_READ_LOCK:
        cached = _maps.get(key)
    if cached is not None:
        return cached
    data = _load(recipe).fully_sampled if source == "prescan" else ds
    mask = np.asarray(data["mask"].values, dtype=bool)
    try:
        maps = espirit_map(spec, np.asarray(data["kspace"].isel(slice=index).values),
                           mask[index] if mask.ndim == 3 else mask)
    except ValueError as exc:
        raise ValueError(f"{recipe.input}: slice {index}: {exc}") from None
    with FILE_READ_LOCK:
        if len(_maps) >= 64:
            _maps.pop(next(iter(_maps)))
        _maps[key] = maps
    return maps


def espirit_map(spec: SensitivitySpec, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ESPIRiT maps ``(C, H, W)`` of one slice's k-space, from its largest fully sampled centre."""
    box = calibration_box(mask, spec.calib_width)
    if min(box) < MIN_CALIBRATION:
        raise ValueError(f"the fully sampled centre of k-space is only {box[0]} x {box[1]} samples; ESPIRiT "
                         f"needs at least {MIN_CALIBRATION} x {MIN_CALIBRATION}: give sensitivities in the file, "
                         "or sample more of the centre")
    return espirit_maps(torch.from_numpy(np.ascontiguousarray(kspace)), calib_width=box,
                        kernel_width=kernel_width(spec.kernel_width, box), threshold=spec.threshold,
                        crop=spec.crop).numpy()


def kernel_width(largest: int, box: tuple[int, int]) -> int:
    """ESPIRiT's kernel: at most a third of the calibration region's short side, at least 3.

    A kernel as wide as the region is short leaves the calibration matrix with fewer rows than a
    kernel has coefficients: on the 16-coil brain of ../shared/data/mri, a 6-wide kernel on 8
    calibration lines gave maps with which CG-SENSE diverged (NRMSE 0.95 against 0.17 with a
    3-wide one), while on 14 lines 6 and 4 differ little (0.086, 0.097)."""
    return int(min(largest, max(3, min(box) // 3)))


def calibration_box(mask: np.ndarray, largest: int) -> tuple[int, int]:
    """The largest centred box of k-space, at most ``largest`` on a side, that is fully sampled:
    the calibration region ESPIRiT may use (a wider one would mix in unsampled zeros)."""
    ny, nx = mask.shape
    cy, cx = ny // 2, nx // 2
    size = [min(largest, ny), min(largest, nx)]
    while min(size) > 0:
        y0, x0 = cy - size[0] // 2, cx - size[1] // 2
        if mask[y0:y0 + size[0], x0:x0 + size[1]].all():
            return size[0], size[1]
        # shrink the axis along which the box reaches an unsampled line or column first
        rows = mask[y0:y0 + size[0], x0:x0 + size[1]].all(axis=1)
        size[0 if not rows.all() else 1] -= 2
    return 0, 0


@dataclass(frozen=True)
class SliceBatch:
    """Slices ready for a sampler: k-space, mask and maps as tensors, with noise level and scale."""

    kspace: torch.Tensor  # complex (S, C, H, W)
    mask: torch.Tensor  # bool (S, H, W)
    maps: torch.Tensor  # complex (S, C, H, W)
    noise_sigma: torch.Tensor  # (S,), std of the real and of the imaginary part of a sample
    scale: torch.Tensor  # (S,), see the module docstring

    def operator(self) -> SenseOperator:
        return SenseOperator(self.maps, self.mask)

    def measurement(self) -> torch.Tensor:
        """The scaled k-space in the operator's real view ``(S, C, H, W, 2)``."""
        return torch.view_as_real(self.kspace / self.scale.reshape(-1, 1, 1, 1).to(self.kspace.dtype))

    @property
    def scaled_noise(self) -> torch.Tensor:
        return self.noise_sigma / self.scale


def slice_batch(kspace: np.ndarray, mask: np.ndarray, maps: np.ndarray, noise_sigma: np.ndarray,
                device: torch.device) -> SliceBatch:
    """Tensors on ``device`` from ``(S, C, H, W)`` k-space, ``(S, H, W)`` masks, maps and noise levels,
    with each slice's scale measured on its zero-filled SENSE image (noise levels below
    ``NOISE_FLOOR`` times the scale are raised to it)."""
    k = torch.as_tensor(np.asarray(kspace, dtype=np.complex64), device=device)
    m = torch.as_tensor(np.array(mask, dtype=bool), device=device)
    s = torch.as_tensor(np.asarray(maps, dtype=np.complex64), device=device)
    zero_filled = SenseOperator(s, m).adjoint_complex(k).abs().reshape(k.shape[0], -1)
    scale = torch.quantile(zero_filled.double().cpu(), SCALE_PERCENTILE / 100.0, dim=1).to(torch.float32)
    if not bool((scale > 0).all()):
        raise ValueError("a slice's zero-filled image is zero everywhere: nothing to reconstruct")
    sigma = torch.maximum(torch.as_tensor(np.asarray(noise_sigma, dtype=np.float32)), NOISE_FLOOR * scale)
    return SliceBatch(k, m, s, sigma.to(device), scale.to(device))


def region_batch(recipe: MRIRecipe, start: int, stop: int, device: torch.device) -> SliceBatch:
    """The slices ``start:stop`` of the recipe's measurement."""
    ds = load_measurement(recipe)
    kspace = np.asarray(ds["kspace"].isel(slice=slice(start, stop)).values)
    mask = np.broadcast_to(np.asarray(ds["mask"].values, dtype=bool), (ds.sizes["slice"], ds.sizes["ky"], ds.sizes["kx"]))
    maps = np.stack([sensitivities(recipe, ds, i) for i in range(start, stop)])
    given = ds.attrs.get("noise_sigma")
    if given is not None and float(given) > 0:
        sigma = np.full(stop - start, float(given))
    else:
        sigma = np.array([noise_sigma_from_outer_kspace(kspace[i], mask[start + i]) for i in range(stop - start)])
    return slice_batch(kspace, mask[start:stop], maps, sigma, device)
