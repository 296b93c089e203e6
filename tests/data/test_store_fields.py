"""Field layouts of the result store: (y, x) row bands, (time, y, x) with dates, vector components."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from inversa.data.store import ResultStore, StoreInputError, StoreLayout

PROV = {"recipe_digest": "sha256:r", "input_digest": "sha256:i"}


def _static(path, **extra):
    xs, ys = np.linspace(-500.0, 500.0, 6), np.array([30.0, 20.0, 10.0, 0.0, -10.0])  # descending y is allowed
    return ResultStore.create(path, n_slices=5, image_shape=(5, 6), pixel_size_mm=200.0, region_size=2,
                              provenance=PROV, leading_dim="y", x_coord=xs, y_coord=ys, coord_units="m", **extra), xs, ys


def test_static_field_store_is_written_in_row_bands_and_reads_back_over_y_x(tmp_path):
    store, xs, ys = _static(tmp_path / "f.zarr")
    assert store.regions == [(0, 2), (2, 4), (4, 5)]
    field = np.arange(30, dtype=np.float32).reshape(5, 6)
    for index, (start, stop) in enumerate(store.regions):
        block = field[start:stop]
        store.write_region(index, mean=block, std=block / 10, lower=block - 1, upper=block + 1)
    ds = xr.open_zarr(tmp_path / "f.zarr")
    assert ds["mean"].dims == ("y", "x")
    np.testing.assert_array_equal(ds["mean"].values, field)
    np.testing.assert_array_equal(ds["y"].values, ys)
    np.testing.assert_array_equal(ds["x"].values, xs)
    assert ds["x"].attrs["units"] == "m" and ds.attrs["coord_units"] == "m"
    assert "pixel_size_mm" not in ds.attrs  # a field's cells are not CT pixels
    assert ResultStore.open(tmp_path / "f.zarr").layout.leading_dim == "y"


def test_vector_field_over_time_with_dates_keeps_component_last_and_datetime_labels(tmp_path):
    times = np.array(["2001-01-15", "2001-02-15", "2001-03-15"], dtype="datetime64[ns]")
    store = ResultStore.create(tmp_path / "v.zarr", n_slices=3, image_shape=(4, 5), pixel_size_mm=1.0,
                               region_size=1, provenance=PROV, slice_coord=times, leading_dim="time",
                               x_coord=np.arange(5.0), y_coord=np.arange(4.0), coord_units="mm",
                               components=("u", "v"), metric_names=("rmse",))
    value = np.random.default_rng(0).standard_normal((1, 4, 5, 2)).astype(np.float32)
    store.write_region(1, mean=value, std=np.abs(value), lower=value - 1, upper=value + 1,
                       metrics={"rmse": np.array([0.5])})
    with pytest.raises(StoreInputError, match=r"variable 'mean' has shape \(1, 4, 5\), expected \(1, 4, 5, 2\)"):
        store.write_region(0, mean=value[..., 0])
    ds = xr.open_zarr(tmp_path / "v.zarr")
    assert ds["mean"].dims == ("time", "y", "x", "component")
    assert list(ds["component"].values) == ["u", "v"]
    np.testing.assert_array_equal(ds["time"].values, times)
    np.testing.assert_array_equal(ds["mean"].isel(time=1).values, value[0])
    assert np.isnan(ds["mean"].isel(time=0).values).all()
    assert ds["metric_rmse"].dims == ("time",) and ds["metric_rmse"].values[1] == 0.5


def test_reopening_a_field_store_with_another_grid_is_a_conflict_not_a_resume(tmp_path):
    from inversa.data.store import StoreConflict

    _static(tmp_path / "f.zarr")
    with pytest.raises(StoreConflict, match="x_coord"):
        ResultStore.create(tmp_path / "f.zarr", n_slices=5, image_shape=(5, 6), pixel_size_mm=200.0, region_size=2,
                           provenance=PROV, leading_dim="y", x_coord=np.linspace(-400.0, 600.0, 6),
                           y_coord=np.array([30.0, 20.0, 10.0, 0.0, -10.0]), coord_units="m")


@pytest.mark.parametrize("change, message", [
    ({"n_slices": 4}, "one per row"),
    ({"x_coord": np.arange(5.0)}, "x_coord: expected 6 finite"),
    ({"y_coord": np.array([0.0, 1.0, 0.5, 2.0, 3.0])}, "strictly monotonic"),
    ({"leading_dim": "depth"}, "leading_dim"),
    ({"components": ("u", "u")}, "components"),
])
def test_bad_field_layouts_are_refused_with_the_argument_named(change, message):
    args = dict(n_slices=5, image_shape=(5, 6), pixel_size_mm=1.0, region_size=1, credible_level=0.9, n_samples=0,
                with_reference=False, metric_names=(), slice_coord=None, leading_dim="y",
                x_coord=np.arange(6.0), y_coord=np.arange(5.0))
    args.update(change)
    with pytest.raises(StoreInputError, match=message):
        StoreLayout.build(**args)


def test_ct_layouts_written_before_field_support_still_open_unchanged():
    old = {"n_slices": 3, "image_shape": [8, 8], "pixel_size_mm": 0.5, "region_size": 1, "credible_level": 0.9,
           "n_samples": 0, "with_reference": False, "metric_names": [], "slice_labels": None}
    layout = StoreLayout.from_json(old)
    assert layout.dims == ("slice", "y", "x") and layout.cell_shape == (8, 8)
    assert {k: v for k, v in layout.to_json().items() if k in old} == old
