"""`inversa batch`: isolation of a bad input, the table and summary, equality with single runs,
resume and skip on rerun, input expansion, and work units that fail part-way."""

from __future__ import annotations

import json
import pickle
import shutil
import time

import numpy as np
import pytest
import xarray as xr

import inversa.tasks.kinds.ct.region as ct_region
from inversa.data.store import ResultStore
from inversa.flows.batch import SUMMARY_FILE, DatasetsFailed, batch
from inversa.flows.batch_inputs import empty_inputs, expand_inputs
from inversa.flows.cli import main
from inversa.tasks.core.recipe import load_recipe
from inversa.flows.reconstruct import reconstruct
from inversa.tasks.kinds.ct import KIND as CT
from tests.flows.helpers import tiny_study

RECIPE_SETS = ["region_size=1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three tiny studies with their `_truth` references, and a corrupt file, in one directory."""
    folder = tmp_path_factory.mktemp("inputs")
    for seed, name in enumerate(["alpha", "beta", "gamma"]):
        measurement, truth = tiny_study(tmp_path_factory.mktemp(name), n_slices=3, seed=seed)
        shutil.move(measurement, folder / f"{name}.nc")
        shutil.move(truth, folder / f"{name}_truth.nc")
    (folder / "broken.nc").write_bytes(b"CDF\x01 not really netcdf")
    return folder


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("ct-fbp", RECIPE_SETS)


@pytest.fixture(scope="module")
def first_batch(inputs, recipe, tmp_path_factory):
    output = tmp_path_factory.mktemp("batch-out")
    with pytest.raises(DatasetsFailed, match=r"1 of 4 dataset\(s\) failed \(broken;") as failure:
        batch(recipe, [str(inputs)], str(output))
    return output, failure.value


def _summary(output):
    return json.loads((output / SUMMARY_FILE).read_text())


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def test_corrupt_input_fails_alone_and_the_others_are_reconstructed(first_batch, inputs):
    output, _ = first_batch
    rows = {r["dataset"]: r for r in _summary(output)["datasets"]}
    assert set(rows) == {"alpha", "beta", "gamma", "broken"}  # the _truth files are references, not datasets
    assert rows["broken"]["status"] == "failed"
    assert rows["broken"]["reason"].startswith(str(inputs / "broken.nc"))  # the reader's message, naming the file
    for name in ("alpha", "beta", "gamma"):
        row = rows[name]
        assert row["status"] == "done" and row["reason"] is None
        assert row["reference"] == str(inputs / f"{name}_truth.nc")
        store = ResultStore.open(output / f"{name}.zarr")
        assert store.done_regions() == {0, 1, 2}
        assert row["metrics"]["psnr"] > 10 and 0 < row["metrics"]["mcc"] <= 1
        assert row["metrics"] == pytest.approx(store.summary)
    assert _summary(output)["counts"] == {"done": 3, "resumed": 0, "skipped": 0, "failed": 1}
    assert not (output / "broken.zarr").exists()


def test_table_artifact_lists_every_dataset(first_batch):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    output, _ = first_batch
    run_id = _summary(output)["flow_run_id"]
    with _client() as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["batch-ct-fbp"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        run = client.read_flow_run(run_id)
    assert run.state.is_failed() and run.name == "ct-fbp | batch of 1 input(s)"
    assert len(artifacts) == 1 and artifacts[0].type == "table"
    table = artifacts[0].data if isinstance(artifacts[0].data, list) else json.loads(artifacts[0].data)
    rows = {row["dataset"]: row for row in table}
    assert {name: row["status"] for name, row in rows.items()} == {
        "alpha": "done", "beta": "done", "gamma": "done", "broken": "failed"}
    assert rows["alpha"]["store"] == str(output / "alpha.zarr")
    assert float(rows["beta"]["psnr"]) > 10 and float(rows["beta"]["compute_s"]) > 0
    assert rows["broken"]["psnr"] == "" and "broken.nc" in rows["broken"]["reason"]


def test_batch_stores_equal_single_runs(first_batch, inputs, tmp_path):
    output, _ = first_batch
    single = load_recipe("ct-fbp", RECIPE_SETS, input=str(inputs / "beta.nc"), output=str(tmp_path / "beta.zarr"),
                         reference=str(inputs / "beta_truth.nc"))
    reconstruct(single)
    got, want = xr.open_zarr(output / "beta.zarr"), xr.open_zarr(tmp_path / "beta.zarr")
    for name in ("mean", "std", "reference", "metric_psnr", "metric_mcc"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    ours, theirs = ResultStore.open(output / "beta.zarr").provenance, ResultStore.open(tmp_path / "beta.zarr").provenance
    assert ours["recipe_digest"] == theirs["recipe_digest"] and ours["input_digest"] == theirs["input_digest"]


def test_rerun_skips_complete_stores_and_resumes_a_partial_one(first_batch, inputs, capsys):
    output, _ = first_batch
    before = {n: {i: ResultStore.open(output / f"{n}.zarr").region_record(i) for i in range(3)}
              for n in ("alpha", "beta", "gamma")}
    (output / "beta.zarr" / "_inversa" / "regions" / "1.json").unlink()  # as if killed while writing region 1

    code = main(["batch", "ct-fbp", str(inputs), "--output", str(output), *[f"--set={s}" for s in RECIPE_SETS]])
    assert code == 1
    printed = capsys.readouterr()
    lines = {line.split()[0]: line.split() for line in printed.out.splitlines() if line.strip()}
    assert lines["alpha"][1] == "skipped" and lines["gamma"][1] == "skipped"
    assert lines["beta"][1] == "resumed" and lines["broken"][1] == "failed"
    assert "inversa batch: 1 of 4 dataset(s) failed" in printed.err and "Traceback" not in printed.err

    for name in ("alpha", "gamma"):  # untouched: same manifest records
        assert {i: ResultStore.open(output / f"{name}.zarr").region_record(i) for i in range(3)} == before[name]
    beta = ResultStore.open(output / "beta.zarr")
    assert beta.done_regions() == {0, 1, 2}
    assert beta.region_record(0) == before["beta"][0] and beta.region_record(2) == before["beta"][2]

    # Only the resumed and the failed dataset cost task runs; the complete ones were not even planned.
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = _summary(output)["flow_run_id"]
    expected = {"prepare beta", "prepare broken", "beta slice 1", "report beta"}
    deadline = time.monotonic() + 20
    while True:
        with _client() as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        names = {r.name for r in runs}
        if names >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert names == expected


def test_globs_and_explicit_files_and_a_clean_exit(inputs, recipe, tmp_path):
    # The glob matches all three studies (not broken.nc, not the _truth files); gamma.nc twice is one dataset.
    result = batch(recipe, [str(inputs / "*a.nc"), str(inputs / "gamma.nc")], str(tmp_path / "out"))
    assert {r["dataset"]: r["status"] for r in result["datasets"]} == {"alpha": "done", "beta": "done", "gamma": "done"}
    assert _summary(tmp_path / "out")["counts"]["done"] == 3
    assert main(["batch", "ct-fbp", str(inputs / "gamma.nc"), "--output", str(tmp_path / "out"),
                 "--set", "region_size=1"]) == 0  # complete already: skipped, exit 0


def test_input_expansion(first_batch, inputs, tmp_path):
    (tmp_path / ".hidden.nc").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a measurement")
    shutil.copy(inputs / "alpha.nc", tmp_path / "scan.nc")
    shutil.copy(inputs / "alpha.nc", tmp_path / "scan.h5")
    shutil.copytree(first_batch[0] / "alpha.zarr", tmp_path / "result.zarr")  # output inside a watched folder
    found = expand_inputs([str(tmp_path), str(tmp_path / "scan.nc"), str(tmp_path / "nothing-*.nc"),
                           str(tmp_path / "missing.nc")], CT.input_suffixes)
    by_name = {d.dataset: d for d in found}
    assert set(by_name) == {"scan-h5", "scan-nc", "missing"}  # one dataset per file, named apart
    assert by_name["scan-nc"].problem is None and by_name["scan-nc"].reference is None
    assert empty_inputs([str(tmp_path / "nothing-*.nc"), str(tmp_path)], CT.input_suffixes) == [
        f"{tmp_path / 'nothing-*.nc'}: no measurement file matches"]
    assert "no such file or directory" in by_name["missing"].problem
    paired = {d.dataset: d.reference for d in expand_inputs([str(inputs)], CT.input_suffixes)}
    assert paired["alpha"] == str(inputs / "alpha_truth.nc") and "alpha_truth" not in paired


def test_a_unit_that_fails_part_way_keeps_the_regions_before_it(inputs, tmp_path, monkeypatch):
    from prefect import flow

    from inversa.tasks.pipeline import RegionFailed, is_transient, prepare_store_task, reconstruct_regions_task

    spec = load_recipe("ct-fbp", RECIPE_SETS, input=str(inputs / "alpha.nc"), output=str(tmp_path / "a.zarr"))
    real_setup, calls = ct_region.setup_for, {"n": 0}

    def failing_setup(recipe, device=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("simulated bad slice")
        return real_setup(recipe, device)

    @flow
    def one_unit():
        prepare_store_task(spec, spec.digest(), False)
        return reconstruct_regions_task(str(tmp_path / "a.zarr"), [0, 1, 2], spec)

    monkeypatch.setattr(ct_region, "setup_for", failing_setup)
    with pytest.raises(RegionFailed, match="region 2 .* failed: simulated bad slice") as failure:
        one_unit()
    assert failure.value.index == 2 and failure.value.done == (0, 1)
    assert ResultStore.open(tmp_path / "a.zarr").done_regions() == {0, 1}
    assert not is_transient(failure.value)  # a ValueError is not retried
    # What a Dask worker sends back: the region, the regions before it and retryability survive pickling.
    back = pickle.loads(pickle.dumps(RegionFailed("region 4 failed: disk hiccup", "s.zarr", 4, (2, 3), transient=True)))
    assert (str(back), back.index, back.done, is_transient(back)) == ("region 4 failed: disk hiccup", 4, (2, 3), True)


def test_a_store_another_run_is_writing_fails_alone(inputs, recipe, tmp_path):
    from inversa.data.store_lock import StoreLock

    output = tmp_path / "out"
    with StoreLock(output / "beta.zarr"):  # stands for an `inversa run` writing beta's store
        with pytest.raises(DatasetsFailed, match=r"dataset\(s\) failed \(beta, broken;"):
            batch(recipe, [str(inputs)], str(output))
    rows = {r["dataset"]: r for r in _summary(output)["datasets"]}
    assert rows["beta"]["status"] == "failed" and "another run is writing" in rows["beta"]["reason"]
    assert not (output / "beta.zarr").exists()
    assert rows["alpha"]["status"] == rows["gamma"]["status"] == "done"
    result = batch(recipe, [str(inputs / "beta.nc")], str(output))  # the lock is free again
    assert result["datasets"][0]["status"] == "done"


def test_an_empty_watched_directory_is_nothing_to_do_not_a_failure(recipe, tmp_path):
    (tmp_path / "watched").mkdir()
    result = batch(recipe, [str(tmp_path / "watched")], str(tmp_path / "out"))
    assert result["datasets"] == [] and sum(result["counts"].values()) == 0
    assert _summary(tmp_path / "out")["datasets"] == []
