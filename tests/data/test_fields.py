"""Field-observation schema, target grid and projection: behaviour on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from pyproj import Geod

from inversa.data.errors import (
    DuplicateCoordinates,
    InvalidGrid,
    InvalidMeasurement,
    NonFiniteValues,
    OutsideGrid,
    ShapeMismatch,
)
from inversa.data.fields import FieldGrid, validate_field_observations, validate_gridded_field
from inversa.data.projection import project_lonlat, unproject_xy


def scattered(x, y, value, dims=("sensor",), units="m", **coords):
    return xr.Dataset(
        {"value": (dims, np.asarray(value, dtype=float))},
        coords={"x": ("sensor", np.asarray(x, float), {"units": units}),
                "y": ("sensor", np.asarray(y, float), {"units": units}), **coords},
        attrs={"units": "mGal"},
    )


def test_scattered_nan_sensors_are_dropped_and_counted():
    ds = validate_field_observations(scattered([0, 1, 2, 3], [0, 0, 1, 1], [1.0, np.nan, 3.0, 4.0]))
    assert ds.sizes["sensor"] == 3
    np.testing.assert_array_equal(ds.x.values, [0, 2, 3])
    np.testing.assert_array_equal(ds.value.values, [1.0, 3.0, 4.0])
    assert ds.attrs["n_dropped"] == 1
    assert "mask" not in ds and ds.value.dtype == np.float64


def test_scattered_time_series_keeps_gaps_as_mask_and_drops_never_observed_sensors():
    value = np.array([[1.0, np.nan, np.nan], [2.0, 5.0, np.nan]])
    ds = validate_field_observations(
        scattered([0, 1, 2], [0, 1, 2], value, dims=("time", "sensor"), time=("time", [0.0, 1.0]))
    )
    assert ds.sizes == {"time": 2, "sensor": 2}
    np.testing.assert_array_equal(ds.mask.values, [[True, False], [True, True]])
    assert ds.attrs["n_dropped"] == 1


def test_scattered_vector_component_dim_is_accepted():
    value = np.arange(6.0).reshape(3, 2)
    ds = validate_field_observations(scattered([0, 1, 2], [0, 1, 2], value, dims=("sensor", "component")))
    assert ds.value.dims == ("sensor", "component")
    value[1, 0] = np.nan  # a vector with one component missing is not an observation of the vector
    ds = validate_field_observations(scattered([0, 1, 2], [0, 1, 2], value, dims=("sensor", "component")))
    np.testing.assert_array_equal(ds.x.values, [0, 2])
    assert ds.attrs["n_dropped"] == 1


def test_duplicate_coordinates_raise_by_default_and_average_when_asked():
    ds = scattered([5, 0, 5, 7], [5, 1, 5, 7], [10.0, 25.0, 30.0, 40.0])
    with pytest.raises(DuplicateCoordinates, match=r"'x, y'.*one sensor per \(x, y\).*sensor indices \[0, 2\]"):
        validate_field_observations(ds)
    merged = validate_field_observations(ds, duplicates="mean")
    np.testing.assert_array_equal(merged.x.values, [5, 0, 7])  # first-occurrence order kept
    np.testing.assert_array_equal(merged.y.values, [5, 1, 7])
    np.testing.assert_allclose(merged.value.values, [20.0, 25.0, 40.0])
    assert merged.attrs["n_merged"] == 1


def test_all_nan_values_raise():
    with pytest.raises(NonFiniteValues, match="'value'.*at least one finite value.*all values are NaN"):
        validate_field_observations(scattered([0, 1], [0, 1], [np.nan, np.nan]))


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda d: d.assign_coords(x=("sensor", [0.0, np.inf, 2.0], {"units": "m"})), NonFiniteValues,
         "'x'.*finite coordinates.*sensor index 1"),
        (lambda d: d.assign(value=("sensor", [1.0, np.inf, 2.0])), NonFiniteValues, "'value'.*infinite"),
        (lambda d: d.assign_attrs(units=None), InvalidMeasurement, "units"),
        (lambda d: d.assign_coords(y=("sensor", [0.0, 1.0, 2.0], {"units": "km"})), InvalidMeasurement,
         r"'y'.*one of \('m', 'mm'\)"),
        (lambda d: d.assign(value=("sensor", ["a", "b", "c"])), InvalidMeasurement, "real numbers"),
        (lambda d: d.rename_dims(sensor="station"), ShapeMismatch, "dims one of"),
    ],
)
def test_scattered_bad_input_names_variable_and_expectation(change, error, message):
    ds = scattered([0, 1, 2], [0, 1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(error, match=message):
        validate_field_observations(change(ds), source="obs.nc")


def gridded(values, mask=None):
    ny, nx = np.shape(values)[-2:]
    ds = xr.Dataset(
        {"value": (("time", "y", "x")[-np.ndim(values):], np.asarray(values, float))},
        coords={"x": ("x", np.arange(nx) * 2.0, {"units": "m"}), "y": ("y", np.arange(ny) * -1.0, {"units": "m"})},
        attrs={"units": "K"},
    )
    if mask is not None:
        ds["mask"] = (("y", "x"), mask)
    return ds


def test_gridded_mask_from_nan_is_one_2d_mask_when_gaps_do_not_move():
    values = np.ones((3, 2, 3))
    values[:, 0, 1] = np.nan  # "land": the same cell every time
    ds = validate_gridded_field(gridded(values))
    assert ds.mask.dims == ("y", "x")
    assert int(ds.mask.sum()) == 5 and not bool(ds.mask[0, 1])
    values[1, 1, 2] = np.nan  # a gap at one time only: a mask per time
    ds = validate_gridded_field(gridded(values))
    assert ds.mask.dims == ("time", "y", "x") and int(ds.mask.sum()) == 14


def test_gridded_explicit_mask_blanks_masked_values_and_rejects_nan_where_observed():
    values = np.arange(6.0).reshape(2, 3)
    mask = np.array([[True, False, True], [True, True, True]])
    ds = validate_gridded_field(gridded(values, mask))
    assert np.isnan(ds.value.values[0, 1]) and ds.value.values[1, 2] == 5.0
    values[1, 1] = np.nan
    with pytest.raises(NonFiniteValues, match=r"finite values wherever mask is True.*\(1, 1\)"):
        validate_gridded_field(gridded(values, mask))


def test_gridded_rejects_repeated_coordinates_and_empty_fields():
    ds = gridded(np.ones((2, 3))).assign_coords(x=("x", [0.0, 1.0, 1.0], {"units": "m"}))
    with pytest.raises(InvalidMeasurement, match="'x'.*strictly monotonic"):
        validate_gridded_field(ds)
    with pytest.raises(NonFiniteValues, match="at least one observed"):
        validate_gridded_field(gridded(np.full((2, 3), np.nan)))


def test_grid_from_spacing_puts_cell_centres_inside_the_extent():
    grid = FieldGrid.from_spec({"extent": [0, 10, -5, 0], "spacing": 1.0})
    assert (grid.nx, grid.ny) == (10, 5)
    x, y = grid.centres()
    np.testing.assert_allclose(x, np.arange(10) + 0.5)
    np.testing.assert_allclose(y, np.arange(5) - 4.5)
    assert grid.extent() == (0.0, 10.0, -5.0, 0.0)
    # An extent that is not a multiple of the spacing gains a last cell that ends past xmax.
    assert FieldGrid.from_spec({"extent": [0, 10.5, 0, 1], "spacing": 1.0}).nx == 11


def test_grid_from_shape_tiles_the_extent_and_bbox_padding():
    grid = FieldGrid.from_spec({"extent": [0, 12, 0, 6], "shape": [3, 4]})
    assert (grid.dx, grid.dy, grid.x0, grid.y0) == (3.0, 2.0, 1.5, 1.0)
    obs = scattered([1, 9, 4], [2, 3, 8], [0.0, 1.0, 2.0])
    padded = FieldGrid.from_spec({"padding": 1.0, "shape": [10, 10]}, obs)
    np.testing.assert_allclose(padded.extent(), (0.0, 10.0, 1.0, 9.0))
    padded.check_inside(obs)


def test_convex_hull_mask_keeps_cells_inside_the_data():
    obs = scattered([-0.01, 10.2, -0.01], [-0.01, -0.01, 10.2], [0.0, 0.0, 0.0])
    grid = FieldGrid.from_spec({"extent": [0, 10, 0, 10], "spacing": 1.0, "mask": "convex-hull"}, obs)
    mask = grid.mask()
    x, y = grid.centres()
    expected = (x[None, :] + y[:, None]) < 10.19
    np.testing.assert_array_equal(mask, expected)
    assert int(mask.sum()) == 55
    again = FieldGrid.from_spec({"extent": [0, 10, 0, 10], "spacing": 1.0, "mask": "convex-hull"}, obs)
    assert again == grid and hash(again) == hash(grid)
    assert FieldGrid.from_spec({"extent": [0, 10, 0, 10], "spacing": 1.0}).mask().all()


def test_sensors_outside_the_grid_raise_only_when_checked():
    grid = FieldGrid.from_spec({"extent": [0, 10, 0, 10], "spacing": 2.0})
    obs = scattered([1, 5, 10.0, 12.5], [1, 5, 10.0, 3], [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(OutsideGrid, match=r"sensors inside the grid extent.*1 outside, first sensor 3 at x=12\.5"):
        grid.check_inside(obs, source="stations.csv")
    grid.check_inside(obs.isel(sensor=[0, 1, 2]))  # the edge x = 10 is inside
    with pytest.raises(OutsideGrid, match="1 outside"):
        grid.check_inside(scattered([5.0], [-0.01], [1.0]))  # just below the lower edge


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"extent": [0, 0, 0, 10], "spacing": 1.0}, r"grid\.extent.*at least one cell"),
        ({"extent": [0, 10, 0, 10], "shape": [0, 5]}, r"grid\.shape\[0\].*at least one cell"),
        ({"extent": [0, 10, 0, 10], "spacing": -1.0}, r"grid\.spacing.*positive"),
        ({"extent": [0, 10, 0, 10]}, "exactly one of 'spacing' or 'shape'"),
        ({"spacing": 1.0}, "observations to take it from"),
        ({"extent": [0, 10, 0, 10], "spacing": 1.0, "mask": "convex-hull"}, "observations to compute the convex hull"),
    ],
)
def test_bad_grid_specs_raise(spec, message):
    with pytest.raises(InvalidGrid, match=message):
        FieldGrid.from_spec(spec)


def test_grid_with_zero_cells_cannot_be_built_directly():
    with pytest.raises(InvalidGrid, match=r"grid\.nx.*at least one cell"):
        FieldGrid(0.0, 0.0, 1.0, 1.0, 0, 5)


def test_projection_is_metric_and_round_trips():
    rng = np.random.default_rng(0)
    lon = rng.uniform(16.0, 33.0, 200)
    lat = rng.uniform(-35.0, -17.0, 200)
    x, y, crs = project_lonlat(lon, lat)
    params = dict(item.lstrip("+").split("=") for item in crs.split() if "=" in item)
    assert params["proj"] == "tmerc"
    # Centred on the data: mean latitude; circular mean longitude (= the plain mean, far from ±180°).
    assert abs(float(params["lat_0"]) - lat.mean()) < 1e-6 and abs(float(params["lon_0"]) - lon.mean()) < 0.01
    cx, cy, _ = project_lonlat([float(params["lon_0"])], [float(params["lat_0"])], crs=crs)
    assert abs(cx[0]) < 1e-6 and abs(cy[0]) < 1e-6
    lon2, lat2 = unproject_xy(x, y, crs)
    x2, y2, _ = project_lonlat(lon2, lat2, crs=crs)
    assert np.hypot(x2 - x, y2 - y).max() < 1e-3  # metres
    # Distances match the ellipsoid's to within the transverse Mercator's scale error (< 1.5 %).
    geodesic = Geod(ellps="WGS84").inv(lon[:-1], lat[:-1], lon[1:], lat[1:])[2]
    planar = np.hypot(np.diff(x), np.diff(y))
    assert np.abs(planar / geodesic - 1).max() < 0.015
    near = (np.abs(lon[:-1] - lon.mean()) < 1) & (np.abs(lon[1:] - lon.mean()) < 1)
    assert np.abs(planar[near] / geodesic[near] - 1).max() < 2e-3


def test_projection_rejects_degrees_out_of_range():
    with pytest.raises(InvalidMeasurement, match=r"'latitude'.*within ±90"):
        project_lonlat([10.0], [120.0], source="a.csv")


def test_duplicates_in_a_time_series_average_per_time_ignoring_gaps():
    value = np.array([[1.0, 3.0, 7.0], [np.nan, 5.0, 8.0]])  # sensors 0 and 1 share a position
    ds = scattered([0, 0, 4], [2, 2, 4], value, dims=("time", "sensor"), time=("time", [0.0, 1.0]))
    merged = validate_field_observations(ds, duplicates="mean")
    np.testing.assert_allclose(merged.value.values, [[2.0, 7.0], [5.0, 8.0]])
    assert merged.mask.values.all() and merged.attrs["n_merged"] == 1
