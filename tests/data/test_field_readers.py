"""Field readers: golden values from the real files of ../shared/data/fields, and bad input."""

from __future__ import annotations

import bz2
import gzip

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pyproj import Geod

from inversa.data.errors import CorruptFile, DuplicateCoordinates, InvalidMeasurement, NonFiniteValues, ShapeMismatch
from inversa.data.projection import unproject_xy
from inversa.data.readers.field_csv import read_field_csv
from inversa.data.readers.field_grid import read_field_grid
from inversa.data.readers.piv_vec import read_piv_series, read_piv_vec
from tests.conftest import shared_file

GRAVITY = "fields/fatiando/southern-africa-gravity.csv.xz"
GRAVITY_COLUMNS = {"x": "longitude", "y": "latitude", "value": "gravity_mgal"}
PIV = "fields/pivpy_soapfilm/Run00000{}.T000.D000.P000.H001.L.vec"
SST = "fields/eofs/sst_ndjfm_anom.nc"


@pytest.fixture(scope="module")
def gravity():
    return read_field_csv(shared_file(GRAVITY), GRAVITY_COLUMNS, units="mGal", duplicates="mean")


def test_gravity_stations_golden_values(gravity):
    assert gravity.attrs["n_rows"] == 14_359
    # 34 rows repeat a station's longitude/latitude: averaged into 14,325 sensors.
    assert gravity.attrs["n_merged"] == 34 and gravity.sizes["sensor"] == 14_325
    values = gravity.value.values
    np.testing.assert_allclose([values.min(), values.max()], [978131.3, 979754.2], rtol=1e-6)
    # Independent check of the averaging: pandas groupby over the raw file.
    raw = pd.read_csv(shared_file(GRAVITY))
    np.testing.assert_allclose(raw.gravity_mgal.mean(), 978882.7908482485, rtol=1e-6)
    by_station = raw.groupby(["longitude", "latitude"]).gravity_mgal.mean()
    expected = by_station.loc[list(zip(gravity.lon.values, gravity.lat.values))].to_numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-12)  # each value at its own station
    assert gravity.attrs["units"] == "mGal" and gravity.x.attrs["units"] == "m"


def test_gravity_projection_round_trips_below_a_millimetre(gravity):
    lon, lat = unproject_xy(gravity.x.values, gravity.y.values, gravity.attrs["crs"])
    metres_per_degree = 111_320.0  # at most, on the equator
    error = np.hypot((lon - gravity.lon.values) * np.cos(np.radians(gravity.lat.values)), lat - gravity.lat.values)
    assert error.max() * metres_per_degree < 1e-3
    # North-south extent equals the meridian arc between the extreme latitudes (scale error < 1 %).
    lat_min, lat_max = gravity.lat.values.min(), gravity.lat.values.max()
    arc = Geod(ellps="WGS84").inv(24.0, lat_min, 24.0, lat_max)[2]
    assert abs(np.ptp(gravity.y.values) / arc - 1) < 0.01
    assert abs(gravity.x.values.mean()) < 5e4 and abs(gravity.y.values.mean()) < 5e4


def test_gravity_duplicates_are_a_clear_error_by_default():
    with pytest.raises(DuplicateCoordinates,
                       match=r"southern-africa-gravity.*'longitude, latitude'.*34 duplicate sensors.*\[5780, 5782\]"):
        read_field_csv(shared_file(GRAVITY), GRAVITY_COLUMNS, units="mGal")


def test_vector_columns_become_a_component_dim():
    ds = read_field_csv(shared_file("fields/fatiando/alps-gps-velocity.csv.xz"),
                        {"x": "longitude", "y": "latitude", "value": ["velocity_east_mmyr", "velocity_north_mmyr"]},
                        units="mm/yr")
    assert ds.value.dims == ("sensor", "component") and ds.sizes["sensor"] == 186
    assert list(ds.component.values) == ["velocity_east_mmyr", "velocity_north_mmyr"]


def write(path, text, opener=open):
    with opener(path, "wt") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("suffix, opener", [(".csv", open), (".csv.gz", gzip.open), (".csv.bz2", bz2.open)])
