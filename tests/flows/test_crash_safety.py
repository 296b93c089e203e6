"""A run SIGKILLed anywhere, then rerun, leaves the store an uninterrupted run leaves.

Real `inversa run` subprocesses on a tiny simulated study with a stochastic method that writes
its samples block by block. `crash_launcher` stops the child at a chosen point (between two
sample blocks of the first region, before any region is done; after k regions; between two
arrays of a region write; before the summary) and the test kills its whole process group there. The kills are chained on
one store, each rerun resuming what the last one left, and a last plain rerun finishes it. The
children talk to the session's Prefect test server instead of each starting its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from inversa.data.store import ResultStore
from inversa.data.store_lock import StoreLocked, store_holder
from inversa.flows.cli import main
from inversa.tasks.core.recipe import load_recipe
from inversa.flows.reconstruct import reconstruct
from tests.flows.helpers import tiny_study

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REFUSAL = "another run is writing this result store"
SETTINGS = ["region_size=1", "samples=9", "store_samples=true", "seed=5"]  # 4 regions, sample blocks of 8 + 1
TIMING_KEYS = {"seconds", "write_seconds", "completed_at", "writer"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("crash-study"), n_slices=4, seed=11)


@pytest.fixture(scope="module")
def child_env(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the session's test server: no server per child
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def _argv(study, output: Path) -> list[str]:
    measurement, truth = study
    sets = [part for value in SETTINGS for part in ("--set", value)]
    return ["run", "ct-gaussian", "--input", str(measurement), "--reference", str(truth), "--output", str(output),
            *sets]


def _fingerprints(study) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(Path(p).read_bytes()).hexdigest(), Path(p).stat().st_mtime_ns) for p in study}


class Child:
    """`inversa` under crash_launcher, in its own process group so a kill takes its helpers too."""

    def __init__(self, point: str, argv: list[str], env: dict[str, str], workdir: Path):
        self.marker = workdir / f"{point}.reached"
        self.log = workdir / f"{point}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.flows.crash_launcher", point, str(self.marker), "--", *argv],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_for_point(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            if self.process.poll() is not None:
                pytest.fail(f"child ended (status {self.process.returncode}) before its point:\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"child did not reach its point in {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def resume(self) -> None:
        self.marker.with_name(self.marker.name + ".go").touch()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inversa.flows.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(study, child_env, tmp_path_factory):
    """One run that is paused (not killed) after a region while a second `inversa run` and a
    second flow (as if it had got past the command line's check) try the same store, then finishes: the store every crashed run must end up equal to."""
    work = tmp_path_factory.mktemp("uninterrupted")
    output = work / "whole.zarr"
    argv = _argv(study, output)
    first = Child("pause-after-regions-1", argv, child_env, work)
    try:
        first.wait_for_point()
        second_err = io.StringIO()
        with contextlib.redirect_stderr(second_err):
            second_status = main(argv)  # the command line, in this process: it must refuse before Prefect
        second = (second_status, second_err.getvalue())
        try:
            reconstruct(_recipe(study, output))
            flow_error = None
        except StoreLocked as exc:
            flow_error = exc
        first.resume()
        status = first.process.wait(timeout=300)
    finally:
        first.kill()
    return {"store": output, "pid": first.process.pid, "status": status, "first_output": first.output(),
            "second": second, "flow_error": flow_error}


def _recipe(study, output: Path) -> dict:
    measurement, truth = study
    return load_recipe("ct-gaussian", SETTINGS, input=str(measurement), reference=str(truth),
                       output=str(output)).model_dump()


def test_second_run_on_a_busy_store_is_refused_and_the_first_finishes(uninterrupted):
    status, stderr = uninterrupted["second"]
    assert status in (1, 2), stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("inversa run: error: ")
    assert REFUSAL in lines[0] and str(uninterrupted["store"]) in lines[0]
    assert f"pid {uninterrupted['pid']}" in lines[0] and "crash_launcher" in lines[0]
    # A run that got past the command line's early check is refused by the flow itself.
    assert isinstance(uninterrupted["flow_error"], StoreLocked)
    assert f"pid {uninterrupted['pid']}" in str(uninterrupted["flow_error"])
    assert uninterrupted["status"] == 0, uninterrupted["first_output"]
    store = ResultStore.open(uninterrupted["store"])
    assert store.done_regions() == {0, 1, 2, 3} and store.summary["regions_done"] == 4
    assert store_holder(uninterrupted["store"]) is None


def _kill_at(point: str, argv, env, work: Path) -> dict:
    child = Child(point, argv, env, work)
    try:
        child.wait_for_point()
    finally:
        child.kill()
    text = child.marker.read_text()
    return json.loads(text) if text else {}


def test_runs_killed_anywhere_resume_to_the_uninterrupted_store(study, child_env, uninterrupted, tmp_path):
    inputs = _fingerprints(study)
    output = tmp_path / "crashed.zarr"
    argv = _argv(study, output)

    # Killed in the middle of the first region's samples: nothing is done yet, the lock is free.
    _kill_at("between-sample-blocks", argv, child_env, tmp_path)
    assert ResultStore.open(output).done_regions() == set()
    assert store_holder(output) is None

    _kill_at("after-regions-1", argv, child_env, tmp_path)
    assert len(ResultStore.open(output).done_regions()) >= 1

    stopped = _kill_at("between-arrays", argv, child_env, tmp_path)
    region = stopped["region"]
    assert region not in ResultStore.open(output).done_regions()
    group = zarr.open_group(str(output), mode="r")
    assert np.isfinite(group["mean"][region]).all() and np.isnan(group["std"][region]).all()  # killed mid-write

    _kill_at("before-summary", argv, child_env, tmp_path)
    store = ResultStore.open(output)
    assert store.done_regions() == {0, 1, 2, 3} and store.summary == {}
    assert _fingerprints(study) == inputs

    final = _run(argv, child_env)
    assert final.returncode == 0, final.stderr[-4000:]
    assert _fingerprints(study) == inputs

    crashed, whole = ResultStore.open(output), ResultStore.open(uninterrupted["store"])
    for index in range(len(whole.regions)):
        record = crashed.region_record(index)
        assert record["write_count"] == 1, (index, record)
        assert _untimed(record["info"]) == _untimed(whole.region_record(index)["info"])
    assert _untimed(crashed.summary) == _untimed(whole.summary) and crashed.summary["regions_done"] == 4
    _assert_same_values(output, uninterrupted["store"])


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def _assert_same_values(a: Path, b: Path) -> None:
    one, two = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names = sorted(name for name, _ in one.arrays())
    assert names == sorted(name for name, _ in two.arrays())
    assert {"mean", "std", "lower", "upper", "samples", "reference", "metric_psnr"} <= set(names)
    for name in names:
        x, y = one[name][...], two[name][...]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        if x.dtype.kind == "f" and name not in ("x", "y"):
            assert np.isfinite(x).any(), name  # something was written, not just fill values


def test_flow_leaves_inputs_untouched_and_frees_the_lock_after_success_and_failure(study, tmp_path):
    inputs = _fingerprints(study)
    measurement, truth = study
    output = tmp_path / "fbp.zarr"
    recipe = load_recipe("ct-fbp", ["region_size=2"], input=str(measurement), reference=str(truth),
                         output=str(output)).model_dump()
    assert reconstruct(recipe)["regions_done"] == 2
    assert _fingerprints(study) == inputs
    assert store_holder(output) is None

    occupied = tmp_path / "occupied.zarr"
    occupied.write_text("not a store")  # the flow fails when it comes to create the store
    with pytest.raises(Exception, match="not an inversa result store"):
        reconstruct(dict(recipe, output=str(occupied)))
    assert store_holder(occupied) is None and occupied.read_text() == "not a store"
    assert _fingerprints(study) == inputs
