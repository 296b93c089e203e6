"""Blocked conformal calibration of field intervals: the blocks, the record, the scaled intervals.

Prefect-free and small: the kind is called as the thin Prefect tasks call it.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from inversa.models.conformal import scale_map
from inversa.models.solvers import ExactGPSolver
from inversa.models.uq import interval_z
from inversa.tasks.core.calibration import CALIBRATION_FILE
from inversa.tasks.core.recipe import RecipeError, load_recipe
from inversa.tasks.core.stores import create_store, make_plan
from inversa.tasks.kinds import kind_of
from inversa.tasks.kinds.field.calibration import blocked_record, spatial_blocks
from inversa.tasks.kinds.field.fit import fitted_model
from inversa.tasks.kinds.field.intervals import predictive_std
from inversa.tasks.kinds.field.problem import Points, load_field_problem


def _grid_sites(n: int = 40) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float) * 2.0)
    return np.column_stack([gx.ravel(), gy.ravel()])


def test_withheld_points_form_contiguous_spatial_blocks_with_no_kept_point_inside():
    xy = _grid_sites(40)  # 1,600 sites on a regular grid
    split = spatial_blocks(xy, blocks=16, fraction=0.1, rng=np.random.default_rng(0))
    assert split.n_units == 16 and 140 <= split.withheld.size <= 200  # about 10 % of the sites
    kept = np.ones(len(xy), dtype=bool)
    kept[split.withheld] = False
    for unit, (x0, x1, y0, y1) in enumerate(split.tiles):
        members = xy[split.withheld[split.unit == unit]]
        assert len(members) >= 4  # a block of cells, not a point
        inside = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
        assert not (inside & kept).any()  # every site of the block's tile is withheld: no neighbour left in
        # contiguous: the block's cells fill the rectangle they span on the grid
        cols, rows = np.unique(members[:, 0]), np.unique(members[:, 1])
        assert len(members) == len(cols) * len(rows)
        assert np.all(np.diff(cols) == 1.0) and np.all(np.diff(rows) == 2.0)
    again = spatial_blocks(xy, blocks=16, fraction=0.1, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.withheld, split.withheld)  # seeded


def test_a_sensor_read_at_several_times_is_withheld_at_every_time():
    sites = np.random.default_rng(1).uniform(size=(50, 2))
    xy = np.concatenate([sites] * 3)  # three time steps of the same sensors
    split = spatial_blocks(xy, blocks=10, fraction=0.2, rng=np.random.default_rng(2))
    withheld_sites = {tuple(p) for p in xy[split.withheld]}
    assert len(withheld_sites) * 3 == split.withheld.size
    assert all(tuple(p) not in withheld_sites for p in np.delete(xy, split.withheld, axis=0))


class _GP:
    """A fitted ExactGPSolver answering the calibration's questions (a stand-in for FieldModel),
    made ``overconfident`` times too sure of itself: its std and noise std divided by that."""

    def __init__(self, points: Points, overconfident: float = 1.0):
        self.solver = ExactGPSolver(kernel="matern52", max_iter=8, seed=0)
        self.solver.fit(points.xy, points.values)
        self.shrink = float(overconfident)

    def predict(self, points: Points):
        mean, std = self.solver.predict(points.xy)
        return mean, std / self.shrink

    def noise_variance(self):
        return self.solver.noise_variance() / self.shrink ** 2


class _Nearest:
    """The nearest kept site's value, with a std growing with the distance to it: a model that
    costs nothing, for tests of which points are withheld (not of the numbers)."""

    def __init__(self, points: Points):
        self.points = points

    def predict(self, points: Points):
        distance = np.linalg.norm(points.xy[:, None, :] - self.points.xy[None, :, :], axis=-1)
        nearest = distance.argmin(axis=1)
        return self.points.values[nearest], 0.1 + distance.min(axis=1)

    def noise_variance(self):
        return np.asarray(0.01)


def _smooth_field(n: int, seed: int, noise: float) -> Points:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1, size=(n, 2))
    truth = np.sin(3 * xy[:, 0]) * np.cos(2 * xy[:, 1]) + 0.5 * np.sin(7 * xy[:, 1])
    return Points(xy, truth + noise * rng.standard_normal(n))


def test_calibration_brings_an_overconfident_gp_to_nominal_coverage_on_fresh_points():
    train, fresh = _smooth_field(300, 0, 0.1), _smooth_field(1000, 10, 0.1)
    fit = lambda points: _GP(points, overconfident=3.0)  # noqa: E731
    record = blocked_record([(None, train)], fit, blocks=200, fraction=0.1, bands=4, seed=7, alpha=0.1,
                            credible_level=0.9)
    assert record["units_kind"] == "spatial blocks" and record["units"] >= 40 and record["scale"] > 2
    model = fit(train)
    mean, std = model.predict(fresh)
    spread = predictive_std(std, model.noise_variance())
    error = np.abs(mean - fresh.values)
    z = interval_z(0.9)
    before = np.mean(error <= z * spread)
    after = np.mean(error <= z * spread * scale_map(record, spread))
    assert before < 0.5  # measured 0.40
    assert 0.85 <= after <= 0.97  # measured 0.89 (0.89-0.98 over four data seeds: 46-50 units)


def test_small_studies_take_more_folds_then_one_unit_per_point_then_fail_clearly():
    xy = _grid_sites(8)  # 64 sites: a fit withholds at most a quarter of them
    grid = Points(xy, np.sin(xy[:, 0] / 3) + np.cos(xy[:, 1] / 5))
    folds = blocked_record([(None, grid)], _Nearest, blocks=4, fraction=0.25, bands=4, seed=7, alpha=0.1,
                           credible_level=0.9)
    assert (folds["fits"], folds["blocks"], folds["units_kind"]) == (3, 12, "spatial blocks")  # 9 units need 3 folds
    points = blocked_record([(None, grid)], _Nearest, blocks=2, fraction=0.25, bands=4, seed=7, alpha=0.1,
                            credible_level=0.9)
    assert (points["fits"], points["blocks"]) == (4, 8) and points["units_kind"].startswith("points (fewer than 9")
    assert points["units"] == points["withheld_points"] >= 9
    with pytest.raises(ValueError, match=r"tiny.nc: calibration: 8 withheld observation\(s\) cannot calibrate "
                                         r"alpha=0.1 \(at least 9 are needed\).*calibration=off"):
        blocked_record([(None, _smooth_field(8, 3, 0.1))], _Nearest, blocks=4, fraction=0.25, bands=4, seed=7,
                       alpha=0.1, credible_level=0.9, source="tiny.nc")


# ------------------------------------------------------------------ the kind, end to end (no Prefect)

@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    from inversa.flows.cli_field_study import write_field_study

    return write_field_study("darcy", tmp_path_factory.mktemp("cal") / "d.nc",
                             {"n": 13, "n_sensors": 100, "coefficient": "constant", "source": "sine",
                              "noise_sigma": 0.01, "seed": 2})


def _run(obs, truth, output, *sets):
    recipe = load_recipe("field-gp", ["region_size=5", "method.params.max_iter=15", "holdout.fraction=0.2", *sets],
                         input=str(obs), reference=str(truth), output=str(output))
    kind, plan = kind_of(recipe), make_plan(recipe)
    store = create_store(recipe, recipe.digest(), plan, overwrite=False)
    prepared = kind.prepare(store, recipe)
    for index in store.pending_regions():
        kind.reconstruct_region(store, index, recipe)
    return recipe, store, prepared, kind.summarize(store)


def test_a_default_field_run_records_its_calibration_and_scales_each_cell(darcy, tmp_path):
    recipe, store, prepared, summary = _run(*darcy, tmp_path / "on.zarr")
    assert recipe.calibration is not None and make_plan(recipe).prepare == "fit"
    record = store.read_meta_json(CALIBRATION_FILE)
    assert record["method"] == "blocked holdout" and record["recipe_digest"] == recipe.digest()
    assert record["alpha"] == pytest.approx(0.1) and record["pairs"] == record["units"] >= 9
    assert {"scale", "coverage_before", "coverage_after", "bands", "curve", "seconds"} <= set(record)
    assert store.attrs["interval_scale"] == record["scale"] and store.attrs["calibration"]["units"] == record["units"]
    assert "intervals calibrated on" in prepared.message
    assert summary["interval_scale"] == record["scale"] and "holdout_coverage_uncalibrated" in summary
    ds = xr.open_zarr(store.path)
    mean, std, lower, upper = (ds[v].values.astype(np.float64) for v in ("mean", "std", "lower", "upper"))
    noise = fitted_model(store, recipe, load_field_problem(recipe)).noise_variance()
    factor = scale_map(record, np.sqrt(std ** 2 + noise))
    half = interval_z(0.9) * factor * std
    np.testing.assert_allclose(lower, mean - half, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upper, mean + half, rtol=1e-5, atol=1e-6)
    assert not np.allclose(upper - lower, 2 * interval_z(0.9) * std, rtol=1e-3)  # scaled, not the raw interval
    # calibration=off: the raw interval, no record
    off, off_store, _, off_summary = _run(*darcy, tmp_path / "off.zarr", "calibration=off")
    assert off.calibration is None and off.digest() != recipe.digest()
    assert off_store.read_meta_json(CALIBRATION_FILE) is None and "calibration" not in off_store.attrs
    assert "interval_scale" not in off_summary
    raw = xr.open_zarr(off_store.path)
    np.testing.assert_allclose(raw["upper"].values - raw["mean"].values, interval_z(0.9) * raw["std"].values,
                               rtol=1e-5, atol=1e-7)
    # the map itself is the fit of every observation either way
    np.testing.assert_allclose(raw["mean"].values, ds["mean"].values, rtol=1e-5, atol=1e-7)
    assert off_summary["holdout_rmse"] == pytest.approx(summary["holdout_rmse"])


def test_field_calibration_settings_are_typed_and_ct_pairs_are_refused():
    on = load_recipe("field-gp")
    assert on.calibration is not None and on.calibration.blocks == 200 and on.calibration_alpha == pytest.approx(0.1)
    for off in ("calibration=off", "calibration=false", "calibration=null"):
        assert load_recipe("field-gp", [off]).calibration is None
    tuned = load_recipe("field-gp", ["calibration.blocks=50", "calibration.alpha=0.2"])
    assert tuned.calibration.blocks == 50 and tuned.calibration_alpha == pytest.approx(0.2)
    assert tuned.digest() != on.digest()
    with pytest.raises(RecipeError, match="calibration.pairs: a setting of calibration on simulated pairs"):
        load_recipe("field-gp", ["calibration.pairs=20"])
    with pytest.raises(RecipeError, match="calibration.fraction"):
        load_recipe("field-gp", ["calibration.fraction=0.9"])


def test_a_space_time_pinn_ensemble_is_calibrated_on_sensors_withheld_at_every_time(tmp_path):
    """Structure only (5 training steps: a PINN step costs about 0.5 s on 2 shared cores)."""
    from inversa.flows.cli_field_study import write_field_study

    obs, truth = write_field_study("heat", tmp_path / "h.nc", {"n": 9, "n_times": 4, "n_sensors": 48,
                                                               "noise_sigma": 0.01, "kappa": 0.05, "seed": 1})
    recipe = load_recipe("heat-pinn", ["method.params.members=2", "method.params.width=8", "method.params.depth=2",
                                       "method.params.steps=5", "method.params.n_collocation=16", "region_size=4"],
                         input=str(obs), reference=str(truth), output=str(tmp_path / "heat.zarr"))
    kind, plan = kind_of(recipe), make_plan(recipe)
    store = create_store(recipe, recipe.digest(), plan, overwrite=False)
    kind.prepare(store, recipe)
    kind.reconstruct_region(store, 0, recipe)
    record = store.read_meta_json(CALIBRATION_FILE)
    # a quarter of the 48 sensors per fit, each withheld at all 4 times
    assert record["units_kind"] == "spatial blocks" and record["withheld_points"] == 4 * 12 * record["fits"]
    ds = xr.open_zarr(store.path)
    std = ds["std"].values.astype(np.float64)
    noise = fitted_model(store, recipe, load_field_problem(recipe)).noise_variance()
    half = interval_z(0.9) * scale_map(record, np.sqrt(std ** 2 + noise)) * std
    np.testing.assert_allclose(ds["upper"].values - ds["mean"].values, half, rtol=1e-4, atol=1e-6)
