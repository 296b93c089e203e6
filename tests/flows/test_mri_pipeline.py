"""MRI through the reconstruct and batch flows: every recipe into a store, metrics, calibration, real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from inversa.data.store import ResultStore
from inversa.flows.batch import SUMMARY_FILE, batch
from inversa.flows.cli import main
from inversa.flows.reconstruct import reconstruct
from inversa.tasks.core.recipe import RecipeError, load_recipe
from tests.conftest import shared_file
from tests.flows.helpers import tiny_mri_prior, tiny_mri_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_mri_study(tmp_path_factory.mktemp("mri-study"))


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return tiny_mri_prior(tmp_path_factory.mktemp("mri-prior"))


def _run(name, study, output, *sets):
    measurement, truth = study
    recipe = load_recipe(name, ["region_size=1", *sets], input=str(measurement), reference=str(truth),
                         output=str(output))
    return recipe, reconstruct(recipe)


@pytest.mark.parametrize("name", ["mri-zero-filled", "mri-cgsense", "mri-cs"])
def test_point_estimates_write_magnitude_stores_with_metrics(study, tmp_path, name):
    recipe, result = _run(name, study, tmp_path / f"{name}.zarr")
    ds = xr.open_zarr(result["store"])
    truth = xr.open_dataset(study[1])["reference"].values
    assert ds["mean"].dims == ("slice", "y", "x") and ds["mean"].shape == truth.shape
    assert np.isfinite(ds["mean"].values).all() and (ds["mean"].values >= 0).all()  # a magnitude
    assert np.isnan(ds["std"].values).all() and ds.attrs["interval_kind"].startswith("none")
    # The run's scores are the store's, against the reference it holds.
    nrmse = np.linalg.norm(ds["mean"].values - truth, axis=(1, 2)) / np.linalg.norm(truth, axis=(1, 2))
    assert result["nrmse"] == pytest.approx(float(nrmse.mean()), rel=1e-4)
    assert 0.2 < result["data_residual"] < 5  # the data explained to about the noise level
    store = ResultStore.open(result["store"])
    assert store.provenance["kind"] == "mri" and store.provenance["sensitivities"] == "file"
    assert store.provenance["recipe_digest"] == recipe.digest()


def test_cg_sense_and_cs_beat_zero_filled(study, tmp_path):
    # Ten CG iterations: with 8 simulated coils at 2x, more start to amplify the noise (measured:
    # 34.4 dB at 10, 30.3 dB at 30, zero-filled 27.7 dB).
    extra = {"mri-cgsense": ["method.params.max_iter=10"]}
    scores = {name: _run(name, study, tmp_path / f"{name}.zarr", *extra.get(name, []))[1]["psnr"]
              for name in ("mri-zero-filled", "mri-cgsense", "mri-cs")}
    assert scores["mri-cgsense"] > scores["mri-zero-filled"] + 3, scores
    assert scores["mri-cs"] > scores["mri-zero-filled"] + 3, scores


@pytest.mark.parametrize("name", ["mri-dds", "mri-dps"])
def test_diffusion_samplers_store_the_magnitude_posterior_and_the_complex_mean(study, prior, tmp_path, name):
    _, result = _run(name, study, tmp_path / f"{name}.zarr", f"method.params.prior={prior}",
                     "method.params.n_steps=4", "samples=4", "store_samples=true", "store_complex_mean=true")
    ds = xr.open_zarr(result["store"])
    samples = ds["samples"].values
    assert samples.shape == (4, 2, 32, 32) and (samples >= 0).all()
    np.testing.assert_allclose(ds["mean"].values, samples.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ds["std"].values, samples.std(axis=0, ddof=1), rtol=1e-3, atol=1e-6)
    assert (ds["upper"].values >= ds["mean"].values - 1e-6).all() and np.isfinite(result["coverage"])
    complex_mean = ds["mean_real"].values + 1j * ds["mean_imag"].values
    # the mean of magnitudes is at least the magnitude of the mean (Jensen), everywhere
    assert (ds["mean"].values >= np.abs(complex_mean) - 1e-5 * np.abs(complex_mean).max()).all()
    assert result["nfe"] == 2 * 4  # two slices, one call of four steps each


@pytest.fixture(scope="module")
def hvae_prior(tmp_path_factory):
    return tiny_mri_prior(tmp_path_factory.mktemp("mri-hvae"), "prior-mri-brain-hvae", network=())


@pytest.fixture(scope="module")
def flow_prior(tmp_path_factory):
    return tiny_mri_prior(tmp_path_factory.mktemp("mri-flow"), "prior-mri-brain-flow")


@pytest.mark.parametrize("name, prior_fixture, family, quick", [
    ("mri-vble", "hvae_prior", "hvae", ["method.params.n_iter=3", "method.params.mc_samples=2"]),
    ("mri-pnp-hvae", "hvae_prior", "hvae", ["method.params.n_iter=3", "method.params.cg_steps=2"]),
    ("mri-vae-langevin", "hvae_prior", "hvae",
     ["method.params.map_steps=2", "method.params.burn_in=20", "method.params.thin=1"]),
    ("mri-flowdps", "flow_prior", "flow-matching", ["method.params.n_steps=3", "method.params.cg_steps=2"]),
])
def test_other_prior_families_store_the_magnitude_posterior_with_calibration(study, request, tmp_path, name,
                                                                             prior_fixture, family, quick):
    prior = request.getfixturevalue(prior_fixture)
    _, result = _run(name, study, tmp_path / f"{name}.zarr", f"method.params.prior={prior}", *quick,
                     "samples=3", "store_samples=true", "calibration.pairs=2")
    ds = xr.open_zarr(result["store"])
    samples = ds["samples"].values
    assert samples.shape == (3, 2, 32, 32) and (samples >= 0).all()  # magnitudes at the scan's matrix
    np.testing.assert_allclose(ds["mean"].values, samples.mean(axis=0), rtol=1e-4, atol=1e-6)
    store = ResultStore.open(result["store"])
    assert store.provenance["prior"]["family"] == family
    assert store.read_meta_json("calibration.json")["scale"] > 0


def test_calibration_makes_coverage_honest_on_fresh_slices(prior, tmp_path):
    fresh = tiny_mri_study(tmp_path / "fresh", n_slices=4, seed=11)
    sets = [f"method.params.prior={prior}", "method.params.n_steps=4", "samples=4"]
    _, plain = _run("mri-dds", fresh, tmp_path / "plain.zarr", *sets)
    _, calibrated = _run("mri-dds", fresh, tmp_path / "cal.zarr", *sets, "calibration.pairs=40")
    record = ResultStore.open(tmp_path / "cal.zarr").read_meta_json("calibration.json")
    assert record["pairs"] == 40 and record["sensitivities"] == "true maps"
    assert 0.9 <= record["coverage_after"] < 0.97
    # The calibration pairs and the fresh study are both brain slices of the template: exchangeable,
    # so the calibrated interval covers about 90 % of the fresh study's pixels too.
    assert abs(calibrated["coverage"] - 0.9) < 0.08, (plain["coverage"], calibrated["coverage"])
    assert abs(calibrated["coverage"] - 0.9) <= abs(plain["coverage"] - 0.9) + 0.02


def test_batch_over_a_folder_of_studies_pairs_their_references(tmp_path):
    folder = tmp_path / "scans"
    for seed in (1, 2):
        measurement, truth = tiny_mri_study(tmp_path / f"s{seed}", seed=seed)
        folder.mkdir(exist_ok=True)
        measurement.rename(folder / f"scan{seed}.h5")
        truth.rename(folder / f"scan{seed}_truth.nc")
    result = batch(load_recipe("mri-cgsense"), [str(folder)], str(tmp_path / "out"))
    assert result["counts"]["done"] == 2
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    for row in summary["datasets"]:
        assert row["reference"] and row["metrics"]["psnr"] > 15
        assert "reference" in xr.open_zarr(row["store"])


def test_check_show_and_bad_recipes(study, tmp_path, capsys):
    measurement, truth = study
    assert main(["check", "mri-cs", "--input", str(measurement)]) == 0
    out = capsys.readouterr().out
    assert "2 slice(s) x 8 coil(s) x 32 x 32 k-space" in out and "sensitivities from file" in out
    _, result = _run("mri-cs", study, tmp_path / "cs.zarr")
    assert main(["show", result["store"], "--png", str(tmp_path / "cs.png"), "--json"]) == 0
    assert (tmp_path / "cs.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RecipeError, match="angular_range_deg: a CT setting"):
        load_recipe("mri-cs", ["angular_range_deg=60"])
    with pytest.raises(RecipeError, match="unknown method 'fbp'"):
        load_recipe("mri-cs", ["method.name=fbp"])
    with pytest.raises(RecipeError, match="'prescan' .* needs an undersampling section"):
        load_recipe("mri-cs", ["sensitivity.source=prescan"])
    assert main(["check", "mri-cs", "--input", str(measurement), "--set", "undersampling.acceleration=4"]) != 0
    assert "already undersampled" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_16_coil_brain_cg_sense_gains_over_zero_filled_at_4x(tmp_path):
    raw = shared_file("mri/chiew_sense16/raw_data.mat")
    sets = ["undersampling.acceleration=4"]
    zero = load_recipe("mri-zero-filled", sets, input=str(raw), output=str(tmp_path / "zf.zarr"))
    cg = load_recipe("mri-cgsense", sets, input=str(raw), output=str(tmp_path / "cg.zarr"))
    zf, cgs = reconstruct(zero), reconstruct(cg)
    # measured: zero-filled 22.6 dB, CG-SENSE 38.7 dB (maps from the fully sampled centre)
    assert cgs["psnr"] >= zf["psnr"] + 5, (zf["psnr"], cgs["psnr"])
    assert ResultStore.open(tmp_path / "cg.zarr").provenance["sensitivities"] == "prescan"


@pytest.mark.realdata
def test_real_8_coil_poisson_brain_is_explained_to_the_noise_level(tmp_path):
    ksp = shared_file("mri/sigpy_cartesian_brain/cartesian_ksp.npy")
    result = reconstruct(load_recipe("mri-cs", input=str(ksp), output=str(tmp_path / "cs.zarr")))
    store = ResultStore.open(tmp_path / "cs.zarr")
    assert store.provenance["sensitivities"] == "espirit" and store.provenance["acceleration"] > 7
    # The data residual of the mean, in units of the noise level estimated from outer k-space.
    assert 0.5 < result["data_residual"] < 3, result["data_residual"]
