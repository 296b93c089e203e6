"""Longitude/latitude to metres, so that distances (GP length scales, PDE derivatives) are metric.

The choice: a transverse Mercator on the WGS84 ellipsoid centred on the data's mean longitude
and latitude (``+proj=tmerc +lon_0=<mean lon> +lat_0=<mean lat> +k=1``). It is conformal (local
angles and shapes kept, which matters for isotropic kernels), exact on the central meridian and
with a scale error of about (Δλ cos φ)²/2 away from it: under 1 % for a survey ±8° wide such as the
Southern Africa gravity stations. For a continent-wide data set an equal-area projection would
distort less; none of the inputs of this project is that large.

The PROJ string is returned and stored in the dataset's ``attrs["crs"]`` so a reconstruction can be
mapped back to longitude/latitude with :func:`unproject_xy`.
"""

from __future__ import annotations

import numpy as np
from pyproj import CRS, Transformer

from inversa.data.errors import InvalidMeasurement, NonFiniteValues

WGS84 = "EPSG:4326"


def tmerc_crs(lon0: float, lat0: float) -> str:
    """The PROJ string of the transverse Mercator centred on (lon0, lat0), metres."""
    return f"+proj=tmerc +lat_0={lat0:.10g} +lon_0={lon0:.10g} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def _check_lonlat(lon: np.ndarray, lat: np.ndarray, source) -> None:
    for name, values, limit in (("longitude", lon, 360.0), ("latitude", lat, 90.0)):
        if not np.isfinite(values).all():
            raise NonFiniteValues(source, name, "finite degrees", f"{int((~np.isfinite(values)).sum())} non-finite")
        if values.size and np.abs(values).max() > limit:
            largest = f"max |value| {np.abs(values).max():g}"
            raise InvalidMeasurement(source, name, f"degrees within ±{limit:g}", largest)


def project_lonlat(lon, lat, crs: str | None = None, source=None) -> tuple[np.ndarray, np.ndarray, str]:
    """Project degrees to metres: ``(x, y, crs_string)``.

    ``crs``: a PROJ string to reuse (e.g. to put new points on an existing grid); by default the
    transverse Mercator centred on the points' mean longitude/latitude.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.shape != lat.shape or lon.size == 0:
        raise InvalidMeasurement(source, "longitude, latitude", "two non-empty arrays of one shape",
                                 f"shapes {lon.shape} and {lat.shape}")
    _check_lonlat(lon, lat, source)
    if crs is None:
        # Mean longitude through the unit circle so data across the antimeridian centres correctly.
        lon0 = float(np.degrees(np.arctan2(np.sin(np.radians(lon)).mean(), np.cos(np.radians(lon)).mean())))
        crs = tmerc_crs(lon0, float(lat.mean()))
    transformer = Transformer.from_crs(WGS84, CRS.from_proj4(crs), always_xy=True)
    x, y = transformer.transform(lon, lat)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), crs


def unproject_xy(x, y, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Metres in ``crs`` (the string recorded by :func:`project_lonlat`) back to ``(lon, lat)`` degrees."""
    transformer = Transformer.from_crs(CRS.from_proj4(crs), WGS84, always_xy=True)
    lon, lat = transformer.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(lon), np.asarray(lat)
