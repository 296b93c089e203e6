"""One real Prefect server and one served, scheduled batch deployment for tests/server.

The server is started by `flows.server` (the code under test), not by `prefect_test_harness`,
and the deployment is served by `inversa serve` in a subprocess, which finds the server by itself
through INVERSA_HOME. Both files of this directory share them: a server start costs ~10 s.
Everything started here is stopped in a finalizer, also when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from inversa.flows import server
from tests.flows.helpers import tiny_study

REPO = Path(__file__).resolve().parents[2]
RECIPE = "ct-fbp"
CRON = "0 2 * * *"
DEPLOYMENT = "it-nightly"
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class ServedDeployment:
    info: server.ServerInfo
    home: Path
    watched: Path
    output: Path
    deployment_id: str
    serve_log: Path


@dataclass(frozen=True)
class FinishedRun:
    deployment: ServedDeployment
    flow_run_id: str


def child_environment(home: Path) -> dict[str, str]:
    """An inversa command as a user runs it: no PREFECT_API_URL, the server found through INVERSA_HOME."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        INVERSA_HOME=str(home),
        PREFECT_HOME=str(home / "client"),
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PREFECT_RUNNER_POLL_FREQUENCY="1",  # the default 10 s poll would only make the test wait
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        OMP_NUM_THREADS="1",
    )
    return env


def write_scan(directory: Path, name: str, seed: int) -> Path:
    """A two-slice tiny study written as `<name>.nc` with its `<name>_truth.nc` next to it."""
    scratch = directory.parent / f".scratch-{name}"
    measurement, truth = tiny_study(scratch, n_slices=2, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.nc"
    shutil.move(str(truth), directory / f"{name}_truth.nc")
    shutil.move(str(measurement), target)  # the measurement last: a watcher never sees it without its truth
    shutil.rmtree(scratch)
    return target


def sync_client(info: server.ServerInfo):
    """A client bound to this server's API whatever Prefect settings the test process carries."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(info.api_url)


def wait_for_final_state(info: server.ServerInfo, flow_run_id, timeout: float = RUN_TIMEOUT_S):
    run = None
    with sync_client(info) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(0.5)
    pytest.fail(f"flow run {flow_run_id} not finished after {timeout} s (state {run and run.state})")


def trigger_and_wait(deployment: ServedDeployment):
    """A run of the deployment now, through the API, as the UI's "Quick run" would make one."""
    with sync_client(deployment.info) as client:
        created = client.create_flow_run_from_deployment(deployment.deployment_id)
    run = wait_for_final_state(deployment.info, created.id)
    assert run.state.is_completed(), (
        f"run {run.id} ended {run.state.type}: {run.state.message}\n--- serve log ---\n{server.log_tail(deployment.serve_log, 40)}"
    )
    return run


@pytest.fixture(scope="session")
def inversa_server(tmp_path_factory):
    """A real Prefect server on a free local port, under a temporary INVERSA_HOME."""
    home = tmp_path_factory.mktemp("inversa-home")
    info, started = server.start_server(port=0, home=home, timeout=180)
    assert started
    try:
        yield info, home
    finally:
        server.stop_server(home)


def _wait_for_registration(process: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(r"^deployment \S+\s+\(([0-9a-f-]{36})\)", text, re.MULTILINE)
        if found and "\nUI " in text:
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"inversa serve exited with {process.returncode}:\n{server.log_tail(log, 40)}")
        time.sleep(0.25)
    pytest.fail(f"inversa serve registered no deployment in {timeout} s:\n{server.log_tail(log, 40)}")


@pytest.fixture(scope="session")
def served_deployment(inversa_server, tmp_path_factory):
    """`inversa serve ct-fbp --cron ... --inputs WATCHED --output OUT` running in the background."""
    info, home = inversa_server
    base = tmp_path_factory.mktemp("served")
    watched, output = base / "watched", base / "stores"
    write_scan(watched, "scan-a", seed=7)
    log = base / "serve.log"
    command = [sys.executable, "-m", "inversa.flows.cli", "serve", RECIPE, "--cron", CRON, "--inputs", str(watched),
               "--output", str(output), "--name", DEPLOYMENT]
    with open(log, "wb") as out:
        # cwd outside the repository: the deployment must load its flow by module, not by file path
        process = subprocess.Popen(command, cwd=base, env=child_environment(home), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deployment_id = _wait_for_registration(process, log)
        yield ServedDeployment(info, home, watched, output, deployment_id, log)
    finally:
        server.terminate_process_group(process.pid, timeout=15)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def finished_run(served_deployment) -> FinishedRun:
    """One completed run of the served deployment over the watched directory (scan-a only)."""
    run = trigger_and_wait(served_deployment)
    return FinishedRun(served_deployment, str(run.id))