def test_compressed_metric_csv_and_nan_rows_dropped(tmp_path, suffix, opener):
    path = write(tmp_path / f"obs{suffix}", "east,north,t\n0,0,1.5\n1000,0,\n0,2000,-2.5\n", opener)
    ds = read_field_csv(path, {"x": "east", "y": "north", "value": "t"}, units="K")
    assert "crs" not in ds.attrs and ds.x.attrs["units"] == "m"
    np.testing.assert_array_equal(ds.value.values, [1.5, -2.5])
    np.testing.assert_array_equal(ds.y.values, [0.0, 2000.0])
    assert ds.attrs["n_dropped"] == 1


def test_time_column_gathers_rows_per_sensor(tmp_path):
    path = write(tmp_path / "series.csv", "t,x,y,h\n0,0,0,1\n0,5,0,2\n1,5,0,3\n")
    ds = read_field_csv(path, {"x": "x", "y": "y", "value": "h", "time": "t"}, units="m", coord_units="mm",
                        projection=None)
    assert ds.value.dims == ("time", "sensor") and ds.x.attrs["units"] == "mm"
    np.testing.assert_array_equal(ds.value.values, [[1.0, 2.0], [np.nan, 3.0]])
    np.testing.assert_array_equal(ds.mask.values, [[True, True], [False, True]])
    with pytest.raises(DuplicateCoordinates, match="one row per \\(time, sensor\\)"):
        read_field_csv(write(tmp_path / "dup.csv", "t,x,y,h\n0,0,0,1\n0,0,0,2\n"),
                       {"x": "x", "y": "y", "value": "h", "time": "t"}, units="m")


def test_non_numeric_cell_names_file_column_and_row(tmp_path):
    path = write(tmp_path / "bad.csv.gz", "longitude,latitude,g\n10,45,1.0\n11,46,2.0\n12,47,n/a?\n", gzip.open)
    with pytest.raises(InvalidMeasurement,
                       match=r"bad\.csv\.gz: variable 'g': expected numbers.*'n/a\?' in data row 3 \(line 4"):
        read_field_csv(path, {"x": "longitude", "y": "latitude", "value": "g"}, units="mGal")


def test_all_nan_values_and_missing_columns_raise(tmp_path):
    path = write(tmp_path / "empty.csv", "longitude,latitude,g\n10,45,\n11,46,\n")
    with pytest.raises(NonFiniteValues, match=r"empty\.csv: variable 'g'.*at least one finite value"):
        read_field_csv(path, {"x": "longitude", "y": "latitude", "value": "g"}, units="mGal")
    with pytest.raises(InvalidMeasurement, match=r"'gravity'.*columns: \['longitude', 'latitude', 'g'\]"):
        read_field_csv(path, {"x": "longitude", "y": "latitude", "value": "gravity"}, units="mGal")
    with pytest.raises(InvalidMeasurement, match="'units'.*CSV files carry none"):
        read_field_csv(path, {"x": "longitude", "y": "latitude", "value": "g"})


def test_piv_frame_golden_values():
    ds = read_piv_vec(shared_file(PIV.format(1)))
    assert ds.sizes == {"y": 63, "x": 63}
    assert ds.x.attrs["units"] == "mm" and ds.u.attrs["units"] == "m/s"
    np.testing.assert_allclose(np.diff(ds.x.values), 0.31248, atol=1e-5)
    assert ds.y.values[0] == pytest.approx(-0.31248) and ds.y.values[-1] == pytest.approx(-19.686239)
    invalid = int((~ds.mask).sum())
    assert invalid == 353  # 276 vectors flagged -1 plus 77 flagged -3, 8.9 % of 3,969
    assert invalid == int((ds.chc <= 0).sum())
    assert np.isnan(ds.u.values[~ds.mask.values]).all() and np.isfinite(ds.u.values[ds.mask.values]).all()
    # Row 30 (y = -9.68688 mm), column 20 (x = 6.56208 mm) of the file: u = 0.067049, v = 0.007836 m/s.
    at = ds.isel(y=30, x=20)
    assert (float(at.x), float(at.y)) == pytest.approx((6.56208, -9.68688))
    assert (float(at.u), float(at.v)) == pytest.approx((0.067049, 0.007836), abs=1e-9)


