"""Run `inversa ...` in this process, stopped at a chosen point, so a test can SIGKILL it there.

    python -m tests.flows.crash_launcher POINT MARKER -- run RECIPE --input ... --output ...

The points are reached by wrapping store methods in this child process only, so production code
carries no test hooks. At the point the child creates the file MARKER and then waits: forever
(the test kills it), or, for ``pause-*`` points, until a file ``MARKER.go`` appears, when it
carries on (a run that must finish while the test does something next to it).

The marker holds a JSON object: ``{"region": index}`` where a region was being written.
Once one thread reaches the point, every other thread of the run stops at its next store write,
so what the kill leaves is what the point says (a write already under way still completes).

POINT is one of:

- ``between-sample-blocks``: after a region's first block of samples, before its second;
- ``between-arrays``: inside ``write_region``, after ``mean`` is written and before ``std``;
- ``after-regions-K``: right after the K-th region is recorded in the manifest;
- ``before-summary``: entering ``write_summary`` (every region done, the report not written);
- ``pause-after-regions-K``: like ``after-regions-K``, but waits for ``MARKER.go``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import zarr

from inversa.data.store import ResultStore
from inversa.flows.cli import main

_lock = threading.Lock()
_counts: dict[str, int] = {}
_reached = threading.Event()
_current = threading.local()  # the region this thread is writing


def _count(name: str) -> int:
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        return _counts[name]


class Point:
    def __init__(self, marker: Path, resume: bool):
        self.marker, self.resume = marker, resume

    def reach(self, **info: object) -> None:
        """Signal the test, then wait (for ever, or until MARKER.go for a pause)."""
        _reached.set()
        partial = self.marker.with_name(self.marker.name + ".partial")
        partial.write_text(json.dumps(info))
        partial.replace(self.marker)  # the test reads it as soon as it exists
        go = self.marker.with_name(self.marker.name + ".go")
        while not (self.resume and go.exists()):
            time.sleep(0.05)
        _reached.clear()

    def gate(self) -> None:
        """Other threads stop here once the point is reached (a pause lets them go on after)."""
        while _reached.is_set():
            time.sleep(0.05)


def _install(name: str, point: Point) -> None:
    write_samples, write_region, write_summary = (
        ResultStore.write_samples, ResultStore.write_region, ResultStore.write_summary)
    setitem = zarr.Array.__setitem__

    def samples(self, index, first_sample, block):
        point.gate()
        if name == "between-sample-blocks" and first_sample > 0 and _count("second-block") == 1:
            point.reach(region=index)
        return write_samples(self, index, first_sample, block)

    def region(self, index, **kwargs):
        point.gate()
        _current.index = index
        try:
            record = write_region(self, index, **kwargs)
        finally:
            _current.index = None
        if name.startswith("after-regions-") and _count("regions") == int(name.rsplit("-", 1)[1]):
            point.reach(region=index)
        return record

    def array(self, selection, value):
        setitem(self, selection, value)
        if (name == "between-arrays" and getattr(_current, "index", None) is not None
                and self.basename == "mean" and _count("mean") == 1):
            point.reach(region=_current.index)

    def summary(self, *args, **kwargs):
        point.gate()
        if name == "before-summary":
            point.reach()
        return write_summary(self, *args, **kwargs)

    known = {"between-sample-blocks", "between-arrays", "before-summary"}
    if name not in known and not (name.startswith("after-regions-") and name.rsplit("-", 1)[1].isdigit()):
        raise SystemExit(f"crash_launcher: unknown point {name!r}")
    ResultStore.write_samples, ResultStore.write_region, ResultStore.write_summary = samples, region, summary
    zarr.Array.__setitem__ = array


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[3] != "--":
        raise SystemExit(__doc__)
    point_name = sys.argv[1]
    _install(point_name.removeprefix("pause-"), Point(Path(sys.argv[2]), point_name.startswith("pause-")))
    sys.exit(main(sys.argv[4:]))
