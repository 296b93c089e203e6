"""Grey-scale PNG previews without an imaging dependency.

Previews go into Prefect markdown artifacts (as data URIs) and `inversa show --png`; a few
lines of zlib keep matplotlib and Pillow out of the runtime dependencies.
"""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import numpy as np


def to_uint8(image: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Scale to 0..255 between robust percentiles (NaN shows as black)."""
    image = np.asarray(image, dtype=np.float64)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo = np.percentile(finite, 0.5) if vmin is None else vmin
    hi = np.percentile(finite, 99.5) if vmax is None else vmax
    scaled = (np.nan_to_num(image, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a 2D uint8 array (or a float array, scaled by `to_uint8`)."""
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {pixels.shape}")
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels scaled independently and laid out left to right on a white gap."""
    panels = [to_uint8(im) for im in images]
    height = max(p.shape[0] for p in panels)
    out = []
    for i, p in enumerate(panels):
        padded = np.zeros((height, p.shape[1]), np.uint8)
        padded[: p.shape[0]] = p
        out.append(padded)
        if i < len(panels) - 1:
            out.append(np.full((height, gap), 255, np.uint8))
    return np.concatenate(out, axis=1)


def downsample(image: np.ndarray, max_size: int) -> np.ndarray:
    """Block-average so the larger side is at most `max_size` pixels (keeps NaN as NaN)."""
    factor = int(np.ceil(max(image.shape) / max_size))
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.write_bytes(encode_png(image))
    return path
