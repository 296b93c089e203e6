"""Prefect settings for runs started from this process.

Flow-run heartbeats let a Prefect server mark a run as crashed when the worker executing it
dies. With no server (the ephemeral mode of the demo, tests and a plain `inversa run`)
nobody reads them, and Prefect 3.8 joins its heartbeat thread at the end of every flow run,
which sleeps in one-second steps: about 1 s added to every run (measured: a two-task flow takes
1.08 s with heartbeats, 0.09 s without). Crash safety does not depend on them: the store's
manifest records what is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_run_settings() -> Iterator[None]:
    """Turn flow-run heartbeats off unless a Prefect server (PREFECT_API_URL) is configured."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
