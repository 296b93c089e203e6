"""What a finished run leaves behind: run-level metrics in the store and artifacts in the UI."""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from inversa.data.png import data_uri, downsample, side_by_side
from inversa.data.store import ResultStore

PREVIEW_PIXELS = 160


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:100] or "inversa"


def summarize(store: ResultStore) -> dict[str, Any]:
    """Run-level metrics: per-slice metrics averaged, seconds and NFE summed over regions."""
    from inversa.tasks.field_report import is_field_store, summarize_field

    if is_field_store(store):
        return summarize_field(store)
    ds = store.to_xarray()
    summary: dict[str, Any] = {"slices": int(ds.sizes["slice"])}
    for name in ds.data_vars:
        if str(name).startswith("metric_"):
            values = np.asarray(ds[name].values, dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary[str(name)[len("metric_"):]] = float(finite.mean()) if finite.size else math.nan
    records = [store.region_record(i) for i in sorted(store.done_regions())]
    summary["seconds"] = float(sum(r.get("info", {}).get("seconds", 0.0) for r in records))
    summary["nfe"] = int(sum(r.get("info", {}).get("nfe", 0) for r in records))
    residuals = [r["info"]["solver_max_relative_residual"] for r in records
                 if "solver_max_relative_residual" in r.get("info", {})]
    if residuals:
        summary["solver_max_relative_residual"] = float(max(residuals))
    summary["regions"] = len(store.regions)
    summary["regions_done"] = len(records)
    return summary


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def preview_markdown(store: ResultStore, title: str, slice_index: int = 0) -> str:
    from inversa.tasks.field_report import field_preview_markdown, is_field_store

    if is_field_store(store):
        return field_preview_markdown(store, title)
    ds = store.to_xarray().isel(slice=slice_index)
    panels, names = [downsample(np.asarray(ds["mean"].values), PREVIEW_PIXELS)], ["mean"]
    std = np.asarray(ds["std"].values)
    if np.isfinite(std).any():
        panels.append(downsample(std, PREVIEW_PIXELS))
        names.append("std")
    if "reference" in ds:
        ref = np.asarray(ds["reference"].values)
        panels.append(downsample(np.abs(np.asarray(ds["mean"].values) - ref), PREVIEW_PIXELS))
        names.append("|mean - reference|")
    image = side_by_side(panels)
    label = str(ds["slice"].values) if "slice" in ds.coords else str(slice_index)
    return (
        f"### {title}\n\nSlice {label}, left to right: {', '.join(names)}.\n\n"
        f"![preview]({data_uri(image)})\n"
    )


def publish_report(store: ResultStore, summary: dict[str, Any], title: str, key: str) -> None:
    """Table, markdown summary with preview, and a link to the store, as Prefect artifacts.

    The three API calls go out concurrently (each a round trip to the server); every thread
    runs in a copy of the caller's context so the artifacts attach to this task and flow run.
    """
    table = [{"metric": k, "value": _fmt(v)} for k, v in summary.items()]
    prov = store.provenance
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
        preview_markdown(store, "Preview"),
    ]
    calls = [
        partial(create_table_artifact, table=table, key=artifact_key(key, "metrics"), description=f"Metrics of {title}"),
        partial(create_markdown_artifact, markdown="\n".join(lines), key=artifact_key(key, "summary"), description=title),
        partial(
            create_link_artifact, link=store.path.resolve().as_uri(), link_text=f"result store {store.path.name}",
            key=artifact_key(key, "store"), description="Open with xarray.open_zarr(path)",
        ),
    ]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    for future in futures:
        future.result()


class ProgressArtifact:
    """A progress bar in the UI, updated as regions finish (resumed regions count as done).

    Updates go to the API from a background thread: the flow's main thread keeps collecting
    finished regions instead of waiting ~50 ms per round trip, and when updates queue up
    only the newest is sent (the bar shows the latest count, never an older one).
    """

    def __init__(self, key: str, total: int, done: int, description: str):
        self.total, self.done = max(total, 1), done
        self.id = create_progress_artifact(
            progress=100.0 * done / self.total, key=artifact_key(key, "progress"), description=description
        )
        self._pending: tuple[float, str | None] | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name="inversa-progress", daemon=True)
        self._thread.start()

    def advance(self, description: str | None = None) -> None:
        self.done += 1
        with self._wake:
            self._pending = (100.0 * self.done / self.total, description)
            self._wake.notify()

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
