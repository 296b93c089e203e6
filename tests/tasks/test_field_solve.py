"""The field run's problem and model layer: holdout splits, fit-once-and-rebuild, method checks."""

from __future__ import annotations

import numpy as np
import pytest

from inversa.data.errors import InvalidGrid, InvalidMeasurement, OutsideGrid
from inversa.tasks.core.recipe import load_recipe
from inversa.tasks.kinds.field.methods import field_method
from inversa.tasks.kinds.field.model import FieldModel
from inversa.tasks.kinds.field.problem import load_field_problem


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    from inversa.flows.cli_field_study import write_field_study

    root = tmp_path_factory.mktemp("darcy")
    return write_field_study("darcy", root / "d.nc", {"n": 17, "n_sensors": 60, "coefficient": "constant",
                                                      "source": "sine", "noise_sigma": 0.01, "seed": 3})


def _recipe(obs, truth=None, **extra):
    recipe = {"name": "field-test", "kind": "field", "input": str(obs), "method": {"name": "gp", "params": {}}}
    if truth is not None:
        recipe["reference"] = str(truth)
    recipe.update(extra)
    return load_recipe(recipe)


def test_holdout_is_a_seeded_partition_of_the_observed_points(darcy):
    obs, truth = darcy
    problem = load_field_problem(_recipe(obs, truth, holdout={"fraction": 0.25, "seed": 4}))
    fit, held = problem.observations(), problem.held_out()
    assert (fit.n, held.n) == (45, 15)
    both = np.concatenate([fit.xy, held.xy])
    assert len(np.unique(both, axis=0)) == 60  # disjoint, and together every sensor
    again = load_field_problem(_recipe(obs, truth, holdout={"fraction": 0.25, "seed": 4})).held_out()
    np.testing.assert_array_equal(again.xy, held.xy)
    other = load_field_problem(_recipe(obs, truth, holdout={"fraction": 0.25, "seed": 5})).held_out()
    assert not np.array_equal(other.xy, held.xy)


def test_output_grid_is_the_reference_grid_else_the_recipe_grid(darcy):
    obs, truth = darcy
    on_truth = load_field_problem(_recipe(obs, truth))
    np.testing.assert_allclose(on_truth.xs, np.linspace(0, 1, 17))
    assert on_truth.leading_dim == "y" and on_truth.n_leading == 17
    own = load_field_problem(_recipe(obs, grid={"extent": [0, 1, 0, 1], "shape": [10, 20]}))
    assert own.shape == (10, 20)
    np.testing.assert_allclose(own.xs[:2], [0.025, 0.075])


@pytest.mark.parametrize("method, params", [
    ("gp", {}),
    ("gp", {"kernel": "matern52+matern52", "max_iter": 20}),
    ("sparse-gp", {"inducing": 20, "min_steps": 20, "epochs": 1}),
    ("gp-physics", {"source": "sine", "boundary_value": 0.0, "n_collocation": 64}),
])
def test_a_saved_fit_rebuilds_the_same_posterior(darcy, method, params):
    obs, truth = darcy
    problem = load_field_problem(_recipe(obs, truth))
    spec = field_method(method, params)
    points = problem.observations()
    first = FieldModel(spec, problem).fit(points)
    rebuilt = FieldModel(spec, problem).fit(points, first.state())
    assert rebuilt.info["restored"] and not first.info["restored"]
    m1, s1 = first.predict_cells(problem.ys[3:9], None)
    m2, s2 = rebuilt.predict_cells(problem.ys[3:9], None)
    np.testing.assert_allclose(m2, m1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s2, s1, rtol=1e-9, atol=1e-9)
    # a band of rows is the same as those rows of the whole grid (tiles do not change values)
    whole, _ = first.predict_cells(problem.ys, None)
    np.testing.assert_allclose(whole[3:9], m1, rtol=1e-9, atol=1e-9)


