"""Prefect's logs without tracebacks for a user's mistakes, with them for our bugs.

Prefect logs every failed flow and task run with its traceback. For an input that is wrong, an
output that is read-only, a full disk or datasets that failed in a batch, the command line then
prints one clean line saying what to do, and the traceback above it only buries that line; for
an error in inversa itself (a TypeError, a KeyError) the traceback is what a bug report needs.
"""

from __future__ import annotations

import logging

from inversa.data.store import StoreError
from inversa.tasks.core.interrupts import RunInterrupted

# A user's to fix (input, recipe, disk, permissions, a run's own summary of failed regions or
# datasets): the message says all there is to say.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, StoreError, RunInterrupted)
# By name: their modules import Prefect, and the command line imports this module before it may
# (Prefect reads its settings once, at import; `check` and `show` never import it at all).
SUMMARY_ERRORS = frozenset({"RegionsFailed", "RegionFailed", "DatasetsFailed"})


def is_user_error(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and type(exc).__name__ in SUMMARY_ERRORS and id(exc) not in seen:
        seen.add(id(exc))  # a summary wraps the region's own error: judge that one
        if exc.__cause__ is None:
            return True
        exc = exc.__cause__
    return exc is not None and isinstance(exc, USER_ERRORS)


def _without_user_tracebacks(format_record):
    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and is_user_error(record.exc_info[1])):
            return format_record(self, record)
        saved = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None  # for the terminal only: the UI still gets it
        try:
            return format_record(self, record)
        finally:
            record.exc_info, record.exc_text = saved

    format.inversa_quiet = True
    return format


def quiet_user_tracebacks() -> None:
    """Make Prefect's terminal handler print user errors without a traceback (idempotent).

    Patched on the handler class, because Prefect builds its handlers lazily, at its first run.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    if not getattr(PrefectConsoleHandler.format, "inversa_quiet", False):
        PrefectConsoleHandler.format = _without_user_tracebacks(PrefectConsoleHandler.format)
