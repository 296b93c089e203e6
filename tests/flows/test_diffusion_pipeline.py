"""Diffusion samplers through the real reconstruct flow, with a tiny prior trained for two steps.

The prior works on a 16 x 16 grid (4.75 mm over 76 mm); the study is 32 x 32 at 2.4 mm, so every
test also crosses from the working grid to a different output grid.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import inversa.models.streaming as streaming
from inversa.data.store import ResultStore
from inversa.resources import recipes_dir
from inversa.tasks.core.recipe import load_recipe
from inversa.flows.reconstruct import RegionsFailed, reconstruct
from inversa.models.conformal import scale_map
from inversa.models.resampling import Grid, GridResampler
from inversa.models.streaming import stream_posterior
from inversa.models.uq import interval_z
from inversa.tasks.core.prior_recipe import load_prior_recipe
from inversa.tasks.core.priors import load_prior_cached
from inversa.tasks.core.training import TrainingRun
from inversa.tasks.kinds.ct.measurement import geometry_for, load_measurement, operator_for
from inversa.tasks.kinds.ct.methods import build_sampler
from tests.flows.helpers import tiny_study


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory):
    recipe = yaml.safe_load((recipes_dir() / "prior-htc-discs.yaml").read_text())
    recipe["data"]["image_size"] = 16
    recipe["architecture"].update(channels=[8, 16], attention_levels=[1])
    recipe["training"].update(steps=2, batch_size=2)
    out = tmp_path_factory.mktemp("prior")
    run = TrainingRun(load_prior_recipe(recipe), out)
    run.train(2)
    run.save()
    return out / "prior"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("study"), n_slices=2)


def _recipe(study, output, prior, method="dds", *sets, reference=True):
    measurement, truth = study
    return load_recipe(
        f"ct-{method}",
        [f"method.params.prior={prior}", "method.params.n_steps=4", "samples=4", "region_size=1", *sets],
        input=str(measurement), reference=str(truth) if reference else None, output=str(output),
    )


def test_dds_run_writes_uncertainty_on_the_output_grid(study, prior_path, tmp_path):
    result = reconstruct(_recipe(study, tmp_path / "dds.zarr", prior_path))
    ds = xr.open_zarr(result["store"])
    for name in ("mean", "std", "lower", "upper"):
        assert ds[name].shape == (2, 32, 32), name  # the output grid, not the prior's 16 x 16
        assert np.isfinite(ds[name].values).all(), name
    assert (ds["std"].values > 0).all()
    # Calibrated by default: the interval is mean +- z * factor * std, the factor of each pixel's
    # std band from the calibration record the store keeps (pairs on the output grid too).
    record = ResultStore.open(result["store"]).read_meta_json("calibration.json")
    assert record["pairs"] == 3 and record["samples"] == 4 and len(record["bands"]) >= 2
    half = interval_z(0.9) * scale_map(record, ds["std"].values) * ds["std"].values
    np.testing.assert_allclose(ds["upper"].values - ds["mean"].values, half, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ds["mean"].values - ds["lower"].values, half, rtol=1e-4, atol=1e-7)
    assert result["interval_scale"] == pytest.approx(record["scale"])
    assert ds.attrs["interval_kind"] == "gaussian" and "16 x 16" in ds.attrs["resampling"]
    assert np.isfinite(ds["metric_coverage"].values).all()
    assert result["coverage"] == pytest.approx(float(np.mean(ds["metric_coverage"].values)))  # run-level: the mean
    store = ResultStore.open(result["store"])
    prov = store.provenance
    assert prov["method"] == "dds" and prov["prior"]["path"] == str(prior_path)
    assert prov["prior"]["weights_sha256"] and prov["working_grid"] == {"size": 16, "pixel_size_mm": 4.75}
    # The sampler's noise range came from the prior (physical units: network range times scale).
    prior = load_prior_cached(prior_path)
    assert prov["method_params"]["sigma_max"] == pytest.approx(prior.sigma_max)
    assert store.region_record(0)["info"]["working_grid"]["size"] == 16
    assert result["nfe"] == 2 * 4  # two regions, one call of 4 steps each (4 samples fit one chunk)


def test_region_size_does_not_change_the_store(study, prior_path, tmp_path, monkeypatch):
    # Calibration off: a float32 rounding of a std lying on a band edge would pick the next band's
    # factor (the banded factors are tested in tests/flows/test_calibration.py).
    one = reconstruct(_recipe(study, tmp_path / "one.zarr", prior_path, "dds", "region_size=1", "calibration=off"))
    # Two slices per region and one sample per call: other batches, the same numbers.
    monkeypatch.setattr(streaming, "SAMPLE_CHUNK", 1)
    two = reconstruct(_recipe(study, tmp_path / "two.zarr", prior_path, "dds", "region_size=2", "calibration=off"))
    a, b = xr.open_zarr(one["store"]), xr.open_zarr(two["store"])
    # Equal up to float32 rounding in batched convolutions (images are ~0.03 / mm; a seeding
    # error would differ by the posterior spread, ~1e-2).
    for name in ("mean", "std", "lower", "upper"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=0, atol=2e-6, err_msg=name)
    assert ResultStore.open(two["store"]).region_record(0)["info"]["samples_per_call"] == [1, 1, 1, 1]


def test_rerun_resumes_only_the_unfinished_region(study, prior_path, tmp_path, monkeypatch):
    recipe = _recipe(study, tmp_path / "r.zarr", prior_path, "reddiff")
    reference = reconstruct(recipe)
    want = {k: xr.open_zarr(reference["store"])[k].values for k in ("mean", "std", "lower", "upper")}
    store = ResultStore.open(reference["store"])
    (store.path / "_inversa" / "regions" / "1.json").unlink()  # region 1 "crashed" before its manifest

    reconstruct(recipe)
    store = ResultStore.open(reference["store"])
    assert [store.region_record(i)["write_count"] for i in range(2)] == [1, 1]
    got = xr.open_zarr(store.path)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name].values, value, err_msg=name)


def test_store_samples_streams_the_sample_dimension(study, prior_path, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "SAMPLE_CHUNK", 2)  # two chunks of two samples per region
    result = reconstruct(_recipe(study, tmp_path / "s.zarr", prior_path, "dps", "store_samples=true"))
    ds = xr.open_zarr(result["store"])
    samples = ds["samples"].values
    assert ds["samples"].dims == ("sample", "slice", "y", "x") and samples.shape == (4, 2, 32, 32)
    assert np.isfinite(samples).all() and np.ptp(samples, axis=0).max() > 0
    np.testing.assert_allclose(ds["mean"].values, samples.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ds["std"].values, samples.std(axis=0, ddof=1), rtol=1e-4, atol=1e-7)


def test_a_crash_between_sample_chunks_leaves_the_region_pending(study, prior_path, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "SAMPLE_CHUNK", 2)
    real = ResultStore.write_samples
    calls = {"n": 0}

    def crash_on_second(self, index, first, block):
        calls["n"] += 1
        if index == 0 and first == 2:
            raise ValueError("simulated crash after the first chunk")
        return real(self, index, first, block)

    monkeypatch.setattr(ResultStore, "write_samples", crash_on_second)
    recipe = _recipe(study, tmp_path / "c.zarr", prior_path, "dds", "store_samples=true")
    with pytest.raises(RegionsFailed):
        reconstruct(recipe)
    assert ResultStore.open(tmp_path / "c.zarr").pending_regions() == [0]


def test_peak_memory_does_not_grow_with_the_number_of_samples(study, prior_path, monkeypatch):
    monkeypatch.setattr(streaming, "SAMPLE_CHUNK", 2)
    measurement = load_measurement(load_recipe("ct-fbp", input=str(study[0])))
    sampler = build_sampler("dds", {"prior": str(prior_path), "n_steps": 1})
    operator = operator_for(geometry_for(measurement, Grid(16, 4.75)), torch.device("cpu"))
    resampler = GridResampler(Grid(16, 4.75), Grid(128, 0.59))  # big output images: 64 KB per sample
    sino = torch.as_tensor(measurement.sinogram.values[:2], dtype=torch.float32)
    sigma = torch.full((2,), 0.01)
    held = []

    def draw(n):
        return stream_posterior(sampler, operator, sino, sigma, 0, range(2), n, resampler, torch.device("cpu"),
                                on_chunk=lambda first, block: held.append(block.shape[0]))

    def peak(n):
        tracemalloc.start()
        post = draw(n)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert post.count == n and held[-1] == 2
        return top

    draw(2)  # warm caches outside the trace
    few, many = peak(4), peak(64)
    all_samples = 64 * 2 * 128 * 128 * 4  # what keeping the samples (float32) would hold
    assert many < 1.2 * few + 100_000, (few, many)
    assert many < 0.5 * all_samples, (many, all_samples)


def test_missing_prior_file_is_named(study, tmp_path):
    missing = tmp_path / "no-such-prior"
    recipe = _recipe(study, tmp_path / "m.zarr", missing)
    with pytest.raises(FileNotFoundError, match=r"method\.params\.prior.*no-such-prior"):
        reconstruct(recipe)
    assert not (tmp_path / "m.zarr").exists()


@pytest.mark.parametrize("name", ["ct-dps", "ct-dds", "ct-reddiff", "htc2022-dps", "htc2022-dds", "htc2022-reddiff"])
def test_shipped_diffusion_recipes_run_with_a_given_prior(name, prior_path):
    recipe = load_recipe(name, [f"method.params.prior={prior_path}"])
    assert recipe.method.params["prior"] == str(prior_path) and recipe.samples == 8
    sampler = build_sampler(recipe.method.name, recipe.method.params)
    assert sampler.denoiser is load_prior_cached(prior_path)
    if name.startswith("htc"):
        tuned = load_recipe(name, [f"method.params.prior={prior_path}", "angular_range_deg=60", "start_angle_deg=30"])
        assert (tuned.angular_range_deg, tuned.start_angle_deg) == (60.0, 30.0)


def test_method_params_are_validated_without_the_network(tmp_path):
    from inversa.tasks.core.priors import PriorNotFound, resolve_prior_path
    from inversa.tasks.kinds.ct.methods import coerce_method_params as validate_method_params

    missing = str(tmp_path / "absent")  # validation never opens the checkpoint
    validate_method_params("dds", {"prior": missing, "n_steps": 10, "sigma_max": 0.5})
    with pytest.raises(ValueError, match="no parameter 'n_stepz'"):
        validate_method_params("dds", {"prior": missing, "n_stepz": 3})
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        validate_method_params("dps", {"prior": missing, "n_steps": 0})
    with pytest.raises(ValueError, match=r"method\.params\.prior: Field required"):
        validate_method_params("reddiff", {"n_steps": 3})
    with pytest.raises(ValueError, match="no parameter 'denoiser'"):
        validate_method_params("dds", {"prior": missing, "denoiser": "x"})
    with pytest.raises(PriorNotFound, match=r"method\.params\.prior.*absent\.json"):
        resolve_prior_path(missing)


def test_a_training_directory_names_its_prior_checkpoint(prior_path):
    from inversa.tasks.core.priors import resolve_prior_path

    assert resolve_prior_path(prior_path.parent) == prior_path
    assert resolve_prior_path(str(prior_path) + ".json") == prior_path


def test_a_long_chain_moves_the_progress_bar_within_its_region(study, prior_path, tmp_path, monkeypatch):
    import inversa.flows.reconstruct as module

    seen: list[tuple[float, int]] = []
    monkeypatch.setattr(module, "progress_hook", lambda done, total: seen.append((done, total)))
    recipe = _recipe(study, tmp_path / "p.zarr", prior_path, "dds", "region_size=2", "method.params.n_steps=8")
    reconstruct(recipe)
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {1} and done[0] == 0 and done[-1] == pytest.approx(1.0)
    inside = [d for d in done if 0 < d < 1]
    assert len(inside) >= 7, done  # one move per diffusion step of the single region, not only at its end
    assert done == sorted(done)
