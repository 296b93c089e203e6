"""Prefect's temporary API server, tied to the command that started it.

With no server configured, Prefect starts one per process (``python -m uvicorn ...``, a child
process) and stops it at exit. Two things go wrong from a terminal: Ctrl-C sends SIGINT to the
whole process group, so the server dies first and the run then spends minutes retrying a closed
port before it can say it was interrupted; and when the command is killed (SIGKILL, or SIGTERM
without cleanup) the server lives on, reparented to init, listening on 127.0.0.1.

``tie_ephemeral_server`` changes only how Prefect launches that child: in its own session (a
terminal's Ctrl-C reaches the command, which stops the server itself on the way out) and through
this module's ``__main__``, which runs the same uvicorn command with a watchdog that ends the
server as soon as the command that started it is gone, however it ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

WATCH_SECONDS = 0.5
GRACE_SECONDS = 5.0
_tied = False


def _guarded(args: list[str], parent: int) -> list[str] | None:
    """The guard's command line for Prefect's ``[python, -m, uvicorn, ...]``, else None."""
    if len(args) >= 3 and list(args[1:3]) == ["-m", "uvicorn"]:
        return [args[0], "-m", __name__, str(parent), *args[3:]]
    return None


def tie_ephemeral_server() -> None:
    """Make the temporary servers this process starts from now on end with it (idempotent)."""
    global _tied
    if _tied:
        return
    from prefect.server.api import server as prefect_server

    launch = prefect_server.SubprocessASGIServer._run_uvicorn_command
    real_popen = subprocess.Popen

    class TiedPopen(real_popen):  # what Prefect's launcher sees as subprocess.Popen
        def __init__(self, args: Any, *rest: Any, **kwargs: Any):
            guarded = _guarded(list(args), os.getpid()) if isinstance(args, (list, tuple)) else None
            if guarded is not None:
                args = guarded
                kwargs["start_new_session"] = True  # out of the terminal's process group
            super().__init__(args, *rest, **kwargs)

    class TiedSubprocess:  # the `subprocess` module as Prefect's server module sees it
        def __getattr__(self, name: str) -> Any:
            return TiedPopen if name == "Popen" else getattr(subprocess, name)

    def run_tied(self):
        namespace = launch.__globals__
        saved = namespace["subprocess"]
        namespace["subprocess"] = TiedSubprocess()
        try:
            return launch(self)
        finally:
            namespace["subprocess"] = saved

    prefect_server.SubprocessASGIServer._run_uvicorn_command = run_tied
    _tied = True


def _watch(parent: int) -> None:
    """End this server once ``parent`` is gone (we are reparented when it dies)."""
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down cleanly on SIGTERM ...
    time.sleep(GRACE_SECONDS)
    os._exit(0)  # ... or is ended regardless


def main(argv: list[str]) -> None:
    parent, uvicorn_args = int(argv[0]), argv[1:]
    threading.Thread(target=_watch, args=(parent,), name="inversa-parent-watch", daemon=True).start()
    from uvicorn.main import main as uvicorn_main

    sys.argv = ["uvicorn", *uvicorn_args]
    uvicorn_main()


if __name__ == "__main__":
    main(sys.argv[1:])
