"""`inversa server start|stop|status`: the local Prefect server with its UI, in the background."""

from __future__ import annotations

import argparse
import sys

from inversa.flows import server

NOT_RUNNING = 3  # like `systemctl status`: scripts can test for a running server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the server in the background and wait until its API answers")
    start.add_argument("--host", default=server.DEFAULT_HOST,
                       help=f"address to bind (default {server.DEFAULT_HOST}: this machine only)")
    start.add_argument("--port", type=int, default=server.DEFAULT_PORT,
                       help=f"port (default {server.DEFAULT_PORT}; 0 picks a free one)")
    start.add_argument("--timeout", type=float, default=server.START_TIMEOUT_S,
                       help="seconds to wait for the API to answer (default %(default)s)")
    start.add_argument("--insecure", action="store_true",
                       help="bind beyond this machine without authentication (refused otherwise: anyone who "
                            "reaches the address could run flows)")
    actions.add_parser("status", help="say whether the server runs (exit 3 when it does not)")
    stop = actions.add_parser("stop", help="stop the server (SIGTERM, then SIGKILL after --timeout)")
    stop.add_argument("--timeout", type=float, default=server.STOP_TIMEOUT_S,
                      help="seconds to wait after SIGTERM before SIGKILL (default %(default)s)")


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join(parts + [f"{secs}s"])


def _print_use(info: server.ServerInfo, show_credential: bool = False) -> None:
    print(f"UI         {info.url}")
    print(f"use it     export PREFECT_API_URL={info.api_url}")
    if info.auth:
        path = server.credential_path()
        shown = server.read_credential() if show_credential else "(printed when the server started)"
        print(f"credential {shown}  (in {path}, readable by you only; the UI asks for it)")
        print(f"           elsewhere: export PREFECT_API_AUTH_STRING=\"$(cat {path})\"")
    print("           (inversa run/batch/serve use it by themselves while PREFECT_API_URL is unset)")


def _start(args: argparse.Namespace) -> int:
    auth = None
    if not server.is_loopback(args.host):
        if args.insecure:
            auth = False
            print(f"inversa server: warning: binding to {args.host} without authentication (--insecure): anyone "
                  "who can reach this address can run flows", file=sys.stderr)
    problem = server.scheduler_problem()
    if problem:
        print(f"inversa server: warning: {problem}", file=sys.stderr)
    info, started = server.start_server(host=args.host, port=args.port, timeout=args.timeout, auth=auth)
    if started:
        print(f"inversa server: started (pid {info.pid}, data in {server.inversa_home()}, log {info.log})")
        _print_use(info, show_credential=True)
        return 0
    print(f"inversa server: already running (pid {info.pid}, up {_uptime(info.uptime_s())}); not starting another")
    _print_use(info)
    return 0


def _status(args: argparse.Namespace) -> int:
    stale = server.remove_stale()
    if stale is not None:
        print(f"inversa server: removed a stale record (pid {stale.pid} is no longer running)")
    info = server.running_server()
    if info is None:
        print(f"inversa server: not running (INVERSA_HOME={server.inversa_home()}); start it with: inversa server start")
        return NOT_RUNNING
    health = "healthy" if server.is_healthy(info.url) else f"not answering; see {info.log}"
    print(f"inversa server: running at {info.url} (pid {info.pid}, up {_uptime(info.uptime_s())}, {health})")
    _print_use(info)
    return 0


def _stop(args: argparse.Namespace) -> int:
    info = server.stop_server(timeout=args.timeout)
    if info is None:
        print(f"inversa server: not running (INVERSA_HOME={server.inversa_home()}); nothing to stop")
        return 0
    print(f"inversa server: stopped (pid {info.pid}, was at {info.url})")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"start": _start, "status": _status, "stop": _stop}[args.action](args)
