"""Training images for a prior: phantoms made on the fly, or a stack of images in zarr.

Batch ``k`` is a pure function of ``(seed, k)``: phantoms are drawn from a generator seeded by
both, and a zarr set is indexed by indices drawn the same way. Training can therefore resume at
any step without saving a data-loader state, and a restarted run sees the same images. Each set
also has a digest (its generator spec, or the stored array's bytes) recorded in the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import phantoms as ph
from .errors import InvalidMeasurement
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


class ZarrImages:
    """A ``(N, H, W)`` array of images in a zarr store (``variable`` names it in a group)."""

    def __init__(self, path, variable: str = "images", pixel_size_mm: float | None = None):
        import zarr

        self.path = Path(path)
        try:
            node = zarr.open(str(self.path), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr raises several kinds for a non-store
            raise InvalidMeasurement(f"{self.path}: cannot open as a zarr store ({exc})") from exc
        array = node[variable] if hasattr(node, "array_keys") else node
        if array.ndim != 3 or array.shape[1] != array.shape[2] or array.shape[0] < 1:
            raise InvalidMeasurement(f"{self.path}: variable {variable!r} has shape {array.shape}; expected (N, H, H) square images")
        self.array = array
        self.variable = variable
        self.image_size = int(array.shape[1])
        attrs = dict(array.attrs)
        self._pixel = pixel_size_mm if pixel_size_mm is not None else attrs.get("pixel_size_mm")
        self._digest: str | None = None

    @property
    def pixel_size_mm(self) -> float | None:
        return None if self._pixel is None else float(self._pixel)

    def spec(self) -> dict:
        return {"source": "zarr", "path": str(self.path), "variable": self.variable, "count": int(self.array.shape[0]),
                "image_size": self.image_size, "pixel_size_mm": self.pixel_size_mm}

    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            for start in range(0, self.array.shape[0], 256):
                h.update(np.ascontiguousarray(self.array[start:start + 256], dtype=np.float32).tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def batch(self, seed: int, step: int, size: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        idx = np.sort(rng.integers(0, self.array.shape[0], size=size))
        images = np.asarray(self.array.get_orthogonal_selection((idx, slice(None), slice(None))), dtype=np.float32)
        if not np.all(np.isfinite(images)):
            raise InvalidMeasurement(f"{self.path}: variable {self.variable!r} holds NaN or infinite values in images {idx.tolist()}")
        return images


def image_set(spec: dict):
    """Build a set from a recipe's ``data`` block: ``{"source": "phantoms", ...}`` or ``{"source": "zarr", "path": ...}``."""
    spec = dict(spec)
    source = spec.pop("source", "phantoms")
    if source == "phantoms":
        spec.pop("pixel_size_mm", None)
        return PhantomImages(**spec)
    if source == "zarr":
        if "path" not in spec:
            raise ValueError("image set of source 'zarr' needs a 'path'")
        return ZarrImages(spec.pop("path"), **spec)
    raise ValueError(f"image set source must be 'phantoms' or 'zarr', got {source!r}")
