"""The reconstruct flow end to end: store round trip, artifacts, resume after a failure."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import inversa.tasks.kinds.ct.region as ct_region
from inversa.data.store import ResultStore
from inversa.tasks.core.recipe import load_recipe
from inversa.flows.reconstruct import RegionsFailed, reconstruct
from tests.flows.helpers import tiny_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("study"))


def _recipe(name, study, output, *sets):
    measurement, truth = study
    return load_recipe(name, ["region_size=1", *sets], input=str(measurement), reference=str(truth),
                       output=str(output))


def test_gaussian_run_writes_a_complete_store_with_metrics_and_provenance(study, tmp_path):
    recipe = _recipe("ct-gaussian", study, tmp_path / "g.zarr", "samples=8", "store_samples=true")
    result = reconstruct(recipe)
    ds = xr.open_zarr(result["store"])
    assert set(ds.data_vars) >= {"mean", "std", "lower", "upper", "samples", "reference", "metric_psnr"}
    assert ds["samples"].shape == (8, 4, 32, 32)
    for name in ("mean", "std", "lower", "upper"):
        assert np.isfinite(ds[name].values).all(), name
    assert (ds["std"].values > 0).all()
    assert (ds["lower"].values <= ds["mean"].values + 1e-7).all()
    assert (ds["upper"].values >= ds["mean"].values - 1e-7).all()
    # The stored mean is the mean of the stored samples, and metrics are real numbers.
    np.testing.assert_allclose(ds["mean"].values, ds["samples"].values.mean(axis=0), rtol=1e-5, atol=1e-6)
    # The run's coverage is the per-slice fraction of reference pixels inside the stored interval, averaged.
    inside = (ds["lower"].values <= ds["reference"].values) & (ds["reference"].values <= ds["upper"].values)
    assert result["coverage"] == pytest.approx(float(inside.mean(axis=(1, 2)).mean()))
    assert result["psnr"] > 10
    prov = ResultStore.open(result["store"]).provenance
    assert prov["recipe_digest"] == load_recipe(recipe).digest()
    assert prov["method"] == "gaussian" and prov["samples"] == 8


def test_artifacts_are_published(study, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    recipe = _recipe("ct-fbp", study, tmp_path / "f.zarr")
    run_id = reconstruct(recipe)["flow_run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        run = client.read_flow_run(run_id)
    assert run.name == "ct-fbp | tiny"
    by_type = {a.type for a in artifacts}
    assert {"progress", "table", "markdown"} <= by_type
    # Prefect stores link artifacts as markdown: a link to the store.
    assert any(a.key and a.key.endswith("-store") and (tmp_path / "f.zarr").as_uri() in a.data for a in artifacts)
    progress = [a for a in artifacts if a.type == "progress"][-1]
    assert float(progress.data) == pytest.approx(100.0)
    markdown = next(a for a in artifacts if a.key and a.key.endswith("-summary"))
    assert "data:image/png;base64," in markdown.data and "f.zarr" in markdown.data


def test_interrupted_run_resumes_to_the_same_store(study, tmp_path, monkeypatch):
    reference = reconstruct(_recipe("ct-gaussian", study, tmp_path / "ref.zarr", "samples=4"))

    real_setup = ct_region.setup_for
    calls = {"n": 0}

    class Crash(ValueError):
        pass

    def failing_setup(recipe, device=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the third region to start dies
            raise Crash("simulated crash")
        return real_setup(recipe, device)

    monkeypatch.setattr(ct_region, "setup_for", failing_setup)
    recipe = _recipe("ct-gaussian", study, tmp_path / "resumed.zarr", "samples=4")
    with pytest.raises(RegionsFailed, match="1 of 4 regions"):
        reconstruct(recipe)
    store = ResultStore.open(tmp_path / "resumed.zarr")
    assert len(store.done_regions()) == 3
    monkeypatch.setattr(ct_region, "setup_for", real_setup)

    reconstruct(recipe)
    store = ResultStore.open(tmp_path / "resumed.zarr")
    assert store.done_regions() == {0, 1, 2, 3}
    assert [store.region_record(i)["write_count"] for i in range(4)] == [1, 1, 1, 1]
    got, want = xr.open_zarr(store.path), xr.open_zarr(reference["store"])
    for name in ("mean", "std", "lower", "upper", "metric_mcc"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def test_rerun_of_a_finished_store_writes_nothing(study, tmp_path):
    recipe = _recipe("ct-fbp", study, tmp_path / "again.zarr")
    reconstruct(recipe)
    before = {i: ResultStore.open(tmp_path / "again.zarr").region_record(i) for i in range(4)}
    reconstruct(recipe)
    after = {i: ResultStore.open(tmp_path / "again.zarr").region_record(i) for i in range(4)}
    assert before == after


def test_the_progress_bar_counts_each_region_once_with_the_fractions_in_flight():
    from prefect import flow

    from inversa.tasks.report import ProgressArtifact

    seen = []

    @flow
    def bar_only():
        bar = ProgressArtifact("bar-test", total=4, done=1, description="regions", hook=lambda d, t: seen.append(d))
        bar.partial("a", 0.5)
        bar.partial("b", 0.25)
        bar.complete("a")
        bar.complete("a")  # a task and its flow may both report a region: it counts once
        bar.partial("a", 0.9)  # and a late fraction of a finished region changes nothing
        bar.move_to(3.5)
        bar.close()
        return bar.done

    assert bar_only() == pytest.approx(3.5)
    assert seen == pytest.approx([1.5, 1.75, 2.25, 3.5])


@pytest.mark.parametrize("how", ["renamed-into-place", "rewritten-keeping-mtime"])
def test_input_changed_mid_run_fails_and_keeps_the_store_true_to_its_digest(study, tmp_path, monkeypatch, how):
    """Each region comes from the data the provenance digests, or the run fails saying so."""
    import os
    import shutil

    measurement, truth = study
    original = tmp_path / "input.nc"
    shutil.copy2(measurement, original)
    other, _ = tiny_study(tmp_path / "other", seed=8)
    reference = reconstruct(_recipe("ct-fbp", (original, truth), tmp_path / "ref.zarr"))
    saved = original.read_bytes()

    real_setup = ct_region.setup_for
    calls = {"n": 0}

    def replacing_setup(recipe, device=None):
        calls["n"] += 1
        if calls["n"] == 3:  # while the third region runs, the file is swapped under it
            stat = original.stat()
            if how == "renamed-into-place":
                shutil.copy(other, tmp_path / "new.nc")
                os.replace(tmp_path / "new.nc", original)
            else:  # same path, inode, size and mtime (as `cp -p` of an equal-sized file leaves it)
                new = other.read_bytes()
                assert len(new) == stat.st_size
                original.write_bytes(new)
                os.utime(original, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return real_setup(recipe, device)

    monkeypatch.setattr(ct_region, "setup_for", replacing_setup)
    recipe = _recipe("ct-fbp", (original, truth), tmp_path / "run.zarr")
    with pytest.raises(RegionsFailed, match="changed since this run began"):
        reconstruct(recipe)
    monkeypatch.setattr(ct_region, "setup_for", real_setup)
    store = ResultStore.open(tmp_path / "run.zarr")
    assert store.done_regions() == {0, 1}  # the region that read the new file was not written
    assert store.provenance["input_digest"] == ResultStore.open(reference["store"]).provenance["input_digest"]
    # Resuming on the new data is refused (another input); with the original back it resumes.
    with pytest.raises(Exception, match="input_digest differs"):
        reconstruct(recipe)
    original.write_bytes(saved)
    reconstruct(recipe)
    got, want = xr.open_zarr(tmp_path / "run.zarr"), xr.open_zarr(reference["store"])
    np.testing.assert_array_equal(got["mean"].values, want["mean"].values)


def test_a_working_grid_solves_coarse_and_writes_the_output_grid(study, tmp_path):
    """A method without a prior solves on the recipe's working grid and the store holds that result
    resampled to the output grid: exactly the coarse run's mean, bilinear at the output pixel centres."""
    from inversa.models.resampling import Grid, GridResampler

    coarse = reconstruct(load_recipe("ct-fbp", ["grid.size=16", "grid.pixel_size_mm=4.8"], input=str(study[0]),
                                     output=str(tmp_path / "c.zarr")))
    fine = reconstruct(_recipe("ct-fbp", study, tmp_path / "f.zarr", "working_grid.size=16"))
    coarse_mean = xr.open_zarr(coarse["store"])["mean"].values
    ds = xr.open_zarr(fine["store"])
    assert ds["mean"].shape == (4, 32, 32)
    resampler = GridResampler(Grid(16, 4.8), Grid(32, 2.4))
    import torch
    expected = resampler(torch.from_numpy(coarse_mean).double()).numpy()
    np.testing.assert_allclose(ds["mean"].values, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(ds["mean"].values, xr.open_zarr(
        reconstruct(_recipe("ct-fbp", study, tmp_path / "d.zarr"))["store"])["mean"].values, atol=1e-4)


def test_a_working_grid_is_refused_for_a_method_with_a_prior(study, tmp_path):
    from inversa.tasks.core.recipe import RecipeError

    with pytest.raises(RecipeError, match="working_grid: method 'dds' works on its prior's grid"):
        _recipe("ct-dds", study, tmp_path / "x.zarr", "working_grid.size=16")
