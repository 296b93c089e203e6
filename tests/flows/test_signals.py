"""Ctrl-C, SIGTERM and SIGKILL of a real `inversa run`: a prompt, clean exit and nothing left behind.

Each child is started in its own session, as a shell starts a foreground job, with no Prefect
server configured, so it starts its own temporary one, as a user's plain `inversa run` does.
A terminal's Ctrl-C is SIGINT to the whole process group (the child and everything it started
in that group); the temporary server must neither die of it (the run would then spend minutes
on a closed port) nor outlive the run, however the run ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from inversa.flows.cli import main
from tests.flows.helpers import tiny_study

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Calibration off: these runs are about signals; calibration (on by default) would only lengthen
# each child's start before its first region.
SETTINGS = ["--set", "region_size=1", "--set", "samples=48", "--set", "seed=3", "--set", "calibration=off"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("signal-study"), n_slices=6, seed=12)


@pytest.fixture(scope="module")
def child_env(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["INVERSA_HOME"] = str(tmp_path_factory.mktemp("inversa-home"))  # no running server to find
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"
    return env


def _run_args(study, out: Path) -> list[str]:
    return ["run", "ct-gaussian", "--input", str(study[0]), "--output", str(out), *SETTINGS]


def _as_a_terminal_job() -> None:
    # A terminal's foreground job takes Ctrl-C by default; a test suite started in the background
    # (`cmd &` in a script) has SIGINT ignored, and an ignored signal stays ignored through exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(study, out: Path, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inversa.flows.cli", *_run_args(study, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_a_terminal_job)


def _wait_for_a_region(child: subprocess.Popen, out: Path, timeout: float = 180) -> None:
    regions = out / "_inversa" / "regions"
    deadline = time.monotonic() + timeout
    while not (regions.is_dir() and any(regions.iterdir())):
        if child.poll() is not None:
            pytest.fail(f"the run ended before its first region: {child.communicate()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("no region finished in time")
        time.sleep(0.1)


def _listing() -> dict[int, tuple[int, str, str]]:
    """``{pid: (parent pid, state, command line)}`` of every process."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True).stdout
    table = {}
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4:
            table[int(fields[0])] = (int(fields[1]), fields[2], fields[3])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """Every process ``pid`` started, directly or not: its task processes and its temporary server."""
    table, found, frontier = _listing(), {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, args) in table.items():
            if ppid == parent and child not in found:
                found[child] = args
                frontier.append(child)
    return found


def _still_alive(pids, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        table = _listing()
        alive = [f"{p} {table[p][2]}" for p in pids if p in table and not table[p][1].startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_ctrl_c_to_the_process_group_exits_promptly_and_the_rerun_resumes(study, child_env, tmp_path, capsys):
    out = tmp_path / "run.zarr"
    child = _start(study, out, child_env)
    _wait_for_a_region(child, out)
    started = _descendants(child.pid)
    os.killpg(child.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    interrupted = time.monotonic()
    try:
        _, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"still running {time.monotonic() - interrupted:.0f} s after Ctrl-C")
    took = time.monotonic() - interrupted
    assert took < 10, f"{took:.1f} s from Ctrl-C to exit; the run said:\n{err[-3000:]}"
    assert child.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err
    assert "Traceback" not in err and "Connection refused" not in err
    assert _still_alive([child.pid, *started], 10) == []
    # The rerun resumes what was left; the store equals an uninterrupted run's.
    assert main(_run_args(study, out)) == 0
    assert main(_run_args(study, tmp_path / "straight.zarr")) == 0
    capsys.readouterr()
    got, want = xr.open_zarr(out), xr.open_zarr(tmp_path / "straight.zarr")
    for name in ("mean", "std", "lower", "upper"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_process_of_a_killed_run_is_left(study, child_env, tmp_path, how):
    out = tmp_path / "run.zarr"
    child = _start(study, out, child_env)
    _wait_for_a_region(child, out)
    started = _descendants(child.pid)
    assert any("uvicorn" in args or "ephemeral_server" in args for args in started.values()), (
        f"the run's temporary server was not found among {started}, so this test could not see it outlive the run")
    child.send_signal(how)
    try:
        _, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"{how.name} did not end the run")
    left = _still_alive(list(started), 10)
    assert left == [], f"alive 10 s after {how.name}: {left}"
    if how == signal.SIGTERM:
        assert child.returncode in (130, 143) and "rerun the same command to resume" in err
        assert "Traceback" not in err
