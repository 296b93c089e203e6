"""Reader for scattered field observations in CSV files (plain, .gz, .xz, .bz2, .zip).

A recipe maps the file's columns onto the schema of data/fields.py, e.g.
``{"x": "longitude", "y": "latitude", "value": "gravity_mgal"}``; ``value`` may be a list of
columns (a vector field: a ``component`` dim named after them) and ``time`` a column when the
file has one row per (time, sensor): rows are then gathered on a ``time`` dim, sensors being
the distinct (x, y), and a sensor not observed at a time is NaN there (a gap, see data/fields.py).

pandas (a dependency of xarray) does the parsing and decompression (by file suffix).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from inversa.data.errors import CorruptFile, DuplicateCoordinates, InvalidMeasurement, NonFiniteValues
from inversa.data.fields import COMPONENT, SENSOR, TIME, VALUE, validate_field_observations
from inversa.data.projection import project_lonlat
from inversa.data.readers.sniff import require_exists

LONLAT_NAMES = {"lon", "long", "longitude"}, {"lat", "latitude"}
PROJECTIONS = ("auto", "lonlat", None)


def _numeric_column(frame: pd.DataFrame, column: str, path) -> np.ndarray:
    """The column as float64; an entry that is neither a number nor empty names its file line."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=np.float64)
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = numbers.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InvalidMeasurement(
            path, column, "numbers (empty cells for missing values)",
            f"{raw.iloc[row]!r} in data row {row + 1} (line {row + 2} of the file), {int(bad.sum())} such cells",
        )
    return numbers.to_numpy(dtype=np.float64)


def _is_lonlat(columns: Mapping) -> bool:
    return str(columns["x"]).lower() in LONLAT_NAMES[0] and str(columns["y"]).lower() in LONLAT_NAMES[1]


def read_field_csv(path, columns: Mapping, units: str | None = None, projection: str | None = "auto",
                   coord_units: str = "m", duplicates: str = "error") -> xr.Dataset:
    """Read scattered observations as a validated ``value(sensor)`` dataset.

    ``columns``: ``x``, ``y``, ``value`` (a name or a list of names), optional ``time``.
    ``units``: the unit of the values (required: CSV has no metadata). ``projection``:
    ``"lonlat"`` treats x, y as longitude, latitude degrees and projects them to metres with
    data/projection.py (``attrs["crs"]`` keeps the PROJ string, ``lon``/``lat`` coords keep the
    input); ``None`` takes x, y as already metric in ``coord_units`` (``"m"`` or ``"mm"``);
    ``"auto"`` (default) projects when the x, y columns are named lon/longitude, lat/latitude.
    ``duplicates``: see ``validate_field_observations``.
    """
    path = require_exists(path)
    if not isinstance(columns, Mapping) or not {"x", "y", VALUE} <= set(columns):
        raise InvalidMeasurement(
            path, "columns", "a mapping with keys x, y, value (and optionally time)", repr(columns)
        )
    if projection not in PROJECTIONS:
        raise InvalidMeasurement(path, "projection", f"one of {PROJECTIONS}", repr(projection))
    if not isinstance(units, str) or not units:
        raise InvalidMeasurement(path, "units", "the unit of the values (CSV files carry none)", repr(units))
    value_columns = [columns[VALUE]] if isinstance(columns[VALUE], str) else list(columns[VALUE])
    time_column = columns.get(TIME)
    wanted = [columns["x"], columns["y"], *value_columns] + ([time_column] if time_column else [])
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise CorruptFile(path, "(file)", "a CSV file with a header row", f"{type(error).__name__}: {error}") from None
    missing = [name for name in wanted if name not in frame.columns]
    if missing:
        raise InvalidMeasurement(
            path, str(missing[0]), f"a column of the file (columns: {list(frame.columns)})", "absent"
        )
    if len(frame) == 0:
        raise InvalidMeasurement(path, "(rows)", "at least one data row", "none")

    x = _numeric_column(frame, columns["x"], path)
    y = _numeric_column(frame, columns["y"], path)
    values = np.stack([_numeric_column(frame, name, path) for name in value_columns], axis=1)
    if not np.isfinite(values).any():
        raise NonFiniteValues(path, ", ".join(value_columns), "at least one finite value", "all values are missing")
    located = np.isfinite(x) & np.isfinite(y)
    if not located.all():
        row = int(np.flatnonzero(~located)[0])
        raise NonFiniteValues(path, f"{columns['x']}, {columns['y']}", "a position on every row",
                              f"missing in data row {row + 1} (line {row + 2}), {int((~located).sum())} such rows")

    attrs = {"units": units, "source_columns": repr(dict(columns)), "n_rows": int(len(frame))}
    coords = {}
    if projection == "lonlat" or (projection == "auto" and _is_lonlat(columns)):
        lon, lat = x, y
        x, y, crs = project_lonlat(lon, lat, source=path)
        attrs["crs"] = crs
        coord_units = "m"
        coords = {"lon": (SENSOR, lon, {"units": "degrees_east"}), "lat": (SENSOR, lat, {"units": "degrees_north"})}

    dims: tuple = (SENSOR,)
    if time_column:
        time = _numeric_column(frame, time_column, path)
        if not np.isfinite(time).all():
            raise NonFiniteValues(path, time_column, "a time on every row", "missing times")
        times, t_index = np.unique(time, return_inverse=True)
        pairs, s_index = np.unique(np.stack([x, y], axis=1), axis=0, return_inverse=True)
        s_index = s_index.reshape(-1)
        counts = np.zeros((times.size, pairs.shape[0]), dtype=np.int64)
        np.add.at(counts, (t_index, s_index), 1)
        if (counts > 1).any():
            if duplicates == "error":
                t, s = np.argwhere(counts > 1)[0]
                raise DuplicateCoordinates(
                    path,
                    f"{columns['x']}, {columns['y']}, {time_column}",
                    "one row per (time, sensor) (or duplicates='mean')",
                    f"{int((counts - 1).clip(0).sum())} repeated rows, e.g. at time {float(times[t])!r}, "
                    f"x={float(pairs[s, 0])!r}, y={float(pairs[s, 1])!r}",
                )
        sums = np.zeros((times.size, pairs.shape[0], values.shape[1]))
        n = np.zeros_like(sums)
        finite = np.isfinite(values)
        np.add.at(sums, (t_index, s_index), np.where(finite, values, 0.0))
        np.add.at(n, (t_index, s_index), finite)
        values = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
        if coords:  # the projected positions of each distinct sensor
            first = np.unique(s_index, return_index=True)[1]
            coords = {k: (SENSOR, v[1][first], v[2]) for k, v in coords.items()}
        x, y = pairs[:, 0], pairs[:, 1]
        coords[TIME] = (TIME, times, {"column": str(time_column)})
        dims = (TIME, SENSOR)
    if len(value_columns) > 1:
        dims = dims + (COMPONENT,)
        coords[COMPONENT] = (COMPONENT, np.asarray(value_columns, dtype=str))
    else:
        values = values[..., 0]
    ds = xr.Dataset(
        {VALUE: (dims, values, {"columns": ", ".join(value_columns)})},
        coords={"x": (SENSOR, x, {"units": coord_units}), "y": (SENSOR, y, {"units": coord_units}), **coords},
        attrs=attrs,
    )
    try:
        return validate_field_observations(ds, source=path, duplicates=duplicates)
    except DuplicateCoordinates as error:  # name the file's columns and rows, not the schema's
        if time_column:
            raise
        raise DuplicateCoordinates(path, f"{columns['x']}, {columns['y']}", error.expected,
                                   f"{error.got} (sensor index i is data row i + 1)") from None
