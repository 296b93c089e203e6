"""Field recipes end to end through the reconstruct flow: store, metrics, provenance, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from inversa.data.store import ResultStore
from inversa.flows.cli_field_study import write_field_study
from inversa.tasks.core.recipe import RecipeError, load_recipe
from inversa.flows.reconstruct import reconstruct
from inversa.tasks.kinds.field.fit import FIT_FILE
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    root = tmp_path_factory.mktemp("darcy")
    return write_field_study("darcy", root / "d.nc", {"n": 21, "n_sensors": 80, "coefficient": "constant",
                                                      "source": "sine", "noise_sigma": 0.01, "seed": 1})


def _run(name, inp, output, *sets, reference=None):
    recipe = load_recipe(name, list(sets), input=str(inp), output=str(output),
                         reference=None if reference is None else str(reference))
    return recipe, reconstruct(recipe)


def test_field_gp_writes_a_scored_y_x_store_in_row_bands_and_resumes_without_refitting(darcy, tmp_path):
    obs, truth = darcy
    out = tmp_path / "gp.zarr"
    recipe, result = _run("field-gp", obs, out, "region_size=8", "holdout.fraction=0.2", reference=truth)
    ds = xr.open_zarr(out)
    ref = xr.open_dataset(truth)["u"]
    assert ds["mean"].dims == ("y", "x") and ds["mean"].shape == (21, 21)
    np.testing.assert_allclose(ds["x"].values, ref["x"].values)
    for name in ("mean", "std", "lower", "upper", "reference"):
        assert np.isfinite(ds[name].values).all(), name
    # the summary's scores are the store's, pooled over every cell
    err = ds["mean"].values.astype(np.float64) - ref.values
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-5)
    inside = (ds["lower"].values <= ref.values) & (ref.values <= ds["upper"].values)
    assert result["coverage"] == pytest.approx(inside.mean())
    assert result["relative_rmse"] < 0.3 and result["coverage"] >= 0.6
    assert result["holdout_points"] == 16 and result["holdout_rmse"] < 0.1
    # calibrated by default: the record is in the store and its numbers in the summary
    calibration = ResultStore.open(out).read_meta_json("calibration.json")
    assert calibration["method"] == "blocked holdout" and result["interval_scale"] == calibration["scale"]
    assert result["calibration_units"] == calibration["units"] >= 9
    store = ResultStore.open(out)
    assert store.provenance["kind"] == "field" and store.provenance["recipe_digest"] == recipe.digest()
    assert store.provenance["observations"] == {"fitted": 64, "held_out": 16}
    fit = store.read_meta_json(FIT_FILE)
    assert fit["state"]["hyperparameters"]["lengthscale"][0] > 0
    # `inversa show` previews a field store (north up: the first image row is the largest y)
    from inversa.flows.cli import main

    assert main(["show", str(out), "--png", str(tmp_path / "gp.png"), "--json"]) == 0
    assert (tmp_path / "gp.png").read_bytes()[:4] == b"\x89PNG"
    from inversa.tasks.kinds.field.report import preview

    panels = preview(store).panels
    outside = ~((ds["lower"].values <= ds["reference"].values) & (ds["reference"].values <= ds["upper"].values))
    assert [p.label for p in panels] == ["mean", "std", "|mean - reference|",
                                         f"outside 90% interval: {100 * outside.mean():.1f}%"]
    np.testing.assert_array_equal(panels[0].image[0], ds["mean"].values[-1])
    # a rerun resumes: nothing refitted, nothing rewritten
    before = (store.meta_path(FIT_FILE).stat().st_mtime_ns, [store.region_record(i) for i in range(3)])
    _, again = _run("field-gp", obs, out, "region_size=8", "holdout.fraction=0.2", reference=truth)
    assert again["rmse"] == result["rmse"]
    assert (store.meta_path(FIT_FILE).stat().st_mtime_ns, [store.region_record(i) for i in range(3)]) == before


def test_region_size_does_not_change_a_field_store(darcy, tmp_path):
    obs, truth = darcy
    _run("field-gp-physics", obs, tmp_path / "a.zarr", "region_size=4", "method.params.source=sine",
         "method.params.n_collocation=64", reference=truth)
    _run("field-gp-physics", obs, tmp_path / "b.zarr", "region_size=21", "method.params.source=sine",
         "method.params.n_collocation=64", reference=truth)
    a, b = xr.open_zarr(tmp_path / "a.zarr"), xr.open_zarr(tmp_path / "b.zarr")
    for name in ("mean", "std"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-5, atol=1e-7)


@pytest.mark.realdata
def test_sst_gaps_filled_per_winter_with_held_out_ocean_points_scored(tmp_path):
    sst = shared_file("fields/eofs/sst_ndjfm_anom.nc")
    out = tmp_path / "sst.zarr"
    _, result = _run("field-gp", sst, out, "holdout.fraction=0.3", "observations.units=K", "mask=unobserved")
    ds = xr.open_zarr(out)
    source = xr.open_dataset(sst)
    assert ds["mean"].dims == ("time", "y", "x") and ds["x"].attrs["units"] == "degrees_east"
    np.testing.assert_array_equal(ds["x"].values, source["longitude"].values)
    np.testing.assert_array_equal(ds["time"].values, source["time"].values)
    ocean = np.isfinite(source["sst"].values[0])
    assert np.isfinite(ds["mean"].values[:, ocean]).all()
    # land: the file marks it only by missing values, so the recipe's mask=unobserved says so
    assert np.isnan(ds["mean"].values[:, ~ocean]).all() and (~ocean).sum() > 0
    assert result["holdout_points"] == 50 * round(0.3 * ocean.sum())
    # measured: RMSE 0.121 K (the anomalies' std is about 0.5 K), 90 % coverage 0.906 uncalibrated,
    # 0.931 calibrated (152 blocks of withheld cells in 7 winters: factor 1.13)
    assert result["holdout_rmse"] < 0.4 * float(np.nanstd(source["sst"].values))
    assert 0.85 <= result["holdout_coverage_uncalibrated"] <= 0.95
    assert 0.85 <= result["holdout_coverage"] <= 0.95
    per_winter = ds["metric_holdout_coverage"].values
    assert per_winter.shape == (50,) and np.isfinite(per_winter).all()


def test_field_recipes_refuse_ct_sections_and_ct_recipes_field_sections():
    with pytest.raises(RecipeError, match="calibration.pairs: a setting of calibration on simulated pairs"):
        load_recipe("field-gp", ["calibration.pairs=20"])
    with pytest.raises(RecipeError, match="grid: size and pixel_size_mm are CT settings"):
        load_recipe("field-gp", ["grid.size=64"])
    with pytest.raises(RecipeError, match="holdout: only for kind: field"):
        load_recipe("ct-fbp", ["holdout.fraction=0.1"])
    with pytest.raises(RecipeError, match="unknown field method 'fbp'"):
        load_recipe("field-gp", ["method.name=fbp"])


# The digests the shipped CT recipes had before problem kinds (and field recipes) existed: a CT
# store records its recipe's digest, and a digest that moved would stop every existing store
# from resuming.
CT_DIGESTS = {
    "ct-dds": "sha256:8468f60412a76d62387d5dcb34d6ec0656ed11671cacf761135c7c6df288ba2d",
    "ct-dps": "sha256:8043d0bba4c08cbecf5eb8de324f2fb04e3e367a7102f93f4b8dad67a0cd89e8",
    "ct-fbp": "sha256:34bd09ccfc8a5116723cb83674f61a1967deee5bdf21b03db8fb1494bb0e504f",
    "ct-gaussian": "sha256:35982586239bad32aeb07e16e80321ab0b1aa676d1b3572edde257d5b133a427",
    "ct-reddiff": "sha256:56d441d26f17f9227788fd305614eef3bdcd21ed82e7dd5040b6c95aefb11b24",
    "ct-tv": "sha256:d4e7b43a903428968849b704532190f5be4014840bfcb9d36c12d4d5c307bfd1",
    "htc2022-dds": "sha256:3e8b2174b939f6ef80cad5f8767f521285242bd8761265afe420f449dee2fd54",
    "htc2022-dps": "sha256:6d535ca806c379ef9d0701de23b3ec7ae5907d4c789627cb552fe3c69f85221b",
    "htc2022-limited": "sha256:98b7cb0e84ac9fd1c20bce5bf1db965c45a9d1aa88a3d9e680b5cbcd5c1b6d15",
    "htc2022-reddiff": "sha256:a89ac492beb723befa9d8007f6cf769d969f240a5049aebf61eebe3eb861ed06",
}


@pytest.mark.parametrize("name", sorted(CT_DIGESTS))
def test_ct_recipe_digests_are_unchanged_by_problem_kinds(name):
    # Calibration on by default (issue 15) is a different computation, so a stochastic recipe's
    # default digest moved on purpose; the same computation as before (calibration off) keeps it.
    recipe = load_recipe(name)
    if recipe.calibration is None:
        assert recipe.digest() == CT_DIGESTS[name]
    else:
        assert recipe.digest() != CT_DIGESTS[name]
        assert load_recipe(name, ["calibration=off"]).digest() == CT_DIGESTS[name]


SMALL_PINN = ["method.params.members=4", "method.params.width=16", "method.params.depth=2",
              "method.params.n_collocation=64"]


def test_darcy_pinn_infers_k_with_a_spread_and_stores_the_field(tmp_path):
    obs, truth = write_field_study("darcy", tmp_path / "k2.nc", {"n": 17, "n_sensors": 80, "coefficient": "constant",
                                                                 "k_value": 2.0, "source": "sine", "noise_sigma": 0.01})
    out = tmp_path / "darcy.zarr"
    # calibration=off: this test is about k and the shared fit (heat-pinn's test calibrates a PINN)
    _, result = _run("darcy-pinn", obs, out, *SMALL_PINN, "method.params.steps=300", "method.params.source=sine",
                     "region_size=9", "calibration=off", reference=truth)
    ds = xr.open_zarr(out)
    assert ds["mean"].dims == ("y", "x") and np.isfinite(ds["std"].values).all()
    assert result["k_std"] > 0 and 0.5 < result["k_mean"] < 8.0  # trained briefly; accuracy: tests/models
    store = ResultStore.open(out)
    fit = store.read_meta_json(FIT_FILE)
    assert fit["info"]["solvers"][0]["parameter"] == "k"
    assert len(store.regions) == 2
    # Every band of rows is the saved ensemble's prediction, though the two regions ran at once in
    # two threads sharing one model (functional_call swaps parameters into a shared module).
    from inversa.models.solvers import PINNEnsembleSolver
    from inversa.tasks.kinds.field.fit import FIT_ARRAYS

    with np.load(store.meta_path(FIT_ARRAYS)) as saved:
        solver = PINNEnsembleSolver.from_state({k: saved[k] for k in saved.files}, fit["state"])
    whole = solver.predict_grid(ds["x"].values, ds["y"].values)
    np.testing.assert_allclose(ds["mean"].values, whole.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds["std"].values, whole.std, rtol=1e-5, atol=1e-6)


def test_heat_pinn_fits_space_time_once_and_writes_blocks_of_time_steps(tmp_path):
    obs, truth = write_field_study("heat", tmp_path / "h.nc", {"n": 13, "n_times": 6, "n_sensors": 30,
                                                               "noise_sigma": 0.01, "kappa": 0.05})
    out = tmp_path / "heat.zarr"
    # calibration=off: 24 sensors need several calibration fits (tests/tasks/test_field_calibration.py
    # calibrates a space-time PINN ensemble without Prefect)
    _, result = _run("heat-pinn", obs, out, *SMALL_PINN, "method.params.steps=150", "region_size=4",
                     "holdout.fraction=0.2", "calibration=off", reference=truth)
    ds = xr.open_zarr(out)
    assert ds["mean"].dims == ("time", "y", "x") and ds["mean"].shape == (6, 13, 13)
    np.testing.assert_allclose(ds["time"].values, xr.open_dataset(obs)["time"].values)
    assert ds["metric_rmse"].shape == (6,) and np.isfinite(ds["metric_rmse"].values).all()
    assert result["kappa_std"] > 0 and result["holdout_points"] == 36  # 20 % of 30 sensors x 6 times
    assert ResultStore.open(out).read_meta_json(FIT_FILE)["holdout_n"] == 36


@pytest.mark.realdata
def test_piv_pinn_fills_a_real_frame_with_a_vector_store(tmp_path):
    frame = shared_file("fields/pivpy_soapfilm/Run000001.T000.D000.P000.H001.L.vec")
    out = tmp_path / "piv.zarr"
    _, result = _run("piv-pinn", frame, out, "method.params.members=2", "method.params.width=32",
                     "method.params.steps=100", "region_size=32", "holdout.fraction=0.1")
    ds = xr.open_zarr(out)
    assert ds["mean"].dims == ("y", "x", "component") and list(ds["component"].values) == ["u", "v"]
    from inversa.data.readers.piv_vec import read_piv_vec

    invalid = ~read_piv_vec(frame)["mask"].values
    assert invalid.sum() == 353 and np.isfinite(ds["mean"].values[invalid]).all()  # the gaps are filled
    assert result["holdout_points"] > 0 and np.isfinite(result["holdout_rmse"])


def test_batch_over_a_folder_of_field_studies_makes_one_scored_store_each(tmp_path):
    from inversa.flows.batch import SUMMARY_FILE, batch

    folder = tmp_path / "studies"
    for seed in (1, 2):
        write_field_study("darcy", folder / f"s{seed}.nc", {"n": 13, "n_sensors": 40, "seed": seed,
                                                             "coefficient": "constant", "source": "sine"})
    recipe = load_recipe("field-gp", ["region_size=7"])
    result = batch(recipe, [str(folder)], str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    rows = {row["dataset"]: row for row in summary["datasets"]} if "datasets" in summary else summary
    assert set(rows) >= {"s1", "s2"}, result
    for name in ("s1", "s2"):  # the *_truth.nc partners were paired as references, not run as datasets
        ds = xr.open_zarr(tmp_path / "out" / f"{name}.zarr")
        assert ds["mean"].dims == ("y", "x") and "reference" in ds
        assert ResultStore.open(tmp_path / "out" / f"{name}.zarr").summary["relative_rmse"] < 0.5
