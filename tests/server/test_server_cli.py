"""`inversa server` and `inversa serve` as a user meets them: records, exit codes, messages.

Most of these need no Prefect server: a stale record, a busy port, a server that dies at start,
and `stop` escalating to SIGKILL are staged with plain processes. The commands that talk to a
live server use the session's real one (tests/server/conftest.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inversa.flows import server
from inversa.flows.cli import main

pytestmark = pytest.mark.server


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INVERSA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path / "home"


def _record(home: Path, pid: int, port: int = 1) -> Path:
    path = home / "server" / "server.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": "127.0.0.1", "port": port, "url": f"http://127.0.0.1:{port}",
                                "started_at": "2026-01-01T00:00:00+00:00", "log": str(home / "server.log")}))
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_status_without_a_server_exits_3(home, capsys):
    assert main(["server", "status"]) == 3
    assert "not running" in capsys.readouterr().out


def test_status_removes_a_stale_record_of_a_dead_process(home, capsys):
    record = _record(home, _dead_pid())
    assert main(["server", "status"]) == 3
    out = capsys.readouterr().out
    assert "stale" in out and "not running" in out
    assert not record.exists()


def test_a_recycled_pid_of_another_program_is_not_taken_for_the_server(home, capsys):
    record = _record(home, os.getpid())  # alive, but pytest, not `prefect server start`
    assert server.running_server() is None
    assert not record.exists()
    assert main(["server", "stop"]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_start_on_a_busy_port_says_so_and_leaves_no_record(home, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["server", "start", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use by another program" in err
    assert "--port 0" in err
    assert not (home / "server" / "server.json").exists()


def test_a_server_that_dies_at_start_is_reported_with_its_log(home, capsys, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_API_KEEPALIVE_TIMEOUT", "not-a-number")  # Prefect refuses its settings
    assert main(["server", "start", "--port", "0", "--timeout", "60"]) == 1
    err = capsys.readouterr().err
    assert "exited with status" in err and "server.log" in err
    assert "keepalive" in err.lower() or "KEEPALIVE" in err  # the log's tail names the bad setting
    assert not (home / "server" / "server.json").exists()


def test_stop_kills_the_whole_process_group_when_sigterm_is_ignored(home, capsys):
    # a stand-in with the server's command line that ignores SIGTERM and has a child in its group
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); print(child.pid, flush=True); "
            "time.sleep(120)")
    leader = subprocess.Popen([sys.executable, "-c", code, "prefect", "server", "start"], stdout=subprocess.PIPE,
                              start_new_session=True)
    child = int(leader.stdout.readline())
    record = _record(home, leader.pid)
    started = time.monotonic()
    assert main(["server", "stop", "--timeout", "1"]) == 0
    assert 1.0 <= time.monotonic() - started < 10  # SIGTERM was ignored: SIGKILL after the timeout
    assert f"stopped (pid {leader.pid}" in capsys.readouterr().out
    assert not server.pid_alive(leader.pid)
    assert not server.pid_alive(child)  # killed with its group (at most a zombie waiting for init)
    assert not record.exists()


def test_status_and_start_with_the_server_running(inversa_server, monkeypatch, capsys):
    info, home = inversa_server
    monkeypatch.setenv("INVERSA_HOME", str(home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["server", "status"]) == 0
    out = capsys.readouterr().out
    assert f"running at {info.url} (pid {info.pid}" in out and "healthy" in out
    assert f"export PREFECT_API_URL={info.url}/api" in out

    assert main(["server", "start"]) == 0
    assert "already running" in capsys.readouterr().out
    assert server.running_server(home) == info  # the same process: no second server
    assert server.server_api_url(home) == f"{info.url}/api"


def test_serve_without_a_server_points_at_server_start(home, tmp_path, capsys):
    watched = tmp_path / "scans"
    watched.mkdir()
    argv = ["serve", "ct-fbp", "--cron", "0 2 * * *", "--inputs", str(watched), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "inversa server start" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (["--cron", "61 2 * * *"], "expected a 5-field cron expression"),
    (["--inputs", "/no/such/dir/*.nc"], "the directory /no/such/dir does not exist"),
])
def test_serve_refuses_a_bad_schedule_or_watched_path_before_anything_runs(home, tmp_path, capsys, change, message):
    watched = tmp_path / "scans"
    watched.mkdir()
    options = {"--cron": "0 2 * * *", "--inputs": str(watched), "--output": str(tmp_path / "out")}
    options[change[0]] = change[1]
    argv = ["serve", "ct-fbp", *[x for kv in options.items() for x in kv]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_server_reachable_from_other_machines_asks_for_its_credential(home, tmp_path, capsys):
    """Bound beyond loopback, the API refuses requests without the generated credential (401),
    answers those with it, and `inversa run` finds and uses it by itself."""
    import base64
    import stat
    import urllib.error
    import urllib.request

    from tests.flows.helpers import tiny_study

    assert main(["server", "start", "--host", "0.0.0.0", "--port", "0", "--timeout", "180"]) == 0
    try:
        printed = capsys.readouterr().out
        info = server.running_server()
        assert info is not None and info.auth
        path = server.credential_path()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        credential = path.read_text().strip()
        assert credential.startswith("inversa:") and len(credential) > 30
        assert credential in printed  # shown once, at start, for the UI's login
        url = f"http://127.0.0.1:{info.port}/api/flows/filter"

        def post(auth: str | None) -> int:
            request = urllib.request.Request(url, data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json"})
            if auth is not None:
                request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as err:
                return err.code

        assert post(None) == 401 and post("inversa:wrong") == 401
        assert post(credential) == 200
        assert main(["server", "status"]) == 0 and credential not in capsys.readouterr().out  # not shown again
        # A run started with this INVERSA_HOME talks to the server with the credential.
        measurement, _ = tiny_study(tmp_path / "study", n_slices=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        env["INVERSA_HOME"] = str(home)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        child = subprocess.run([sys.executable, "-m", "inversa.flows.cli", "run", "ct-fbp", "--input",
                                str(measurement), "--output", str(tmp_path / "o.zarr")],
                               env=env, capture_output=True, text=True, timeout=300)
        assert child.returncode == 0, child.stderr[-2000:]
        request = urllib.request.Request(f"http://127.0.0.1:{info.port}/api/flow_runs/filter", data=b"{}",
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Authorization": "Basic " + base64.b64encode(
                                                                     credential.encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())
        assert any(r["name"].startswith("ct-fbp") and r["state_type"] == "COMPLETED" for r in runs)
    finally:
        main(["server", "stop"])


def test_insecure_is_the_only_way_to_an_open_remote_server(home, capsys, monkeypatch):
    started = {}

    def fake_start(host, port, timeout, auth):
        started.update(host=host, auth=auth)
        raise server.ServerError("stop here")

    monkeypatch.setattr(server, "start_server", fake_start)
    main(["server", "start", "--host", "0.0.0.0"])
    assert started == {"host": "0.0.0.0", "auth": None}  # None: start_server turns auth on off loopback
    main(["server", "start", "--host", "0.0.0.0", "--insecure"])
    assert started["auth"] is False and "without authentication (--insecure)" in capsys.readouterr().err