def test_piv_series_stacks_frames_on_time():
    paths = [shared_file(PIV.format(i)) for i in range(1, 6)]
    ds = read_piv_series(paths)
    assert ds.u.dims == ("time", "y", "x") and ds.sizes["time"] == 5
    assert ds.mask.dims == ("time", "y", "x") and ds.attrs["time_units"] == "frame"
    np.testing.assert_array_equal((~ds.mask).sum(("y", "x")).values, [353, 359, 399, 393, 387])
    np.testing.assert_array_equal(ds.u.isel(time=0).values, read_piv_vec(paths[0]).u.values)


def test_piv_bad_header_and_truncated_file(tmp_path):
    text = shared_file(PIV.format(1)).read_text().splitlines()
    no_zone = write(tmp_path / "nozone.vec", "\n".join([text[0].split("ZONE")[0]] + text[1:]))
    with pytest.raises(CorruptFile, match="nozone.vec.*ZONE I=.., J=.., F=POINT"):
        read_piv_vec(no_zone)
    short = write(tmp_path / "short.vec", "\n".join(text[:-5]))
    with pytest.raises(ShapeMismatch, match=r"short.vec.*63\*63 rows.*shape \(3964, 5\)"):
        read_piv_vec(short)


def test_sst_grid_golden_values():
    ds = read_field_grid(shared_file(SST), units="K")
    assert ds.value.shape == (50, 18, 30) and ds.value.dims == ("time", "y", "x")
    assert ds.mask.dims == ("y", "x")  # land does not move between winters
    assert int((~ds.mask).sum()) == 90  # 90 of 540 cells are land: 16.7 %
    assert ds.x.attrs["units"] == "degrees_east" and ds.x.attrs["original_name"] == "longitude"
    np.testing.assert_allclose(ds.x.values[[0, -1]], [117.5, 262.5])
    np.testing.assert_allclose(ds.y.values[[0, -1]], [-22.5, 62.5])
    np.testing.assert_allclose(float(ds.value.mean()), 0.12328939383781458, rtol=1e-6)
    assert ds.attrs["variable"] == "sst" and np.isnan(ds.value.values[:, ~ds.mask.values]).all()


def test_sst_variable_selection_errors_list_the_variables():
    with pytest.raises(InvalidMeasurement, match=r"'salinity'.*one of the file's field variables \['sst'\]"):
        read_field_grid(shared_file(SST), variable="salinity", units="K")
    with pytest.raises(InvalidMeasurement, match=r"sst\.attrs\['units'\].*units=\.\.\."):
        read_field_grid(shared_file(SST))


def test_zarr_grid_fill_values_and_ambiguous_variable(tmp_path):
    values = np.arange(12.0).reshape(3, 4)
    values[0, 0] = 1e20  # old-style missing marker without an attribute
    other = np.ones((3, 4))
    ds = xr.Dataset(
        {"h": (("lat", "lon"), values, {"units": "m"}), "t": (("lat", "lon"), other, {"units": "K"})},
        coords={"lat": [10.0, 11.0, 12.0], "lon": [0.0, 1.0, 2.0, 3.0]},
    )
    ds["t"].encoding["_FillValue"] = -999.0
    ds["t"][1, 1] = np.nan  # written as -999 and decoded back to NaN
    ds.to_zarr(tmp_path / "g.zarr", consolidated=False)
    with pytest.raises(InvalidMeasurement, match=r"variable=NAME naming one of \['h', 't'\]"):
        read_field_grid(tmp_path / "g.zarr")
    h = read_field_grid(tmp_path / "g.zarr", variable="h")
    assert h.value.dims == ("y", "x") and not bool(h.mask[0, 0]) and int(h.mask.sum()) == 11
    t = read_field_grid(tmp_path / "g.zarr", variable="t")
    assert not bool(t.mask[1, 1]) and int(t.mask.sum()) == 11 and t.attrs["units"] == "K"


SMALL_VEC = """TITLE="small"
VARIABLES="X mm", "Y mm", "U m/s", "V m/s", "CHC"
ZONE I=3, J=2, F=POINT
1.0, -1.0, 0.1, 0.2, 1
2.0, -1.0, 0.3, 0.4, 1
3.0, -1.0, 0.0, 0.0, -3
1.0, -2.0, 0.5, 0.6, 1
2.0, -2.0, 0.0, 0.0, -1
3.0, -2.0, 0.7, 0.8, 1
"""


