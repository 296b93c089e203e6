"""Training images for a prior: phantoms made on the fly, MR-like brain slices, or images in zarr.

Batch ``k`` is a pure function of ``(seed, k)``: phantoms and brain slices are drawn from a
generator seeded by both, and a zarr set is indexed by indices drawn the same way. Training can
therefore resume at any step without saving a data-loader state, and a restarted run sees the
same images. Each set also has a digest (its generator spec, or the stored array's bytes)
recorded in the checkpoint.

A set yields ``(N, H, W)`` images (``channels == 1``) or ``(N, C, H, W)``: complex MR images as
two channels, real and imaginary (docs/conventions.md, "Real view").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from scipy import ndimage

from . import phantoms as ph
from .errors import InvalidMeasurement
from .mni import brain_slices
from .synthetic import KINDS, _phantom


class PhantomImages:
    """Phantoms of ``kind`` rasterised on ``image_size`` pixels over ``field_of_view_mm``.

    ``intensity_jitter``: each image is scaled by a factor uniform in ``1 +- jitter``, so a prior
    does not insist on one exact attenuation value that a real object may not have.
    """

    def __init__(self, kind: str = "htc-discs", image_size: int = 64, field_of_view_mm: float = 76.0,
                 intensity_jitter: float = 0.0, supersample: int = 4):
        if kind not in KINDS:
            raise ValueError(f"PhantomImages: kind must be one of {KINDS}, got {kind!r}")
        if image_size < 2 or field_of_view_mm <= 0 or not 0 <= intensity_jitter < 1:
            raise ValueError("PhantomImages: need image_size >= 2, field_of_view_mm > 0, 0 <= intensity_jitter < 1")
        self.kind, self.image_size, self.fov = kind, int(image_size), float(field_of_view_mm)
        self.jitter, self.supersample = float(intensity_jitter), int(supersample)

    channels = 1

    @property
    def pixel_size_mm(self) -> float:
        return self.fov / self.image_size

    def spec(self) -> dict:
        return {"source": "phantoms", "kind": self.kind, "image_size": self.image_size,
                "field_of_view_mm": self.fov, "pixel_size_mm": self.pixel_size_mm,
                "intensity_jitter": self.jitter, "supersample": self.supersample}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()

    def batch(self, seed: int, step: int, size: int) -> np.ndarray:
        """``(size, H, W)`` float32 images for training step ``step``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        out = np.empty((size, self.image_size, self.image_size), dtype=np.float32)
        for i in range(size):
            image = ph.rasterize(_phantom(self.kind, rng, self.fov), self.image_size, self.pixel_size_mm, self.supersample)
            factor = 1.0 + self.jitter * (2 * rng.uniform() - 1) if self.jitter else 1.0
            out[i] = image * factor
        return out


