"""Every prior family through the same doors: train-prior's run directory, the checkpoint, the
recipe's ``method.params.prior`` and the reconstruct flow, with tiny priors trained for a few steps.

The diffusion family has its own suite (test_diffusion_pipeline.py); here the other families must
work through the very same code with no branch on their names, and a method must refuse a prior
of a family it cannot use with a message naming both.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from inversa.data.checkpoints import read_config
from inversa.data.store import ResultStore
from inversa.flows.reconstruct import reconstruct
from inversa.models.priors.families import FAMILY_NAMES, family, family_of
from inversa.tasks.core.prior_recipe import load_prior_recipe
from inversa.tasks.core.priors import load_prior
from inversa.tasks.core.recipe import RecipeError, load_recipe
from inversa.tasks.core.training import TrainingRun, check_run_directory, training_digest
from tests.flows.helpers import tiny_study

TINY = ["data.image_size=16", "training.steps=3", "training.batch_size=2"]
# (prior recipe, tiny architecture, method that uses it, its parameters for a quick run)
FAMILIES = {
    "flow-matching": ("prior-htc-discs-flow", ["architecture.channels=[8,16]", "architecture.attention_levels=[1]"],
                      "flowdps", {"n_steps": 4, "cg_steps": 2}),
    "vae": ("prior-htc-discs-vae", ["architecture.channels=[8,16]"], "vble", {"n_iter": 5, "mc_samples": 2}),
    "hvae": ("prior-htc-discs-hvae", ["architecture.channels=[8,16]", "architecture.latent_channels=[4,2]"],
             "pnp-hvae", {"n_iter": 4, "cg_steps": 2}),
}


def tiny_prior(directory, name):
    recipe_name, arch, _, _ = FAMILIES[name]
    run = TrainingRun(load_prior_recipe(recipe_name, TINY + arch), directory)
    run.train(3)
    run.save()
    return directory / "prior"


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(request, tmp_path_factory):
    return request.param, tiny_prior(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("study"), n_slices=2)


def test_every_family_is_known_by_its_checkpoint_kind():
    for name in FAMILY_NAMES:
        assert family_of({"kind": family(name).kind}).name == name
    with pytest.raises(ValueError, match="checkpoint kind 'gan-prior' is not a prior this version knows"):
        family_of({"kind": "gan-prior"})


def test_a_checkpoint_records_its_family_and_loads_back_as_that_family(trained):
    name, path = trained
    config = read_config(path)
    assert family_of(config).name == name
    prior = load_prior(path)
    assert type(prior) is type(family(name).wrap(family(name).build(config), config, ""))
    assert prior.shape == (16, 16) and prior.pixel_size_mm == pytest.approx(76.0 / 16)


def test_the_family_is_part_of_the_training_digest_so_runs_of_two_families_never_mix(trained, tmp_path):
    name, path = trained
    recipe = load_prior_recipe(FAMILIES[name][0], TINY + FAMILIES[name][1])
    assert check_run_directory(recipe, path.parent) == 3  # its own recipe resumes (here: is done)
    other = next(f for f in FAMILY_NAMES if f != name)
    relabelled = recipe.model_copy(update={"family": other})  # the same blocks under another family
    assert training_digest(recipe) != training_digest(relabelled)
    with pytest.raises(ValueError, match="another recipe"):
        check_run_directory(relabelled, path.parent)


def test_an_interrupted_run_of_every_family_resumes_to_the_uninterrupted_weights(trained, tmp_path):
    """Train 3 steps in one go, and 2 + 1 with a new process's worth of state in between (the
    checkpoint round trip): the weights must be equal bit for bit. A family with a scalar parameter
    (the VAE's decoder scale) once failed here: checkpoints store 0-d tensors as (1,)."""
    import torch

    name, _ = trained
    recipe = load_prior_recipe(FAMILIES[name][0], TINY + FAMILIES[name][1])
    whole = TrainingRun(recipe, tmp_path / "whole")
    whole.train(3)
    first = TrainingRun(recipe, tmp_path / "parts")
    first.train(2)
    first.save()
    resumed = TrainingRun(recipe, tmp_path / "parts")
    assert resumed.completed == 2
    resumed.train(3)
    expected, got = whole.trainer.state_tensors(True), resumed.trainer.state_tensors(True)
    assert expected.keys() == got.keys()
    for key, a in expected.items():
        assert torch.equal(a, got[key].reshape(a.shape)), key


def test_the_method_runs_through_the_reconstruct_flow_with_calibrated_intervals(trained, study, tmp_path):
    name, path = trained
    _, _, method, params = FAMILIES[name]
    measurement, truth = study
    recipe = load_recipe({"name": f"ct-{method}", "method": {"name": method, "params": {"prior": str(path), **params}},
                          "samples": 4, "region_size": 1, "calibration": {"pairs": 2}},
                         input=str(measurement), reference=str(truth), output=str(tmp_path / "out.zarr"))
    result = reconstruct(recipe)
    ds = xr.open_zarr(result["store"])
    assert ds["mean"].shape == (2, 32, 32)
    for var in ("mean", "std", "lower", "upper"):
        assert np.isfinite(ds[var].values).all(), var
    assert (ds["std"].values > 0).all()
    store = ResultStore.open(result["store"])
    assert store.provenance["method"] == method
    assert store.provenance["prior"]["weights_sha256"] == read_config(path)["weights_sha256"]
    assert store.provenance["prior"]["family"] == name
    record = store.read_meta_json("calibration.json")
    assert record is not None and record["scale"] > 0  # the calibration step applies to every family


def test_a_batch_of_studies_runs_every_family_with_one_calibration(trained, tmp_path):
    """`inversa batch` over two studies of one scanner: both stores complete, each records the
    prior's family, and the calibration pairs (cached on disk) are simulated once for the batch."""
    import json
    import shutil

    from inversa.flows.batch import SUMMARY_FILE, batch

    name, path = trained
    _, _, method, params = FAMILIES[name]
    folder = tmp_path / "scans"
    folder.mkdir()
    for seed in (3, 4):
        measurement, truth = tiny_study(tmp_path / f"s{seed}", n_slices=1, seed=seed)
        shutil.move(measurement, folder / f"scan{seed}.nc")
        shutil.move(truth, folder / f"scan{seed}_truth.nc")
    recipe = load_recipe({"name": f"ct-{method}", "method": {"name": method, "params": {"prior": str(path), **params}},
                          "samples": 2, "region_size": 1, "calibration": {"pairs": 2}})
    result = batch(recipe, [str(folder)], str(tmp_path / "out"))
    assert result["counts"]["done"] == 2
    rows = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["datasets"]
    records = []
    for row in rows:
        store = ResultStore.open(row["store"])
        assert store.provenance["prior"]["family"] == name and row["metrics"]["psnr"] > 0
        records.append(store.read_meta_json("calibration.json"))
    assert records[0]["scale"] > 0 and records[0]["scale"] == records[1]["scale"]
    assert sorted(r["cached"] for r in records) == [False, True]  # the second study reused the first's pairs


def test_a_method_refuses_a_prior_of_another_family(trained, study, tmp_path):
    name, path = trained
    measurement, _ = study
    wanted = "diffusion"
    recipe = load_recipe("ct-dds", [f"method.params.prior={path}", "calibration=off"], input=str(measurement),
                         output=str(tmp_path / "x.zarr"))
    with pytest.raises((ValueError, RecipeError), match=f"method 'dds' needs a {wanted} prior; .* is a {name} prior"):
        reconstruct(recipe)


@pytest.fixture(scope="module")
def tiny_hvae(tmp_path_factory):
    return tiny_prior(tmp_path_factory.mktemp("hvae"), "hvae")


@pytest.fixture(scope="module")
def tiny_flow(tmp_path_factory):
    return tiny_prior(tmp_path_factory.mktemp("flow"), "flow-matching")


@pytest.mark.parametrize("name, quick", [
    ("ct-vble", ["method.params.n_iter=3", "method.params.mc_samples=2"]),
    ("ct-pnp-hvae", ["method.params.n_iter=3", "method.params.cg_steps=2"]),
    ("ct-vae-langevin", ["method.params.map_steps=2", "method.params.burn_in=20", "method.params.thin=1"]),
])
def test_the_shipped_vae_recipes_run_with_a_given_prior(name, quick, tiny_hvae, study, tmp_path):
    measurement, truth = study
    recipe = load_recipe(name, [f"method.params.prior={tiny_hvae}", "samples=2", "region_size=1", "calibration=off",
                                *quick], input=str(measurement), reference=str(truth), output=str(tmp_path / "o.zarr"))
    result = reconstruct(recipe)
    ds = xr.open_zarr(result["store"])
    assert np.isfinite(ds["mean"].values).all() and (ds["std"].values > 0).all()
    assert ResultStore.open(result["store"]).provenance["prior"]["family"] == "hvae"


def test_the_shipped_flowdps_recipe_runs_with_a_given_prior(tiny_flow, study, tmp_path):
    measurement, truth = study
    recipe = load_recipe("ct-flowdps", [f"method.params.prior={tiny_flow}", "samples=2", "region_size=1",
                                        "calibration=off", "method.params.n_steps=3", "method.params.cg_steps=2"],
                         input=str(measurement), reference=str(truth), output=str(tmp_path / "f.zarr"))
    result = reconstruct(recipe)
    ds = xr.open_zarr(result["store"])
    assert np.isfinite(ds["mean"].values).all() and (ds["std"].values > 0).all()
    store = ResultStore.open(result["store"])
    assert store.provenance["prior"]["family"] == "flow-matching"
    assert store.provenance["method_params"]["noise_mixing"] == "flowdps"


@pytest.mark.parametrize("method, prior", [("vble", "hvae"), ("pnp-hvae", "hvae"), ("vae-langevin", "hvae"),
                                           ("flowdps", "flow")])
def test_each_new_method_has_an_htc2022_recipe_with_the_settings_of_its_ct_recipe(method, prior, request):
    from inversa.tasks.core.priors import load_prior_cached
    from inversa.tasks.kinds.ct.methods import build_sampler

    path = request.getfixturevalue(f"tiny_{prior}")
    htc = load_recipe(f"htc2022-{method}", [f"method.params.prior={path}", "angular_range_deg=60"])
    ct = load_recipe(f"ct-{method}", [f"method.params.prior={path}"])
    assert htc.method == ct.method and htc.samples == ct.samples and htc.angular_range_deg == 60.0
    sampler = build_sampler(htc.method.name, htc.method.params)
    assert getattr(sampler, sampler.prior_param) is load_prior_cached(path)