def test_piv_header_on_several_lines_and_series_of_different_grids(tmp_path):
    small = write(tmp_path / "small.vec", SMALL_VEC)
    ds = read_piv_vec(small)
    np.testing.assert_array_equal(ds.x.values, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ds.y.values, [-1.0, -2.0])
    np.testing.assert_array_equal(ds.mask.values, [[True, True, False], [True, False, True]])
    np.testing.assert_allclose(ds.v.values[1, 2], 0.8)
    with pytest.raises(ShapeMismatch, match=r"small\.vec.*the grid of Run000001"):
        read_piv_series([shared_file(PIV.format(1)), small])


# ------------------------------------------------------------------ gaps versus land in gridded inputs

GAP, LAND = (1, 2), (4, 7)  # (lat, lon) cells missing at every time step: a gap, and a land cell


def _grid_series(path, **extra):
    """A small gridded time series in K with ``GAP`` and ``LAND`` missing at every time step."""
    lat, lon = np.arange(6.0) * 5, 100 + np.arange(8.0) * 5
    gy, gx = np.meshgrid(lat, lon, indexing="ij")
    values = np.stack([np.sin(gx / 9 + t) + np.cos(gy / 7) for t in range(3)])
    values[:, GAP[0], GAP[1]] = np.nan
    values[:, LAND[0], LAND[1]] = np.nan
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), values, {"units": "K"})},
                    coords={"time": [0.0, 1.0, 2.0], "lat": lat, "lon": lon})
    for name, (dims, data) in extra.items():
        ds[name] = (dims, data)
    ds.to_netcdf(path)
    return path


def _land(value_land, value_sea, dtype=float):
    mask = np.full((6, 8), value_sea, dtype=dtype)
    mask[LAND] = value_land
    return (("lat", "lon"), mask)


def test_cells_missing_at_every_time_step_are_gaps_unless_a_mask_says_land(tmp_path):
    plain = read_field_grid(_grid_series(tmp_path / "plain.nc"), variable="sst")
    assert "domain" not in plain and not plain.mask.values[..., GAP[0], GAP[1]].any()  # unobserved, not outside
    masks = {
        "lsm": _land(1.0, 0.0),  # ERA5's convention: 1 on land
        "lsmask": _land(0, 1, np.int8),  # NOAA's: 1 on sea
        "landmask": _land(False, True, bool),  # booleans: True is the field
        "mask": _land(np.nan, 1.0),  # NaN outside
    }
    for name, mask in masks.items():
        ds = read_field_grid(_grid_series(tmp_path / f"{name}.nc", **{name: mask}), variable="sst")
        domain = ds["domain"].values
        assert not domain[LAND] and domain[GAP] and int(domain.sum()) == 47, name
        assert ds.attrs["mask_variable"] == name and not ds.mask.values[..., LAND[0], LAND[1]].any()
    unobserved = read_field_grid(_grid_series(tmp_path / "u.nc"), variable="sst", mask="unobserved")
    assert not unobserved["domain"].values[GAP] and not unobserved["domain"].values[LAND]
    ignored = read_field_grid(_grid_series(tmp_path / "i.nc", lsm=_land(1.0, 0.0)), variable="sst", mask="none")
    assert "domain" not in ignored


def test_a_wrong_mask_names_the_file_and_the_variable(tmp_path):
    path = _grid_series(tmp_path / "g.nc", lsm=(("time", "lat", "lon"), np.zeros((3, 6, 8))))
    with pytest.raises(ShapeMismatch, match=r"g\.nc.*lsm.*static mask with the field's grid dims \(lat, lon\).*"
                                             r"dims \('time', 'lat', 'lon'\)"):
        read_field_grid(path, variable="sst")
    with pytest.raises(InvalidMeasurement, match=r"g\.nc.*'?land_fraction'?.*a mask variable in the file.*absent"):
        read_field_grid(path, variable="sst", mask="land_fraction")
    from inversa.data.readers.field_input import read_field_input

    with pytest.raises(InvalidMeasurement, match=r"gravity.*mask.*no mask for scattered observations"):
        read_field_input(shared_file(GRAVITY), {"columns": GRAVITY_COLUMNS, "units": "mGal", "duplicates": "mean",
                                                "mask": "lsm"})
