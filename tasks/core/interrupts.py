"""Stopping a run's worker threads when the run is interrupted.

Ctrl-C and SIGTERM reach only the main thread, which waits on the regions' futures; the
threads computing regions would otherwise finish their whole work units (minutes) before the
command can exit. The flow calls ``request_stop`` when its wait is interrupted; every region
checks ``raise_if_stopping`` before it starts and at each sampler step, so a thread gives up
within one step and the region in flight stays pending (its record is never written), ready
for the rerun that resumes.
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


class RunInterrupted(RuntimeError):
    """The run was interrupted; the region in flight was not written."""


def request_stop() -> None:
    _STOP.set()


def clear_stop() -> None:
    """A new run in this process starts with no stop requested."""
    _STOP.clear()


def stopping() -> bool:
    return _STOP.is_set()


def raise_if_stopping() -> None:
    if _STOP.is_set():
        raise RunInterrupted("the run was interrupted; this region was not written (rerun to resume)")
