"""Choosing where tasks run: options, precedence, recipe validation, cluster specs. No cluster starts."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest

from inversa.flows.cli import main
from inversa.tasks.core.recipe import RecipeError, load_recipe
from inversa.flows.task_runners import (
    DEPLOY_DASK_DIR, LocalCallback, RunnerError, RunnerOptions, add_runner_arguments, load_cluster_spec,
    local_cluster_kwargs, make_task_runner, runner_from,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_runner_arguments(parser)
    return parser.parse_args(list(argv))


RECIPE_DASK = {"kind": "dask", "workers": 3, "threads_per_worker": 2, "cluster": "local"}


@pytest.mark.parametrize(
    ("argv", "recipe", "expected"),
    [
        ((), None, RunnerOptions(kind="threads")),
        ((), RECIPE_DASK, RunnerOptions(**RECIPE_DASK)),
        (("--threads", "4"), RECIPE_DASK, RunnerOptions(kind="threads", workers=4)),
        (("--workers", "2"), None, RunnerOptions(kind="dask", workers=2)),
        # Same kind of cluster: the command line overrides one field, the recipe keeps the rest.
        (("--workers", "5"), RECIPE_DASK, RunnerOptions(kind="dask", workers=5, threads_per_worker=2, cluster="local")),
        (("--threads-per-worker", "4"), RECIPE_DASK,
         RunnerOptions(kind="dask", workers=3, threads_per_worker=4, cluster="local")),
        (("--dask-address", "tcp://10.0.0.5:8786"), RECIPE_DASK, RunnerOptions(kind="dask", address="tcp://10.0.0.5:8786")),
        # Another kind: nothing of the recipe's address carries over to a cluster inversa starts.
        (("--workers", "2"), {"address": "tcp://h:8786"}, RunnerOptions(kind="dask", workers=2)),
        (("--dask-cluster", "slurm"), {"kind": "threads", "workers": 8}, RunnerOptions(kind="dask", cluster="slurm")),
    ],
)
def test_command_line_wins_over_the_recipe(argv, recipe, expected):
    assert runner_from(_args(*argv), recipe) == expected


@pytest.mark.parametrize(
    ("argv", "recipe", "message"),
    [
        (("--threads", "2", "--workers", "2"), None, "--threads .* cannot be combined with --workers"),
        (("--dask-address", "tcp://h:1", "--workers", "2"), None, "--dask-address .* cannot be combined with --workers"),
        (("--threads-per-worker", "2"), None, "--threads-per-worker applies to a Dask cluster"),
        (("--threads-per-worker", "2"), {"address": "tcp://h:1"}, "--threads-per-worker applies to a Dask cluster"),
    ],
)
def test_contradicting_command_line_options_are_refused(argv, recipe, message):
    with pytest.raises(RunnerError, match=message):
        runner_from(_args(*argv), recipe)


def test_non_positive_counts_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _args("--workers", "0")
    assert "argument --workers: '0': expected a whole number >= 1" in capsys.readouterr().err
    with pytest.raises(RunnerError, match="runner.workers: 0"):
        RunnerOptions(kind="dask", workers=0)


def test_kind_follows_from_what_is_given():
    assert RunnerOptions(address="tcp://h:8786").kind == "dask"
    assert RunnerOptions(cluster="slurm").kind == "dask"
    assert RunnerOptions(workers=4).kind == "threads"


def test_recipe_runner_block_is_validated_and_left_out_of_the_digest():
    base = load_recipe("ct-tv")
    on_dask = load_recipe("ct-tv", ["runner.kind=dask", "runner.workers=2", "runner.threads_per_worker=2"])
    assert on_dask.runner.workers == 2 and on_dask.runner.threads_per_worker == 2
    assert on_dask.digest() == base.digest()
    assert load_recipe("ct-tv", ["runner.address=tcp://10.0.0.5:8786"]).digest() == base.digest()
    with pytest.raises(RecipeError, match="ct-tv.yaml: invalid recipe: runner.kind"):
        load_recipe("ct-tv", ["runner.kind=mpi"])
    with pytest.raises(RecipeError, match="runner.workers"):
        load_recipe("ct-tv", ["runner.workers=0"])
    with pytest.raises(RecipeError, match="runner.address and runner.workers exclude each other"):
        load_recipe("ct-tv", ["runner.address=tcp://h:8786", "runner.workers=2"])
    with pytest.raises(RecipeError, match="runner.cluster needs runner kind 'dask'"):
        load_recipe("ct-tv", ["runner.kind=threads", "runner.cluster=slurm"])
    with pytest.raises(RecipeError, match="expected a scheduler address like tcp://HOST:8786"):
        load_recipe("ct-tv", ["runner.address=localhost"])
    with pytest.raises(RecipeError, match="runner.colour"):
        load_recipe("ct-tv", ["runner.colour=blue"])


def test_task_runner_kinds():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    threads = make_task_runner(RunnerOptions(kind="threads", workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    remote = make_task_runner(RunnerOptions(address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    local = make_task_runner(RunnerOptions(kind="dask", workers=2, threads_per_worker=3))
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["threads_per_worker"] == 1
    assert local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["env"]["OMP_NUM_THREADS"] == "3"
    spec = make_task_runner(RunnerOptions(cluster="local", workers=2))
    assert spec.cluster_kwargs == {"workers": 2, "threads_per_worker": 1}
    assert spec.cluster_class.__name__ == "make_cluster"


def test_local_cluster_fills_the_cores_with_workers_times_threads(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert local_cluster_kwargs(None, 2)["n_workers"] == 4
    assert local_cluster_kwargs(None, 16)["n_workers"] == 1


def test_cluster_specs_load_by_name_path_and_module(tmp_path, monkeypatch):
    assert callable(load_cluster_spec("local"))
    assert callable(load_cluster_spec("slurm"))
    assert callable(load_cluster_spec(str(DEPLOY_DASK_DIR / "local.py")))
    spec = tmp_path / "site_spec.py"
    spec.write_text("def build(workers=None, threads_per_worker=1):\n    return ('cluster', workers)\n")
    assert load_cluster_spec(f"{spec}:build")(workers=3) == ("cluster", 3)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_cluster_spec("site_spec:build")(workers=4) == ("cluster", 4)
    with pytest.raises(RunnerError, match="expected a function make_cluster"):
        load_cluster_spec(str(spec))
    with pytest.raises(RunnerError, match="not a shipped spec .*dask-cuda.*local.*slurm"):
        load_cluster_spec("kubernetes")
    with pytest.raises(RunnerError, match="no such file"):
        load_cluster_spec(str(tmp_path / "missing.py"))
    with pytest.raises(RunnerError, match="cannot import 'no_such_module'"):
        load_cluster_spec("no_such_module:make_cluster")


def test_dask_cuda_spec_says_what_to_install():
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(RunnerError, match="needs the dask-cuda package .*pip install dask-cuda"):
            load_cluster_spec("dask-cuda")
    else:
        assert callable(load_cluster_spec("dask-cuda"))


def test_slurm_spec_asks_for_a_gpu_and_retires_workers_before_walltime():
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("slurm_spec_under_test", DEPLOY_DASK_DIR / "slurm.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cluster = module.slurm_cluster(threads_per_worker=4)  # starts a scheduler here; submits no job
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -t 01:00:00" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "export OMP_NUM_THREADS=4" in script
    worker_line = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker_line
    assert "--resources GPU=1" in worker_line
    assert "--lifetime 55m --lifetime-stagger 4m --lifetime-restart" in worker_line


def test_a_progress_callback_acts_here_and_travels_as_a_no_op():
    import threading

    seen = []
    lock = threading.Lock()  # what a terminal progress bar holds: not picklable

    def hook(done, total):
        with lock:
            seen.append((done, total))

    wrapped = LocalCallback(hook)
    wrapped(1, 4)
    assert seen == [(1, 4)]
    shipped = pickle.loads(pickle.dumps(wrapped))
    assert shipped(2, 4) is None and seen == [(1, 4)]


def test_cli_reports_contradicting_runner_options_in_one_line(tmp_path, capsys):
    from tests.flows.helpers import tiny_study

    measurement, _ = tiny_study(tmp_path, n_slices=1)
    code = main(["run", "ct-fbp", "--input", str(measurement), "--output", str(tmp_path / "o.zarr"),
                 "--threads", "2", "--dask-address", "tcp://127.0.0.1:8786"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "cannot be combined with --dask-address" in err
    assert not (tmp_path / "o.zarr").exists()


def test_on_a_multi_gpu_host_each_local_worker_owns_one_gpu():
    from inversa.flows.task_runners import local_worker_specs

    specs = local_worker_specs(3, 2, ["0", "1"])
    envs = [s["options"]["env"] for s in specs.values()]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", ""]  # the third sees no GPU
    assert [s["options"].get("resources") for s in specs.values()] == [{"GPU": 1}, {"GPU": 1}, None]
    assert all(e["OMP_NUM_THREADS"] == "2" and s["options"]["nthreads"] == 1
               for e, s in zip(envs, specs.values()))


@pytest.mark.slow
def test_the_gpu_cluster_starts_workers_that_see_only_their_own_gpu():
    """The real cluster of `--workers 3` on a host with two GPUs (named by CUDA_VISIBLE_DEVICES
    entries; nothing here touches CUDA, so it runs on a CPU machine)."""
    from distributed import Client

    from inversa.flows.task_runners import local_gpu_cluster

    with local_gpu_cluster(workers=3, threads_per_worker=1, gpus=["2", "5"]) as cluster, Client(cluster) as client:
        client.wait_for_workers(3, timeout=60)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        resources = {w["name"]: w["resources"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert sorted(seen.values()) == ["", "2", "5"]
    assert resources == {"worker-0": {"GPU": 1}, "worker-1": {"GPU": 1}, "worker-2": {}}


def test_make_task_runner_uses_the_gpu_cluster_only_where_there_are_gpus(monkeypatch):
    import inversa.flows.task_runners as runners

    monkeypatch.setattr(runners, "visible_gpus", lambda: ["0", "1"])
    local = make_task_runner(RunnerOptions(kind="dask", workers=2, threads_per_worker=3))
    assert local.cluster_class is runners.local_gpu_cluster
    assert local.cluster_kwargs == {"workers": 2, "threads_per_worker": 3}
    monkeypatch.setattr(runners, "visible_gpus", lambda: [])
    assert "n_workers" in make_task_runner(RunnerOptions(kind="dask", workers=2)).cluster_kwargs
