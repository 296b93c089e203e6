import zlib

import numpy as np

from inversa.data.png import encode_png, side_by_side, to_uint8


def _decode(png: bytes) -> np.ndarray:
    """A minimal PNG reader for 8-bit grey, filter 0: enough to check our writer round-trips."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", None, None
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        tag, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        crc = int.from_bytes(png[pos + 8 + length : pos + 12 + length], "big")
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc
        if tag == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:]


def test_png_round_trip_preserves_pixels():
    image = (np.arange(35 * 17) % 256).astype(np.uint8).reshape(35, 17)
    assert np.array_equal(_decode(encode_png(image)), image)


def test_scaling_handles_nan_and_constant_images():
    assert to_uint8(np.full((3, 3), np.nan)).max() == 0
    assert to_uint8(np.ones((3, 3))).shape == (3, 3)
    ramp = to_uint8(np.linspace(0, 1, 101)[None, :], vmin=0, vmax=1)
    assert ramp[0, 0] == 0 and ramp[0, -1] == 255


def test_panels_are_laid_side_by_side():
    out = side_by_side([np.zeros((4, 5)), np.ones((6, 3))], gap=2)
    assert out.shape == (6, 10)