class MRBrainImages:
    """Complex MR-like head images: MNI152 T1 axial slices, a scalp, and a smooth random phase.

    Magnitude from real anatomy (``data.mni``, skull-stripped); each image is a random axial
    slice, turned by a random multiple of 90 degrees and mirrored at random (scanners and files
    orient slices differently), scaled so that the brain spans a random fraction of the field of
    view in ``fill`` (a prior then serves matrices of different pixel sizes: the 96 x 96 and
    230 x 180 scans it is used on differ), shifted by up to ``shift`` of the field, with a dark
    skull and a bright scalp band drawn around the brain as real head scans have them, intensity
    scaled by ``1 +- intensity_jitter``, and multiplied by ``exp(i phi)`` with ``phi`` a smooth
    random field of at most ``phase_max`` radians (MR phase varies slowly with B0 and the coils).
    Returned as two channels, real and imaginary; magnitudes about 0..1.
    """

    channels = 2

    def __init__(self, image_size: int = 64, fill: tuple[float, float] = (0.65, 0.9), shift: float = 0.04,
                 intensity_jitter: float = 0.2, phase_max: float = 3.14159, scalp: bool = True):
        fill = tuple(float(f) for f in fill)
        if image_size < 8 or len(fill) != 2 or not 0 < fill[0] <= fill[1] <= 1.5:
            raise ValueError(f"MRBrainImages: need image_size >= 8 and 0 < fill[0] <= fill[1] <= 1.5, got "
                             f"{image_size}, {fill}")
        if not (0 <= shift < 0.5 and 0 <= intensity_jitter < 1 and 0 <= phase_max <= 10):
            raise ValueError("MRBrainImages: need 0 <= shift < 0.5, 0 <= intensity_jitter < 1, 0 <= phase_max <= 10")
        self.image_size, self.fill, self.shift = int(image_size), fill, float(shift)
        self.jitter, self.phase_max, self.scalp = float(intensity_jitter), float(phase_max), bool(scalp)
        slices = brain_slices()
        rows, cols = np.nonzero((slices > 0.05).any(axis=0))
        self.slices = slices[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # the brain's bounding box

    @property
    def pixel_size_mm(self) -> None:
        return None  # a range of pixel sizes by design (see ``fill``)

    def spec(self) -> dict:
        return {"source": "mri-brain", "image_size": self.image_size, "fill": list(self.fill), "shift": self.shift,
                "intensity_jitter": self.jitter, "phase_max": self.phase_max, "scalp": self.scalp,
                "slices": int(len(self.slices)), "template": "MNI152 T1 2009a (nilearn)", "channels": self.channels}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()

    def magnitude(self, rng: np.random.Generator) -> np.ndarray:
        """One ``(S, S)`` magnitude image drawn with ``rng``."""
        n = self.image_size
        brain = np.rot90(self.slices[rng.integers(len(self.slices))], k=int(rng.integers(4)))
        if rng.uniform() < 0.5:
            brain = brain[:, ::-1]
        zoom = n * rng.uniform(*self.fill) / max(brain.shape)
        blurred = ndimage.gaussian_filter(brain, sigma=0.45 / zoom) if zoom < 1 else brain  # no aliasing
        small = np.clip(ndimage.zoom(blurred, zoom, order=1, grid_mode=True, mode="grid-constant"), 0, None)
        canvas = np.zeros((n, n), dtype=np.float32)
        h, w = min(small.shape[0], n), min(small.shape[1], n)
        jitter = rng.integers(-int(self.shift * n), int(self.shift * n) + 1, size=2)
        r0 = int(np.clip((n - h) // 2 + jitter[0], 0, n - h))
        c0 = int(np.clip((n - w) // 2 + jitter[1], 0, n - w))
        canvas[r0:r0 + h, c0:c0 + w] = small[:h, :w]
        if self.scalp:
            canvas = np.maximum(canvas, self._scalp(canvas, rng))
        return canvas * (1.0 + self.jitter * (2 * rng.uniform() - 1))

    def _scalp(self, canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A dark skull then a bright scalp band outside the brain, of random widths and brightness."""
        n = self.image_size
        inside = ndimage.binary_fill_holes(canvas > 0.05)
        distance = ndimage.distance_transform_edt(~inside)
        skull = rng.uniform(0.01, 0.04) * n
        scalp = skull + rng.uniform(0.02, 0.05) * n
        band = (distance > skull) & (distance <= scalp)
        return (band * rng.uniform(0.5, 1.0) * ndimage.gaussian_filter(band.astype(np.float32), 0.7)).astype(np.float32)

    def batch(self, seed: int, step: int, size: int) -> np.ndarray:
        """``(size, 2, S, S)`` float32: real and imaginary parts."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        n = self.image_size
        images = np.stack([self.magnitude(rng) * np.exp(1j * smooth_phase((n, n), rng, self.phase_max))
                           for _ in range(size)])
        return np.stack([images.real, images.imag], axis=1).astype(np.float32)


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, max_radians: float) -> np.ndarray:
    """A smooth random phase map: a random quadratic in (y, x) plus a broad Gaussian bump, scaled so
    that its largest excursion from the centre value is ``max_radians``. MR phase comes from B0
    inhomogeneity and coil phase, both smooth over the field of view."""
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    c = rng.normal(size=6)
    field = c[0] * x + c[1] * y + 0.5 * (c[2] * x * x + c[3] * y * y + c[4] * x * y)
    cy, cx = rng.uniform(-0.6, 0.6, size=2)
    field = field + c[5] * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 0.4 ** 2))
    field = field - field[ny // 2, nx // 2]
    peak = float(np.max(np.abs(field))) or 1.0
    return (rng.uniform(0.3, 1.0) * max_radians / peak * field + rng.uniform(-np.pi, np.pi)).astype(np.float64)


class ZarrImages:
    """Images in a zarr store (``variable`` names the array in a group): square ``(N, H, H)``
    real images, ``(N, H, H)`` complex ones (taken as two channels, real and imaginary), or
    ``(N, C, H, H)`` with ``C`` channels."""

    def __init__(self, path, variable: str = "images", pixel_size_mm: float | None = None):
        import zarr

        self.path = Path(path)
        try:
            node = zarr.open(str(self.path), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr raises several kinds for a non-store
            raise InvalidMeasurement(self.path, variable, "a zarr store holding training images", str(exc)) from exc
        array = node[variable] if hasattr(node, "array_keys") else node
        square = array.ndim in (3, 4) and array.shape[-1] == array.shape[-2] and array.shape[0] >= 1
        if not square or (array.ndim == 4 and np.iscomplexobj(np.empty(0, dtype=array.dtype))):
            raise InvalidMeasurement(self.path, variable, "(N, H, H) real or complex square images, or (N, C, H, H) "
                                     "real ones", f"shape {array.shape}, dtype {array.dtype}")
        self.array = array
        self.variable = variable
        self.complex = np.iscomplexobj(np.empty(0, dtype=array.dtype))
        self.channels = 2 if self.complex else (int(array.shape[1]) if array.ndim == 4 else 1)
        self.image_size = int(array.shape[-1])
        attrs = dict(array.attrs)
        self._pixel = pixel_size_mm if pixel_size_mm is not None else attrs.get("pixel_size_mm")
        self._digest: str | None = None

    @property
    def pixel_size_mm(self) -> float | None:
        return None if self._pixel is None else float(self._pixel)

    def spec(self) -> dict:
        return {"source": "zarr", "path": str(self.path), "variable": self.variable, "count": int(self.array.shape[0]),
                "image_size": self.image_size, "pixel_size_mm": self.pixel_size_mm, "channels": self.channels}

    def _as_float(self, images: np.ndarray) -> np.ndarray:
        if self.complex:
            return np.stack([images.real, images.imag], axis=1).astype(np.float32)
        return np.asarray(images, dtype=np.float32)

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            for start in range(0, self.array.shape[0], 256):
                h.update(np.ascontiguousarray(self._as_float(self.array[start:start + 256])).tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def batch(self, seed: int, step: int, size: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        idx = np.sort(rng.integers(0, self.array.shape[0], size=size))
        rest = (slice(None),) * (self.array.ndim - 1)
        images = self._as_float(np.asarray(self.array.get_orthogonal_selection((idx, *rest))))
        if not np.all(np.isfinite(images)):
            raise InvalidMeasurement(self.path, self.variable, "finite values",
                                     f"NaN or infinite values in images {idx.tolist()}")
        return images


SOURCES = ("phantoms", "mri-brain", "zarr")


def image_set(spec: dict):
    """Build a set from a recipe's ``data`` block: ``{"source": "phantoms", ...}``,
    ``{"source": "mri-brain", ...}`` or ``{"source": "zarr", "path": ...}``."""
    spec = dict(spec)
    source = spec.pop("source", "phantoms")
    if source == "phantoms":
        spec.pop("pixel_size_mm", None)
        return PhantomImages(**spec)
    if source == "mri-brain":
        return MRBrainImages(**spec)
    if source == "zarr":
        if "path" not in spec:
            raise ValueError("image set of source 'zarr' needs a 'path'")
        return ZarrImages(spec.pop("path"), **spec)
    raise ValueError(f"image set source must be one of {', '.join(SOURCES)}, got {source!r}")
