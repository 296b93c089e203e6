"""The reconstruct flow on a real Dask cluster: the same store as the thread runner, value for value.

One `distributed.LocalCluster` of two worker processes serves the module (started once; a
cluster costs seconds on a shared 2-core machine). Workers declare a `GPU` resource so the
GPU-placement test can see a task hold it; the CPU tasks here never ask for it.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from inversa.flows.cli import main
from inversa.tasks.core.recipe import load_recipe
from inversa.flows.reconstruct import reconstruct
from inversa.flows.task_runners import RunnerOptions, local_cluster_kwargs, make_task_runner
from tests.flows.helpers import tiny_study

VARIABLES = ("mean", "std", "lower", "upper", "samples", "metric_psnr", "metric_ssim", "metric_mcc", "metric_coverage")


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    kwargs = {**local_cluster_kwargs(2, 1), "resources": {"GPU": 1}}
    with LocalCluster(**kwargs) as running:
        yield running


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("study"), n_slices=4)


def _recipe(name, study, output, *sets):
    measurement, truth = study
    return load_recipe(name, ["region_size=1", *sets], input=str(measurement), reference=str(truth),
                       output=str(output))


def _assert_same_store(a, b):
    one, two = xr.open_zarr(a), xr.open_zarr(b)
    compared = [v for v in VARIABLES if v in one.data_vars]
    assert {"mean", "std", "lower", "upper", "metric_psnr"} <= set(compared)
    assert set(compared) == {v for v in VARIABLES if v in two.data_vars}
    for name in compared:
        assert np.array_equal(one[name].values, two[name].values, equal_nan=True), name


def _threads(recipe):
    return reconstruct.with_options(task_runner=make_task_runner(RunnerOptions(kind="threads", workers=2)))(recipe)


def test_gaussian_on_a_running_cluster_equals_threads_and_publishes_progress(study, tmp_path, cluster, one_torch_thread):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    sets = ("samples=6", "store_samples=true")
    threaded = _threads(_recipe("ct-gaussian", study, tmp_path / "threads.zarr", *sets))
    runner = make_task_runner(RunnerOptions(address=cluster.scheduler_address))
    on_dask = reconstruct.with_options(task_runner=runner)(_recipe("ct-gaussian", study, tmp_path / "dask.zarr", *sets))
    _assert_same_store(threaded["store"], on_dask["store"])
    assert on_dask["psnr"] == threaded["psnr"]

    # Tasks ran in the worker processes and reported to the same API: states, names, artifacts.
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[on_dask["flow_run_id"]])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[on_dask["flow_run_id"]]))
        )
    regions = [r for r in runs if r.name.startswith("tiny slice ")]
    assert sorted(r.name for r in regions) == [f"tiny slice {i}" for i in range(4)]
    assert all(r.state.is_completed() for r in regions)
    progress = [a for a in artifacts if a.type == "progress"]
    run_bar = [a for a in progress if a.key]  # the run's bar, moved by the flow as units finish
    unit_bars = [a for a in progress if not a.key]  # one per work unit, moved from the worker within its regions
    assert run_bar and float(run_bar[-1].data) == pytest.approx(100.0)
    assert len(unit_bars) == len(regions) and {a.task_run_id for a in unit_bars} == {r.id for r in regions}
    assert all(float(a.data) == pytest.approx(100.0) for a in unit_bars)
    assert any(a.type == "table" for a in artifacts)


def test_tv_with_workers_on_the_command_line_equals_threads(study, tmp_path, one_torch_thread, capsys):
    threaded = _threads(_recipe("ct-tv", study, tmp_path / "threads.zarr", "method.params.max_iter=40"))
    measurement, truth = study
    code = main(["run", "ct-tv", "--input", str(measurement), "--reference", str(truth), "--output",
                 str(tmp_path / "dask.zarr"), "--set", "region_size=1", "--set", "method.params.max_iter=40",
                 "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    _assert_same_store(threaded["store"], tmp_path / "dask.zarr")


def test_gpu_tasks_take_the_gpu_resource_of_a_dask_worker(cluster):
    from prefect import flow, task

    from inversa.tasks.gpu import gpu_annotations

    @task
    def free_gpus() -> float:
        from distributed import get_worker

        return get_worker().state.available_resources["GPU"]

    @flow(task_runner=make_task_runner(RunnerOptions(address=cluster.scheduler_address)))
    def probe():
        with gpu_annotations(load_recipe("ct-fbp", ["name=probe", "device=cuda"])):
            held = free_gpus.submit()
        with gpu_annotations(load_recipe("ct-fbp", ["name=probe", "device=cpu"])):
            free = free_gpus.submit()
        return held.result(), free.result()

    # While a GPU task runs its worker has no GPU left; a CPU task leaves it free.
    assert probe() == (0, 1)


def test_worker_processes_run_the_asked_number_of_torch_threads():
    from distributed import Client, LocalCluster

    def torch_threads() -> int:
        import torch

        return torch.get_num_threads()

    with LocalCluster(**local_cluster_kwargs(1, 2)) as two, Client(two) as client:
        assert list(client.run(torch_threads).values()) == [2]


def test_field_gp_regions_on_a_cluster_rebuild_the_saved_fit_and_equal_threads(tmp_path, cluster, one_torch_thread):
    """Worker processes have no fitted model: each rebuilds it from the fit saved in the store,
    so the rows they write are the thread runner's, value for value."""
    from inversa.flows.cli_field_study import write_field_study

    obs, truth = write_field_study("darcy", tmp_path / "d.nc", {"n": 17, "n_sensors": 60, "seed": 2})

    def field_recipe(output):
        return load_recipe("field-gp", ["region_size=4", "method.params.max_iter=20"], input=str(obs),
                           reference=str(truth), output=str(output))

    threaded = _threads(field_recipe(tmp_path / "threads.zarr"))
    runner = make_task_runner(RunnerOptions(address=cluster.scheduler_address))
    on_dask = reconstruct.with_options(task_runner=runner)(field_recipe(tmp_path / "dask.zarr"))
    assert on_dask["regions_done"] == threaded["regions_done"] == 5
    one, two = xr.open_zarr(threaded["store"]), xr.open_zarr(on_dask["store"])
    for name in ("mean", "std", "lower", "upper"):
        assert np.isfinite(two[name].values).all(), name
        assert np.array_equal(one[name].values, two[name].values), name
    assert on_dask["rmse"] == threaded["rmse"] and on_dask["coverage"] == threaded["coverage"]
