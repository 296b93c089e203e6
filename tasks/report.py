"""What a run shows in the Prefect UI: a progress bar that moves within regions, and a report.

Prefect-facing code only: the kind decides the numbers and the preview (its ``summarize`` and
``preview``); this module turns them into artifacts.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from inversa.data.store import ResultStore
from inversa.tasks.core.calibration_plot import calibration_markdown, calibration_record
from inversa.tasks.core.previews import preview_markdown
from inversa.tasks.kinds import kind_of_provenance


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:100] or "inversa"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def publish_report(store: ResultStore, summary: dict[str, Any], title: str, key: str) -> None:
    """Table, markdown summary with preview (and the calibration plot of a calibrated run), and a
    link to the store, as Prefect artifacts.

    The three API calls go out concurrently (each a round trip to the server); every thread
    runs in a copy of the caller's context so the artifacts attach to this task and flow run.
    """
    table = [{"metric": k, "value": _fmt(v)} for k, v in summary.items()]
    prov = store.provenance
    try:
        shown = preview_markdown(kind_of_provenance(prov).preview(store, 0), "Preview")
    except ValueError as exc:  # the first image's region was not written (a partial run)
        shown = f"No preview: {exc}"
    lines = [
        f"# {title}",
        "",
        f"Store: `{store.path}`",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in summary.items()],
        "",
        f"Method `{prov.get('method')}` with {prov.get('method_params')}, "
        f"credible level {store.credible_level}, code {prov.get('code_version')}.",
        "",
        shown,
    ]
    record = calibration_record(store)
    if record is not None:
        lines += ["", calibration_markdown(record, "Calibration")]
    calls = [
        partial(create_table_artifact, table=table, key=artifact_key(key, "metrics"), description=f"Metrics of {title}"),
        partial(create_markdown_artifact, markdown="\n".join(lines), key=artifact_key(key, "summary"), description=title),
        partial(
            create_link_artifact, link=store.path.resolve().as_uri(), link_text=f"result store {store.path.name}",
            key=artifact_key(key, "store"), description="Open with xarray.open_zarr(path)",
        ),
    ]
    publish(calls)


def publish(calls: list[Callable[[], Any]]) -> None:
    """Send artifacts concurrently, each in a copy of this task's context (so it attaches here)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    for future in futures:
        future.result()


class ProgressArtifact:
    """A progress bar in the UI (and, through ``hook(done, total)``, in a terminal).

    It counts regions: those done before the run, those completed since (each named by a token,
    so completing one twice counts once), and the fraction done of each region in flight, so a
    long diffusion chain moves the bar within its region. Updates go to the API from a
    background thread: callers never wait ~50 ms per round trip, and when updates queue up only
    the newest is sent (the bar shows the latest value, never an older one).
    """

    def __init__(self, key: str | None, total: int, done: int, description: str,
                 hook: Callable[[float, int], None] | None = None):
        self.total, self.base = max(total, 1), done
        self.hook = hook
        self.id = create_progress_artifact(
            progress=100.0 * done / self.total, key=artifact_key(key, "progress") if key else None,
            description=description,
        )
        self._completed: set[Hashable] = set()
        self._partial: dict[Hashable, float] = {}
        self._pending: tuple[float, str | None] | None = None
        self._wake = threading.Condition()
        self._closed = False
        # The sender runs in a copy of this context: Prefect's settings (the API a Dask worker was
        # told to use) and run context live in context variables, which a new thread would not see.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._send_loop,),
                                        name="inversa-progress", daemon=True)
        self._thread.start()

    @property
    def done(self) -> float:
        """Regions done, the fraction of those in flight included."""
        return self.base + len(self._completed) + sum(self._partial.values())

    def complete(self, token: Hashable, description: str | None = None) -> None:
        """Region ``token`` is written and recorded."""
        with self._wake:
            if token in self._completed:
                return
            self._completed.add(token)
            self._partial.pop(token, None)
            self._queue(description or f"{self.base + len(self._completed)}/{self.total} regions")

    def move_to(self, done: float, description: str | None = None) -> None:
        """Set the count outright (a training run's steps, which come in chunks)."""
        with self._wake:
            self.base = done - len(self._completed) - sum(self._partial.values())
            self._queue(description)

    def partial(self, token: Hashable, fraction: float) -> None:
        """Region ``token`` is ``fraction`` (0..1) done."""
        with self._wake:
            if token in self._completed:
                return
            self._partial[token] = min(max(float(fraction), 0.0), 1.0)
            self._queue(None)

    def _queue(self, description: str | None) -> None:  # holding self._wake
        done = self.done
        self._pending = (100.0 * done / self.total, description)
        self._wake.notify()
        if self.hook is not None:
            self.hook(done, self.total)

    def close(self, timeout: float = 30.0) -> None:
        """Send the last update and stop the sender."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                pending, self._pending = self._pending, None
                closed = self._closed
            if pending is not None:
                try:
                    update_progress_artifact(self.id, progress=pending[0], description=pending[1])
                except Exception as exc:  # noqa: BLE001 - a lost progress update must not fail a run
                    logging.getLogger(__name__).warning("progress artifact update failed: %s", exc)
            if closed and pending is None:
                return


# The flow's progress bar, by flow run, for region tasks that run in the flow's own process
# (the thread runner). Tasks in other processes (Dask workers) do not find it and keep a bar of
# their own on their task run instead.
_live: dict[str, ProgressArtifact] = {}
_live_lock = threading.Lock()


@contextmanager
def live_progress(flow_run_id: Any, bar: ProgressArtifact) -> Iterator[ProgressArtifact]:
    """Let region tasks of this flow run in this process report into ``bar`` while it is open."""
    key = str(flow_run_id)
    with _live_lock:
        _live[key] = bar
    try:
        yield bar
    finally:
        with _live_lock:
            if _live.get(key) is bar:
                del _live[key]


def flow_progress(flow_run_id: Any) -> ProgressArtifact | None:
    with _live_lock:
        return _live.get(str(flow_run_id))