def test_masked_cells_are_skipped_not_predicted_differently(darcy):
    obs, _ = darcy
    problem = load_field_problem(_recipe(obs, grid={"shape": [12, 15], "mask": "convex-hull"}))
    assert problem.cell_mask is not None and 0 < problem.cell_mask.sum() < problem.cell_mask.size
    model = FieldModel(field_method("gp", {}), problem).fit(problem.observations())
    full_mean, full_std = model.predict_cells(problem.ys, None)
    mean, std = model.predict_cells(problem.ys, problem.cell_mask)
    inside = problem.cell_mask
    np.testing.assert_allclose(mean[inside], full_mean[inside], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(std[inside], full_std[inside], rtol=1e-9, atol=1e-9)
    assert np.isnan(mean[~inside]).all() and np.isnan(std[~inside]).all()


def test_physics_gp_beats_the_plain_gp_on_the_pde_it_knows(darcy):
    obs, truth = darcy
    problem = load_field_problem(_recipe(obs, truth))
    points = problem.observations()
    errors = {}
    for method, params in (("gp", {}), ("gp-physics", {"source": "sine", "boundary_value": 0.0, "n_collocation": 128})):
        mean, _ = FieldModel(field_method(method, params), problem).fit(points).predict_cells(problem.ys, None)
        errors[method] = float(np.sqrt(np.mean((mean - problem.reference) ** 2)))
    assert errors["gp-physics"] < 0.3 * errors["gp"], errors


@pytest.mark.parametrize("method, params, message", [
    ("kriging", {}, "unknown field method 'kriging'"),
    ("gp", {"lengthscale": 3}, "method 'gp' has no parameter 'lengthscale'"),
    ("gp", {"max_iter": "many"}, r"method\.params\.max_iter: Input should be a valid integer"),
    ("gp-physics", {"source": "cosine"}, r"method\.params\.source.*'constant' or 'sine'"),
    ("gp-physics", {"k": -1.0}, "'k'"),
    ("pinn", {"domain": [0, 1, 1, 0]}, r"method\.params\.domain.*xmax > xmin, ymax > ymin"),
    ("pinn", {"pde": "wave"}, "pde"),
    ("gp", {"kernel": "cubic"}, "kernel"),
])
def test_bad_method_parameters_are_named(method, params, message):
    with pytest.raises(ValueError, match=message):
        field_method(method, params)


def test_bad_grids_and_inputs_fail_with_the_file_and_field_named(darcy, tmp_path):
    obs, _ = darcy
    with pytest.raises(InvalidGrid, match="shape"):
        load_field_problem(_recipe(obs, grid={"extent": [0, 1, 0, 1], "shape": [0, 10]}))
    with pytest.raises(OutsideGrid, match=str(obs.name)):
        load_field_problem(_recipe(obs, grid={"extent": [0, 0.5, 0, 1], "spacing": 0.1}))
    csv = tmp_path / "stations.csv"
    csv.write_text("lon,lat,g\n10,20,1\n11,21,2\n12,20,3\n")
    with pytest.raises(InvalidMeasurement, match="observations.columns"):
        load_field_problem(_recipe(csv))
    with pytest.raises(InvalidMeasurement, match="suffix '.txtx'"):
        (tmp_path / "x.txtx").write_text("1")
        load_field_problem(_recipe(tmp_path / "x.txtx"))


def test_a_vector_field_needs_the_incompressible_pinn_not_the_heat_one():
    from tests.conftest import shared_file

    frame = shared_file("fields/pivpy_soapfilm/Run000001.T000.D000.P000.H001.L.vec")
    problem = load_field_problem(_recipe(frame))
    assert problem.components == ("u", "v") and problem.kind == "gridded"
    with pytest.raises(ValueError, match="pde=incompressible"):
        FieldModel(field_method("pinn", {"pde": "heat"}), problem)


def test_a_cell_missing_at_every_time_step_is_filled_and_a_cell_the_mask_calls_land_is_not(tmp_path):
    """Through the kind (calibration on: a series fitted step by step calibrates in its prepare step)."""
    import xarray as xr

    from inversa.tasks.core.stores import create_store, make_plan
    from inversa.tasks.kinds import kind_of
    from tests.data.test_field_readers import GAP, LAND, _grid_series, _land

    path = _grid_series(tmp_path / "sst.nc", lsm=_land(1.0, 0.0))
    recipe = _recipe(path, output=str(tmp_path / "out.zarr"), method={"name": "gp", "params": {"max_iter": 10}},
                     region_size=3, calibration={"steps": 2})
    kind, plan = kind_of(recipe), make_plan(recipe)
    assert plan.prepare == "calibrate" and plan.calibration["steps"] == [0, 2]
    store = create_store(recipe, recipe.digest(), plan, overwrite=False)
    assert "time steps [0, 2]" in "\n".join(kind.describe(recipe, plan))
    kind.prepare(store, recipe)
    for index in store.pending_regions():
        kind.reconstruct_region(store, index, recipe)
    ds = xr.open_zarr(store.path)
    for name in ("mean", "std", "lower", "upper"):
        values = ds[name].values
        assert np.isfinite(values[:, GAP[0], GAP[1]]).all(), name  # missing at every step, still the field
        assert np.isnan(values[:, LAND[0], LAND[1]]).all(), name  # the mask says land
        assert int(np.isnan(values).sum()) == 3, name
    assert store.read_meta_json("calibration.json")["steps"] == [0, 2]
    wrong = _recipe(path, mask="land_fraction")
    with pytest.raises(InvalidMeasurement, match=r"sst\.nc.*land_fraction.*a mask variable in the file"):
        load_field_problem(wrong)
