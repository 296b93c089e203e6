"""A local Prefect server that outlives the command that started it: `inversa server`.

The server runs as `python -m prefect server start` in its own session (process group), so a
closed terminal does not take it down and `stop` can end it together with anything it spawned.
Everything it keeps (SQLite database, Prefect home, log, the record of the running process)
lives under one data directory, `$INVERSA_HOME` (default `~/.inversa`), so a user can keep
several independent servers apart, and tests can use a temporary one.

`server.json` is the only shared state between `start`, `status`, `stop` and the other inversa
commands (`server_api_url`). A record whose process is gone (a reboot, a kill -9) is stale and is
removed the first time anyone looks at it, so it never blocks a new `start`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import secrets
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
INFO_FILE = "server.json"
LOG_FILE = "server.log"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


class ServerError(RuntimeError):
    """The server could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServerInfo:
    """What `start` records about a running server in `$INVERSA_HOME/server/server.json`."""

    pid: int
    host: str
    port: int
    url: str
    started_at: str
    log: str
    auth: bool = False  # the API asks for the credential in `$INVERSA_HOME/server/credential`

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def uptime_s(self) -> float:
        return max(0.0, (datetime.now(timezone.utc) - datetime.fromisoformat(self.started_at)).total_seconds())


def inversa_home() -> Path:
    """The data directory: `$INVERSA_HOME`, else `~/.inversa`."""
    return Path(os.environ.get("INVERSA_HOME") or "~/.inversa").expanduser().resolve()


def server_dir(home: Path | None = None) -> Path:
    return (home or inversa_home()) / "server"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _url_host(host: str) -> str:
    """The host a client on this machine connects to, bracketed when it is an IPv6 address."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]" if ":" in host else host


def _browser_host(host: str) -> str:
    """The host the UI's JavaScript calls the API on: a wildcard bind is reached by the machine's name."""
    return socket.gethostname() if _is_wildcard(host) else _url_host(host)


# ---------------------------------------------------------------- the record of a running server


CREDENTIAL_FILE = "credential"
CREDENTIAL_USER = "inversa"


def credential_path(home: Path | None = None) -> Path:
    return server_dir(home) / CREDENTIAL_FILE


def read_credential(home: Path | None = None) -> str | None:
    """The server's ``user:password`` (Prefect's basic-auth string), or None when there is none."""
    path = credential_path(home)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if path.stat().st_mode & 0o077:
        raise ServerError(f"{path}: readable by others (mode {path.stat().st_mode & 0o777:o}); "
                          f"run: chmod 600 {path}")
    return text or None


def ensure_credential(home: Path | None = None) -> str:
    """The server's credential, generated on first use into a file only its owner can read."""
    existing = read_credential(home)
    if existing:
        return existing
    path = credential_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = f"{CREDENTIAL_USER}:{secrets.token_urlsafe(24)}"
    tmp = path.with_name(f".{CREDENTIAL_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    tmp.replace(path)
    return value


def read_info(home: Path | None = None) -> ServerInfo | None:
    """The recorded server, alive or not; an unreadable record counts as none (and is removed)."""
    path = server_dir(home) / INFO_FILE
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        print(f"inversa server: removing unreadable {path} ({exc})", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def _write_info(info: ServerInfo, home: Path | None) -> None:
    path = server_dir(home) / INFO_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(info), indent=2) + "\n")
    tmp.replace(path)


def _remove_info(home: Path | None) -> None:
    (server_dir(home) / INFO_FILE).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (tests), so it stops being a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True while `pid` runs and is not a zombie."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_prefect_server(pid: int) -> bool:
    """Guards against a recycled pid: the recorded process must still be `prefect server start`."""
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): the pid check alone has to do
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return b"prefect" in args and b"server" in args and b"start" in args


def remove_stale(home: Path | None = None) -> ServerInfo | None:
    """Remove a record whose process is gone (or is no longer a Prefect server); return what was removed."""
    info = read_info(home)
    if info is None or (pid_alive(info.pid) and _is_prefect_server(info.pid)):
        return None
    _remove_info(home)
    return info


def running_server(home: Path | None = None) -> ServerInfo | None:
    """The server recorded under `home` whose process is alive (a stale record is cleaned up)."""
    remove_stale(home)
    return read_info(home)


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether `GET {url}/api/health` answers true."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read() or b"null") is True
    except (OSError, ValueError):
        return False


def server_api_url(home: Path | None = None) -> str | None:
    """The API URL of the inversa server when one is running and answering, else None."""
    info = running_server(home)
    if info is None or not is_healthy(info.url):
        return None
    return info.api_url


