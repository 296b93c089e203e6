"""BART's ``.cfl``/``.hdr`` pairs: complex64 arrays in Fortran order with a text header.

The header's ``# Dimensions`` line lists up to 16 sizes in BART's order (``md_dims``): 0 READ
(readout, our ``kx``), 1 PHS1 (phase encode, ``ky``), 2 PHS2 (partition, ``kz``), 3 COIL,
4 MAPS, 5 TE, 6 COEFF, 7 COEFF2, 8 ITER, 9 CSHIFT, 10 TIME, 11 TIME2, 12 LEVEL, 13 SLICE,
14 AVG, 15 BATCH. Supported here: READ, PHS1, COIL and SLICE; every other dimension must have
size 1 (a 3-D ``kz`` axis, ESPIRiT maps, echoes or time frames are refused, not silently
flattened). BART's FFT is centred like ours, so k-space is taken as is. Without a separate
pattern the sampling pattern is where any coil is nonzero, as BART's ``pics`` assumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inversa.data.errors import CorruptFile, InvalidMeasurement, MissingFile, MissingGeometry, ShapeMismatch
from inversa.data.mri import build_mri

BART_DIMS = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER", "CSHIFT", "TIME", "TIME2",
             "LEVEL", "SLICE", "AVG", "BATCH")
READ_DIM, PHS1_DIM, PHS2_DIM, COIL_DIM, SLICE_DIM = 0, 1, 2, 3, 13


def bart_base(path) -> Path:
    """``name``, ``name.cfl`` or ``name.hdr`` -> ``name`` (the pair's common stem)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path


def read_dims(base) -> list[int]:
    """The ``# Dimensions`` line of ``base.hdr``."""
    base = bart_base(base)
    hdr = base.with_suffix(".hdr")
    if not hdr.is_file():
        raise MissingFile(hdr, "(file)", "a BART header next to the .cfl file", "nothing at that path")
    lines = hdr.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("# dimensions"):
            try:
                dims = [int(v) for v in lines[i + 1].split()]
            except (IndexError, ValueError):
                raise CorruptFile(hdr, "# Dimensions", "a line of integer sizes after '# Dimensions'",
                                  repr(lines[i + 1] if i + 1 < len(lines) else "")) from None
            if not dims or len(dims) > len(BART_DIMS) or any(d < 1 for d in dims):
                raise CorruptFile(hdr, "# Dimensions", f"1 to {len(BART_DIMS)} positive sizes", repr(lines[i + 1]))
            return dims
    raise MissingGeometry(hdr, "# Dimensions", "a '# Dimensions' line followed by the array sizes", "none")


def read_cfl(base) -> np.ndarray:
    """The array of ``base.cfl``, shaped by ``base.hdr`` in BART's (Fortran) order, complex64."""
    base = bart_base(base)
    dims = read_dims(base)
    cfl = base.with_suffix(".cfl")
    if not cfl.is_file():
        raise MissingFile(cfl, "(file)", "the BART data file next to its .hdr", "nothing at that path")
    count = int(np.prod(dims))
    size = cfl.stat().st_size
    if size != count * 8:
        raise CorruptFile(cfl, "(data)", f"{count} complex64 values ({count * 8} bytes) as the header says",
                          f"{size} bytes")
    return np.fromfile(cfl, dtype=np.complex64, count=count).reshape(dims, order="F")


def write_cfl(base, array) -> Path:
    """Write ``array`` (in BART's dimension order) as ``base.hdr`` and ``base.cfl``; returns the base."""
    base = bart_base(base)
    array = np.asarray(array, dtype=np.complex64)
    if array.ndim > len(BART_DIMS):
        raise ValueError(f"BART arrays have at most {len(BART_DIMS)} dims, got {array.ndim}")
    dims = list(array.shape) + [1] * max(0, 5 - array.ndim)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    np.asfortranarray(array).reshape(-1, order="F").tofile(base.with_suffix(".cfl"))
    return base


def to_schema(array: np.ndarray, source, variable: str = "kspace") -> np.ndarray:
    """BART-ordered k-space -> ``(slice, coil, ky, kx)``; refuses sizes > 1 outside READ, PHS1, COIL, SLICE."""
    dims = list(array.shape) + [1] * (len(BART_DIMS) - array.ndim)
    extra = {BART_DIMS[i]: n for i, n in enumerate(dims)
             if n > 1 and i not in (READ_DIM, PHS1_DIM, COIL_DIM, SLICE_DIM)}
    if extra:
        hint = " (3-D k-space: inverse-FFT along kz and move it to SLICE first)" if "PHS2" in extra else ""
        raise InvalidMeasurement(source, variable, f"2-D Cartesian k-space: sizes > 1 only in READ, PHS1, COIL, "
                                 f"SLICE{hint}", f"dims {dims} ({', '.join(f'{k}={v}' for k, v in extra.items())})")
    full = array.reshape(dims)
    squeezed = full[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :, 0, 0]  # (READ, PHS1, COIL, SLICE)
    return np.ascontiguousarray(np.transpose(squeezed, (3, 2, 1, 0)))


def read_bart(path, mask=None, **attrs):
    """Read BART k-space (``name``, ``name.cfl`` or ``name.hdr``) as a validated MRI measurement.

    ``mask``: a sampling pattern, as a bool array ``(ky, kx)``/``(slice, ky, kx)`` or the path of
    a BART pattern file (READ x PHS1 [x ... x SLICE], nonzero = sampled); default the nonzero
    pattern of the data. ``attrs``: schema attrs the file cannot carry (``field_of_view_mm``,
    ``noise_sigma``, ``units``).
    """
    base = bart_base(path)
    source = base.with_suffix(".cfl")
    kspace = to_schema(read_cfl(base), source)
    if mask is not None and isinstance(mask, (str, Path)):
        pattern_base = bart_base(mask)
        pattern = to_schema(read_cfl(pattern_base), pattern_base.with_suffix(".cfl"), "pattern")
        if pattern.shape[1] != 1:
            raise ShapeMismatch(pattern_base.with_suffix(".cfl"), "pattern", "a pattern with COIL = 1",
                                f"{pattern.shape[1]} coils")
        mask = pattern[:, 0] != 0
        mask = mask[0] if mask.shape[0] == 1 else mask
    return build_mri(kspace, mask, attrs={**attrs, "format": "bart"}, source=source)
