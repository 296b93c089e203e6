"""Reader for TSI Insight ASCII ``.vec`` PIV files (Tecplot POINT format), one frame or a series.

A file is a header (``TITLE=``, ``VARIABLES="X mm", "Y mm", "U m/s", "V m/s", "CHC"``, auxiliary
data, ``ZONE I=nx, J=ny, F=POINT``; on one line or several) then ``nx*ny`` rows, x varying
fastest. The result is the gridded schema of data/fields.py with two field variables ``u(y, x)``,
``v(y, x)`` in m/s and coordinates in **mm** (the file's length unit, kept rather than
converted; ``attrs["length_units"]``). ``mask`` is ``CHC > 0`` (Insight: 1 valid, -1 rejected by
the validation filters, -3 outside the mask/no peak); ``u``, ``v`` of invalid vectors become
NaN, and the raw flag stays as ``chc`` for diagnostics. Rows are kept in file order, so ``y``
descends as in the image (top row first).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

from inversa.data.errors import CorruptFile, InvalidMeasurement, ShapeMismatch
from inversa.data.fields import MASK, TIME, validate_gridded_field
from inversa.data.readers.sniff import require_exists

_NUMBER_START = re.compile(r"^\s*[-+.\d]")
_VARIABLES = re.compile(r'VARIABLES\s*=\s*((?:"[^"]*"\s*,?\s*)+)')


def _header_and_rows(path: Path) -> tuple[str, list[str]]:
    try:
        lines = path.read_text(errors="strict").splitlines()
    except (UnicodeDecodeError, OSError) as error:
        raise CorruptFile(path, "(file)", "a TSI Insight ASCII .vec file", f"{type(error).__name__}: {error}") from None
    first = next((i for i, line in enumerate(lines) if _NUMBER_START.match(line)), len(lines))
    return " ".join(lines[:first]), lines[first:]


def read_piv_vec(path) -> xr.Dataset:
    """One ``.vec`` frame as a validated gridded dataset ``u(y, x)``, ``v(y, x)``, ``mask(y, x)``."""
    path = require_exists(path)
    header, rows = _header_and_rows(path)
    listed = _VARIABLES.search(header)
    names = re.findall(r'"([^"]*)"', listed.group(1)) if listed else []
    zone = re.search(r"ZONE\s+I\s*=\s*(\d+)\s*,\s*J\s*=\s*(\d+)", header)
    if zone is None or "F=POINT" not in header.replace(" ", ""):
        raise CorruptFile(
            path, "(header)", "a Tecplot header with ZONE I=.., J=.., F=POINT", header[:120] or "no header"
        )
    keys = [n.split()[0].upper() for n in names[:5]]
    if keys != ["X", "Y", "U", "V", "CHC"]:
        raise CorruptFile(path, "VARIABLES", 'columns "X mm", "Y mm", "U m/s", "V m/s", "CHC"', repr(names))
    units = [n.split()[1] if len(n.split()) > 1 else "" for n in names[:4]]
    if units[:2] != ["mm", "mm"] or units[2:] != ["m/s", "m/s"]:
        raise InvalidMeasurement(path, "VARIABLES", "x, y in mm and u, v in m/s", repr(names))
    nx, ny = int(zone.group(1)), int(zone.group(2))
    try:
        table = np.array([[float(v) for v in row.split(",")[: len(names)]] for row in rows if row.strip()])
    except ValueError as error:
        raise CorruptFile(path, "(rows)", "comma-separated numbers", str(error)) from None
    if table.shape != (nx * ny, len(names)):
        raise ShapeMismatch(
            path, "(rows)", f"{nx}*{ny} rows of {len(names)} numbers (ZONE I, J)", f"shape {table.shape}"
        )
    grid = table.reshape(ny, nx, len(names))
    x, y = grid[0, :, 0], grid[:, 0, 1]
    if not (np.allclose(grid[:, :, 0], x) and np.allclose(grid[:, :, 1], y[:, None])):
        raise ShapeMismatch(path, "X, Y", "a regular grid with x varying fastest", "scattered positions")
    chc = grid[:, :, 4].astype(np.int16)
    ds = xr.Dataset(
        {
            "u": (("y", "x"), grid[:, :, 2], {"units": "m/s"}),
            "v": (("y", "x"), grid[:, :, 3], {"units": "m/s"}),
            MASK: (("y", "x"), chc > 0),
        },
        coords={"x": ("x", x, {"units": "mm"}), "y": ("y", y, {"units": "mm"})},
        attrs={"units": "m/s", "length_units": "mm", "source_file": path.name},
    )
    out = validate_gridded_field(ds, source=path)
    out["chc"] = (("y", "x"), chc, {"meaning": "Insight validity flag: > 0 valid"})
    return out


def read_piv_series(paths) -> xr.Dataset:
    """Frames stacked on ``time`` (the frame index, ``attrs['time_units'] = 'frame'``).

    The files carry no inter-frame time, only the laser pulse separation, so the index is the
    honest coordinate. All frames must share one grid; ``mask`` becomes ``(time, y, x)``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InvalidMeasurement(None, "paths", "at least one .vec file", "none")
    frames = [read_piv_vec(p) for p in paths]
    for path, frame in zip(paths[1:], frames[1:]):
        if frame.sizes != frames[0].sizes or not (
            np.allclose(frame.x, frames[0].x) and np.allclose(frame.y, frames[0].y)
        ):
            raise ShapeMismatch(path, "X, Y", f"the grid of {paths[0].name}", f"sizes {dict(frame.sizes)}")
    series = xr.concat([f.drop_vars("chc") for f in frames], dim=TIME, data_vars="all", coords="minimal",
                       compat="override", join="override", combine_attrs="override")
    series = series.assign_coords({TIME: (TIME, np.arange(len(frames)), {"units": "frame"})})
    series.attrs.update({"time_units": "frame", "source_files": ", ".join(p.name for p in paths)})
    series.attrs.pop("source_file", None)
    out = validate_gridded_field(series, source=paths[0].parent)
    out["chc"] = ((TIME, "y", "x"), np.stack([f["chc"].values for f in frames]))
    return out