def use_running_server() -> str | None:
    """Point Prefect at the inversa server when the user has not chosen an API themselves.

    Call before Prefect is imported (its settings are read at import). Returns the API URL in use.
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    url = server_api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
        info = running_server()
        if info is not None and info.auth and not os.environ.get("PREFECT_API_AUTH_STRING"):
            credential = read_credential()
            if credential:  # run, batch, serve and the Dask workers they start all inherit it
                os.environ["PREFECT_API_AUTH_STRING"] = credential
    return url


# ---------------------------------------------------------------- start


def scheduler_problem() -> str | None:
    """A known reason the server would accept cron schedules but never create their runs.

    Prefect 3.8's scheduler inserts runs with a statement SQLAlchemy 2.1 refuses ("Can't evaluate
    bulk DML statement"): the API still answers and the UI shows the schedule, so nothing but the
    server log would tell.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("sqlalchemy")
    except PackageNotFoundError:
        return None
    major_minor = tuple(int(p) for p in installed.split(".")[:2] if p.isdigit())
    if major_minor >= (2, 1):
        return (f"SQLAlchemy {installed} is installed: Prefect's scheduler fails with it and cron schedules "
                "create no runs; install 'sqlalchemy[asyncio]>=2.0,<2.1'")
    return None


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS says is free on `host` now (another program could still take it first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(log is empty)"


def _child_environment(home: Path, host: str, port: int, credential: str | None = None) -> dict[str, str]:
    """The server's own settings; an API URL or credential the caller uses for another server
    must not leak in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_API_AUTH_STRING",
                        "PREFECT_SERVER_API_AUTH_STRING")}
    if credential:
        env["PREFECT_SERVER_API_AUTH_STRING"] = credential  # the API refuses requests without it (401)
        env["PREFECT_API_AUTH_STRING"] = credential  # what the server's own client calls send
    directory = server_dir(home)
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{directory / 'prefect.db'}",
        PREFECT_SERVER_API_HOST=host,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_ENABLED="true",
    )
    env.setdefault("PREFECT_UI_API_URL", f"http://{_browser_host(host)}:{port}/api")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


@contextlib.contextmanager
def _start_lock(home: Path | None):
    """Two `start`s at once would both see no server and start two; the second waits here instead."""
    directory = server_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "start.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _busy_port_message(host: str, port: int, home: Path) -> str:
    url = f"http://{_url_host(host)}:{port}"
    who = "another Prefect server (not this INVERSA_HOME's)" if is_healthy(url, timeout=1.0) else "another program"
    hint = f"; to use it instead: export PREFECT_API_URL={url}/api" if who.startswith("another Prefect") else ""
    return (
        f"port {port} on {host} is in use by {who} (INVERSA_HOME={home}){hint}; "
        f"start on another port with --port N, or --port 0 for a free one"
    )


def start_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    timeout: float = START_TIMEOUT_S,
    home: Path | None = None,
    auth: bool | None = None,
) -> tuple[ServerInfo, bool]:
    """Start the server in the background and return once its API answers.

    Returns (info, started): `started` is False when a server of this home was already running
    (nothing new is started). `port=0` picks a free port. ``auth`` (default: whenever the host
    is not loopback) protects the API with basic authentication, its credential generated once
    into ``$INVERSA_HOME/server/credential`` (mode 0600).
    """
    home = (home or inversa_home()).resolve()
    with _start_lock(home):
        existing = running_server(home)
        if existing is not None:
            return existing, False
        if port == 0:
            port = free_port(host if not _is_wildcard(host) else DEFAULT_HOST)
        if not 0 < port < 65536:
            raise ServerError(f"--port {port}: expected 1..65535, or 0 for a free port")
        if not _port_free(host, port):
            raise ServerError(_busy_port_message(host, port, home))

        directory = server_dir(home)
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        auth = (not is_loopback(host)) if auth is None else auth
        credential = ensure_credential(home) if auth else None
        log = directory / LOG_FILE
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
        with open(log, "ab") as out:
            out.write(f"\n--- {datetime.now(timezone.utc).isoformat()} {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=_child_environment(home, host, port, credential), cwd=directory, start_new_session=True,
            )
        info = ServerInfo(
            pid=process.pid, host=host, port=port, url=f"http://{_url_host(host)}:{port}",
            started_at=datetime.now(timezone.utc).isoformat(), log=str(log), auth=bool(credential),
        )
        _write_info(info, home)
        try:
            _wait_healthy(info, process, timeout)
        except BaseException:
            terminate_process_group(process.pid, STOP_TIMEOUT_S)
            _remove_info(home)
            raise
        return info, True


def _wait_healthy(info: ServerInfo, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServerError(
                f"the Prefect server exited with status {code} before answering; "
                f"last lines of {info.log}:\n{log_tail(Path(info.log))}"
            )
        if is_healthy(info.url, timeout=1.0):
            return
        time.sleep(0.25)
    raise ServerError(
        f"the Prefect server did not answer {info.url}/api/health within {timeout:.0f} s; "
        f"last lines of {info.log}:\n{log_tail(Path(info.log))}"
    )


# ---------------------------------------------------------------- stop


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid_alive(pgid) or _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    """Whether any process other than a zombie is left in the group (Linux /proc; else assume yes)."""
    proc = Path("/proc")
    if not proc.exists():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def terminate_process_group(pgid: int, timeout: float) -> bool:
    """SIGTERM the process group, SIGKILL what is left after `timeout`; True if it had to kill."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def stop_server(home: Path | None = None, timeout: float = STOP_TIMEOUT_S) -> ServerInfo | None:
    """Stop the recorded server (its whole process group); None when none was running."""
    home = (home or inversa_home()).resolve()
    info = running_server(home)
    if info is None:
        return None
    terminate_process_group(info.pid, timeout)
    _remove_info(home)
    return info
