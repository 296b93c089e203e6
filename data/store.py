"""The zarr v3 result store: one group per run, written region by region, resumable.

A run's output must survive crashes and parallel writers, so the store is built in three moves:

1. ``ResultStore.create`` writes the whole template (every variable, its chunks, fill value,
   coordinates and attrs, but no data) into a temporary sibling directory and renames it into
   place, so ``path`` either holds a complete template or nothing.
2. ``write_region`` fills one region: a contiguous block of slices that is exactly one chunk
   along ``slice``, so two workers (threads or processes) never touch the same chunk file.
   Array data goes straight through zarr; no metadata is rewritten, so concurrent region
   writes cannot race on ``zarr.json``.
3. Only after the arrays are written is the region recorded in a manifest: one small JSON file
   per region under ``<store>/_inversa/regions/<index>.json``, replaced atomically. A crash
   before that leaves the region pending, and a rerun writes it again (idempotently).
   The record keeps the size and sha256 of each of the region's chunk files, so a chunk deleted
   or changed afterwards shows as damage (``damaged_regions``) and a rerun recomputes it.

``<store>/_inversa/store.json`` marks a directory as an inversa store and records its layout and
digests; ``create`` uses it to decide between resuming, refusing (different recipe or input
digest) and replacing (``overwrite=True``), and never deletes a directory that lacks it. Zarr
never lists ``_inversa`` because the group's metadata is consolidated at creation.

Scientists read the result lazily with ``xr.open_zarr(path)`` (or ``ResultStore.to_xarray``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import tomllib
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import dask.array as da
import numpy as np
import xarray as xr
import zarr

__all__ = [
    "IMAGE_VARIABLES",
    "ResultStore",
    "StoreConflict",
    "StoreError",
    "StoreInputError",
    "StoreLayout",
]

IMAGE_VARIABLES = ("mean", "std", "lower", "upper")
"""Posterior summaries every store holds, float32 over the layout's dims: ``(slice, y, x)`` for CT,
``(time, y, x)`` or ``(y, x)`` for fields, with a trailing ``component`` for vector fields."""

LEADING_DIMS = ("slice", "time", "y")
"""The region axis: CT slices, field time steps, or the rows of a static field (grid tiles)."""

AXIS_WORDS = {"slice": ("slice", "slices"), "time": ("step", "steps"), "y": ("row", "rows")}
"""What a region's indices count, singular and plural, per leading dim (log lines, task names)."""


def axis_words(leading_dim: str) -> tuple[str, str]:
    """CT slices; a field's time steps or grid rows."""
    return AXIS_WORDS.get(leading_dim, (leading_dim, leading_dim))


STORE_FORMAT = "inversa-result-store"
STORE_FORMAT_VERSION = 1
META_DIR = "_inversa"
MARKER_FILE = "store.json"
REGIONS_DIR = "regions"
REQUIRED_DIGESTS = ("recipe_digest", "input_digest")
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_]+$")
# `warnings.catch_warnings` swaps process-wide state; concurrent creators in one process take
# turns so that one's exit does not re-enable the warning in the middle of another's write.
_TEMPLATE_WARNINGS_LOCK = threading.Lock()


class StoreError(RuntimeError):
    """A result store cannot be created, opened or written as asked."""


class StoreConflict(StoreError):
    """``path`` holds a store from a different recipe, input or layout than this run's."""


class StoreInputError(StoreError, ValueError):
    """An argument given to the store (an array, provenance, a layout value) is invalid."""


# --------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class StoreLayout:
    """Everything that fixes the shape of a store; two runs may share a store only if equal."""

    n_slices: int
    image_shape: tuple[int, int]
    pixel_size_mm: float
    region_size: int
    credible_level: float
    n_samples: int
    with_reference: bool
    metric_names: tuple[str, ...]
    slice_labels: tuple[Any, ...] | None
    leading_dim: str = "slice"
    x_coord: tuple[float, ...] | None = None
    y_coord: tuple[float, ...] | None = None
    coord_units: str = "mm"
    components: tuple[str, ...] | None = None
    labels_are_datetimes: bool = False
    extra_images: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        n_slices: int,
        image_shape: Sequence[int],
        pixel_size_mm: float,
        region_size: int,
        credible_level: float,
        n_samples: int,
        with_reference: bool,
        metric_names: Sequence[str],
        slice_coord: Sequence[Any] | np.ndarray | None,
        leading_dim: str = "slice",
        x_coord: Sequence[float] | np.ndarray | None = None,
        y_coord: Sequence[float] | np.ndarray | None = None,
        coord_units: str = "mm",
        components: Sequence[str] | None = None,
        extra_images: Sequence[str] = (),
    ) -> "StoreLayout":
        """Validate the caller's values; ``region_size`` is capped at ``n_slices``.

        CT stores use the defaults: regions along ``slice``, pixel centres from ``pixel_size_mm``.
        Field stores give ``leading_dim`` ``"time"`` (regions are time steps) or ``"y"`` (a static
        field whose regions are bands of rows, ``n_slices`` then equals the number of rows),
        explicit cell-centre coordinates ``x_coord``/``y_coord`` in ``coord_units``, and for a
        vector field the names of its ``components`` (a trailing dim). ``extra_images`` names
        further float32 variables laid out like ``mean`` (an MRI store's complex mean as
        ``mean_real`` and ``mean_imag``), written by ``write_region(extra=...)``.
        """
        n_slices = _positive_int(n_slices, "n_slices")
        shape = tuple(image_shape)
        if len(shape) != 2:
            raise StoreInputError(f"image_shape: expected (H, W), got {image_shape!r}")
        shape = (_positive_int(shape[0], "image_shape[0]"), _positive_int(shape[1], "image_shape[1]"))
        pixel = float(pixel_size_mm)
        if not (math.isfinite(pixel) and pixel > 0):
            raise StoreInputError(f"pixel_size_mm: expected a finite number > 0, got {pixel_size_mm!r}")
        region = min(_positive_int(region_size, "region_size"), n_slices)
        level = float(credible_level)
        if not 0.0 < level < 1.0:
            raise StoreInputError(f"credible_level: expected a number in (0, 1), got {credible_level!r}")
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 0:
            raise StoreInputError(f"n_samples: expected an integer >= 0, got {n_samples!r}")
        names = tuple(metric_names)
        for name in names:
            if not isinstance(name, str) or not _METRIC_NAME.match(name):
                raise StoreInputError(
                    f"metric_names: expected names of letters, digits and '_', got {name!r}"
                )
        if len(set(names)) != len(names):
            raise StoreInputError(f"metric_names: expected unique names, got {list(names)}")
        extras = tuple(extra_images)
        taken = {*IMAGE_VARIABLES, "samples", "reference", *(f"metric_{m}" for m in names)}
        for name in extras:
            if not isinstance(name, str) or not _METRIC_NAME.match(name) or name in taken:
                raise StoreInputError(
                    f"extra_images: expected new names of letters, digits and '_', got {name!r}")
        if len(set(extras)) != len(extras):
            raise StoreInputError(f"extra_images: expected unique names, got {list(extras)}")
        if leading_dim not in LEADING_DIMS:
            raise StoreInputError(f"leading_dim: expected one of {LEADING_DIMS}, got {leading_dim!r}")
        if leading_dim == "y":
            if n_slices != shape[0]:
                raise StoreInputError(
                    f"n_slices: a store with regions along y has one per row ({shape[0]}), got {n_slices}")
            if slice_coord is not None:
                raise StoreInputError("slice_coord: a store with regions along y takes its labels from y_coord")
        labels, datetimes = None, False
        if slice_coord is not None:
            array = np.asarray(slice_coord)
            if array.shape != (n_slices,):
                raise StoreInputError(
                    f"slice_coord: expected {n_slices} labels (one per slice), got shape {array.shape}"
                )
            if array.dtype.kind not in "iufUM":
                raise StoreInputError(
                    f"slice_coord: expected integer, float, string or datetime labels, got dtype {array.dtype}"
                )
            if len(np.unique(array)) != n_slices:
                raise StoreInputError("slice_coord: expected unique labels, got repeated ones")
            datetimes = array.dtype.kind == "M"
            labels = tuple(str(v) for v in array.astype("datetime64[ns]")) if datetimes else tuple(array.tolist())
        x_values = _axis_coord(x_coord, shape[1], "x_coord")
        y_values = _axis_coord(y_coord, shape[0], "y_coord")
        if not isinstance(coord_units, str) or not coord_units:
            raise StoreInputError(f"coord_units: expected a unit name such as 'mm', 'm' or 'degrees', got {coord_units!r}")
        comps = None
        if components is not None:
            comps = tuple(components)
            if not comps or len(set(comps)) != len(comps) or not all(isinstance(c, str) and c for c in comps):
                raise StoreInputError(f"components: expected unique non-empty names, got {components!r}")
        return cls(
            n_slices=n_slices,
            image_shape=shape,
            pixel_size_mm=pixel,
            region_size=region,
            credible_level=level,
            n_samples=int(n_samples),
            with_reference=bool(with_reference),
            metric_names=names,
            slice_labels=labels,
            leading_dim=leading_dim,
            x_coord=x_values,
            y_coord=y_values,
            coord_units=coord_units,
            components=comps,
            labels_are_datetimes=datetimes,
            extra_images=extras,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "StoreLayout":
        labels = obj["slice_labels"]
        optional = lambda key: None if obj.get(key) is None else tuple(obj[key])  # noqa: E731
        return cls(
            n_slices=int(obj["n_slices"]),
            image_shape=tuple(int(v) for v in obj["image_shape"]),
            pixel_size_mm=float(obj["pixel_size_mm"]),
            region_size=int(obj["region_size"]),
            credible_level=float(obj["credible_level"]),
            n_samples=int(obj["n_samples"]),
            with_reference=bool(obj["with_reference"]),
            metric_names=tuple(obj["metric_names"]),
            slice_labels=None if labels is None else tuple(labels),
            leading_dim=obj.get("leading_dim", "slice"),
            x_coord=optional("x_coord"),
            y_coord=optional("y_coord"),
            coord_units=obj.get("coord_units", "mm"),
            components=optional("components"),
            labels_are_datetimes=bool(obj.get("labels_are_datetimes", False)),
            extra_images=tuple(obj.get("extra_images", ())),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("image_shape", "metric_names", "slice_labels", "x_coord", "y_coord", "components", "extra_images"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @property
    def dims(self) -> tuple[str, ...]:
        """Dims of ``mean``, ``std``, ``lower``, ``upper`` (and ``reference``): region axis first."""
        spatial = ("y", "x") if self.leading_dim == "y" else (self.leading_dim, "y", "x")
        return spatial + (("component",) if self.components else ())

    @property
    def cell_shape(self) -> tuple[int, ...]:
        """Shape of one index along the region axis: an image, or a row of a static field."""
        height, width = self.image_shape
        spatial = (width,) if self.leading_dim == "y" else (height, width)
        return spatial + ((len(self.components),) if self.components else ())

    @property
    def regions(self) -> list[tuple[int, int]]:
        step = self.region_size
        return [(start, min(start + step, self.n_slices)) for start in range(0, self.n_slices, step)]

    def differences(self, other: "StoreLayout") -> list[str]:
        """Names of the fields that differ, for conflict messages."""
        mine, theirs = self.to_json(), other.to_json()
        return [key for key in mine if mine[key] != theirs[key]]


# --------------------------------------------------------------------------------------------
# The store


class ResultStore:
    """A handle on one run's result store; cheap to pickle and to send to worker processes."""

    def __init__(self, path: Path, layout: StoreLayout, attrs: Mapping[str, Any]):
        # Use ``create`` or ``open``; this only binds already-validated state.
        self.path = Path(path)
        self.layout = layout
        self._attrs = dict(attrs)
        # Called (no arguments) before a region's arrays are written; raising writes nothing.
        # The pipeline sets it to check that the input is still the one the provenance records.
        self.write_guard: Callable[[], None] | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        n_slices: int,
        image_shape: Sequence[int],
        pixel_size_mm: float,
        region_size: int,
        provenance: Mapping[str, Any],
        credible_level: float = 0.9,
        n_samples: int = 0,
        with_reference: bool = False,
        metric_names: Sequence[str] = (),
        slice_coord: Sequence[Any] | np.ndarray | None = None,
        overwrite: bool = False,
        **field_layout: Any,
    ) -> "ResultStore":
        """Create the store, or reopen it for resume when it was made for the same run.

        "The same run" means the same ``provenance["recipe_digest"]``, the same
        ``provenance["input_digest"]`` and the same layout; then nothing is written and the
        regions already done stay done. A different digest or layout raises ``StoreConflict``
        unless ``overwrite`` is true, in which case the new template is built first and then
        swapped in. A path that holds anything but an inversa store is always refused.
        ``field_layout``: the field-store keywords of ``StoreLayout.build`` (``leading_dim``,
        ``x_coord``, ``y_coord``, ``coord_units``, ``components``).
        """
        path = Path(path)
        layout = StoreLayout.build(
            n_slices=n_slices,
            image_shape=image_shape,
            pixel_size_mm=pixel_size_mm,
            region_size=region_size,
            credible_level=credible_level,
            n_samples=n_samples,
            with_reference=with_reference,
            metric_names=metric_names,
            slice_coord=slice_coord,
            **field_layout,
        )
        provenance = _jsonable(dict(provenance), "provenance")
        for key in REQUIRED_DIGESTS:
            if not isinstance(provenance.get(key), str) or not provenance[key]:
                raise StoreInputError(
                    f"provenance[{key!r}]: expected a non-empty string (the store uses it to "
                    f"decide whether {path} may be resumed), got {provenance.get(key)!r}"
                )

        _restore_interrupted_swap(path)
        # Two attempts: a concurrent creator may win the rename between our check and ours.
        for _ in range(2):
            if os.path.lexists(path):
                existing = cls.open(path)
                problems = existing._mismatches(layout, provenance)
                if not problems:
                    return existing
                if not overwrite:
                    raise StoreConflict(
                        f"{path} already holds an inversa result store for a different run: "
                        + "; ".join(problems)
                        + f". Its {len(existing.done_regions())} finished region(s) are kept; "
                        "pass overwrite=True (--overwrite) to replace the store, or choose another path."
                    )
                staged = _stage_template(path, layout, provenance)
                _swap_into_place(staged, path)
                return cls.open(path)
            staged = _stage_template(path, layout, provenance)
            try:
                os.rename(staged, path)
            except OSError:
                shutil.rmtree(staged, ignore_errors=True)
                if not os.path.lexists(path):
                    raise
                continue  # somebody else created it meanwhile: judge theirs
            return cls.open(path)
        raise StoreError(f"{path}: could not create the store; another process keeps replacing it")

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ResultStore":
        """Open an existing store, after checking that it is one."""
        path = Path(path)
        marker = _read_marker(path)
        try:
            layout = StoreLayout.from_json(marker["layout"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"{path / META_DIR / MARKER_FILE}: 'layout' is missing or malformed ({exc!r}); "
                "expected the layout written by ResultStore.create"
            ) from exc
        try:
            group = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=True)
            attrs = group.attrs.asdict()
        except Exception as exc:  # zarr raises several kinds for a damaged group
            raise StoreError(
                f"{path}: the zarr v3 group metadata (zarr.json) cannot be read ({exc!r}); "
                "expected a store written by ResultStore.create"
            ) from exc
        return cls(path, layout, attrs)

    # -- read-only state --------------------------------------------------------------------

    @property
    def provenance(self) -> dict[str, Any]:
        return self._attrs["provenance"]

    @property
    def credible_level(self) -> float:
        return self.layout.credible_level

    @property
    def regions(self) -> list[tuple[int, int]]:
        """``(start, stop)`` along ``slice`` for each region; each is exactly one chunk."""
        return self.layout.regions

    @property
    def has_reference(self) -> bool:
        return self.layout.with_reference

    @property
    def n_samples(self) -> int:
        return self.layout.n_samples

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.layout.metric_names

    @property
    def summary(self) -> dict[str, Any]:
        """Run-level metrics given to ``write_summary`` (empty until then)."""
        return dict(self._attrs.get("summary_metrics", {}))

    @property
    def attrs(self) -> dict[str, Any]:
        """The group's attrs as last read or written by this handle."""
        return dict(self._attrs)

    def __repr__(self) -> str:
        done = len(self.done_regions())
        return (
            f"ResultStore({str(self.path)!r}, slices={self.layout.n_slices}, "
            f"image_shape={self.layout.image_shape}, regions={done}/{len(self.regions)} done)"
        )

    # -- manifest ---------------------------------------------------------------------------

    def done_regions(self) -> set[int]:
        """Regions whose manifest entry exists and is readable (not checked against the data:
        see ``damaged_regions``)."""
        return {i for i in range(len(self.regions)) if self._read_record(i) is not None}

    def pending_regions(self, contents: bool = True) -> list[int]:
        """Regions still to (re)compute: not recorded, or recorded but damaged since.

        ``contents=False`` checks only that every chunk file is there with its recorded size
        (a stat per file) instead of reading and hashing it.
        """
        intact = self.intact_regions(contents=contents)
        return [i for i in range(len(self.regions)) if i not in intact]

    def intact_regions(self, indices: Sequence[int] | None = None, contents: bool = True) -> set[int]:
        """Recorded regions (of ``indices``, default all) whose chunk files match their record."""
        chosen = range(len(self.regions)) if indices is None else indices
        return {i for i in chosen if (r := self._read_record(i)) is not None and not self._damage(i, r, contents)}

    def damaged_regions(self, contents: bool = True) -> dict[int, str]:
        """Recorded regions whose data no longer match the chunk checksums recorded with them,
        each with what is wrong: a chunk file deleted, truncated or changed after it was written."""
        found = {}
        for i in range(len(self.regions)):
            record = self._read_record(i)
            if record is not None and (problem := self._damage(i, record, contents)):
                found[i] = problem
        return found

    def _region_chunks(self, index: int) -> list[str]:
        """Every chunk file of region ``index`` (relative to the store): one per data variable
        along ``slice`` (one per sample for ``samples``), because a region is exactly one chunk."""
        group = zarr.open_group(str(self.path), mode="r", zarr_format=3, use_consolidated=True)
        lead = self.layout.leading_dim
        files = []
        for name, array in sorted(group.arrays(), key=lambda item: item[0]):
            dims = tuple(array.metadata.dimension_names or ())
            if name in dims or lead not in dims:
                continue  # a coordinate, or not per region
            axes = [[index] if dim == lead else range(n) for dim, n in zip(dims, array.cdata_shape)]
            files += [f"{name}/{array.metadata.encode_chunk_key(coords)}" for coords in itertools.product(*axes)]
        return files

    def _chunk_checksums(self, index: int) -> dict[str, list | None]:
        """``{chunk file: [size, sha256]}``, None for a chunk zarr left unwritten (all fill value)."""
        sums: dict[str, list | None] = {}
        for name in self._region_chunks(index):
            try:
                payload = (self.path / name).read_bytes()
            except FileNotFoundError:
                sums[name] = None
                continue
            sums[name] = [len(payload), hashlib.sha256(payload).hexdigest()]
        return sums

    def _damage(self, index: int, record: Mapping[str, Any], contents: bool) -> str | None:
        """What is wrong with a recorded region's chunk files, or None (also for records made
        before checksums were kept, which cannot be checked)."""
        expected = record.get("chunks")
        if not isinstance(expected, dict):
            return None
        problems = []
        for name, want in expected.items():
            path = self.path / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                if want is not None:
                    problems.append(f"{name} is missing")
                continue
            if want is None:
                continue  # written since as fill value by nobody else: a region owns its chunks
            if size != want[0]:
                problems.append(f"{name} has {size} bytes, {want[0]} were written")
            elif contents and hashlib.sha256(path.read_bytes()).hexdigest() != want[1]:
                problems.append(f"{name} differs from its checksum")
        if not problems:
            return None
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return "; ".join(problems[:3]) + more

    def region_record(self, index: int) -> dict[str, Any]:
        """The manifest entry of a finished region: start, stop, completed_at (UTC, ISO 8601),
        write_seconds, write_count, writer (host, pid) and the caller's ``info``."""
        self._region_bounds(index)
        record = self._read_record(index)
        if record is None:
            raise StoreError(f"{self.path}: region {index} is not recorded as done")
        return record

    def _manifest_path(self, index: int) -> Path:
        return self.path / META_DIR / REGIONS_DIR / f"{index}.json"

    def _read_record(self, index: int) -> dict[str, Any] | None:
        start, stop = self.regions[index]
        try:
            record = json.loads(self._manifest_path(index).read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(record, dict)
            or record.get("index") != index
            or record.get("start") != start
            or record.get("stop") != stop
        ):
            return None
        return record

    # -- writing ----------------------------------------------------------------------------

    def write_region(
        self,
        index: int,
        *,
        mean: np.ndarray,
        std: np.ndarray | None = None,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        samples: np.ndarray | None = None,
        reference: np.ndarray | None = None,
        metrics: Mapping[str, np.ndarray] | None = None,
        info: Mapping[str, Any] | None = None,
        samples_written: bool = False,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """Write one region's arrays, then record it as done; returns the manifest record.

        ``samples_written=True``: the region's samples went in already, chunk by chunk, through
        :meth:`write_samples` (so they were never all in memory); ``samples`` is then not given.

        Image arrays have shape ``(stop - start, H, W)``, ``samples`` ``(n_samples, stop -
        start, H, W)``, each metric ``(stop - start,)``. Everything is checked before anything
        is written. ``std``, ``lower`` and ``upper`` may be None for a point estimate: they are
        left at the fill value (NaN), which costs no write and no disk. ``info`` (JSON-serialisable: compute seconds, NFE, device...) goes into
        the manifest record. Rewriting a region with the same arrays gives the same store.
        """
        start, stop = self._region_bounds(index)
        n = stop - start
        cell = self.layout.cell_shape
        where = f"{self.path} region {index} ({self.layout.leading_dim} {start}:{stop})"

        arrays: dict[str, np.ndarray] = {}
        uncertainty = (std, lower, upper)
        if any(v is None for v in uncertainty) and not all(v is None for v in uncertainty):
            raise StoreInputError(f"{where}: give all of std, lower and upper, or none (a point estimate)")
        for name, value in zip(IMAGE_VARIABLES, (mean, *uncertainty)):
            if value is not None:
                arrays[name] = _checked_array(value, name, (n, *cell), np.float32, where)
        if self.layout.n_samples and samples_written:
            if samples is not None:
                raise StoreInputError(f"{where}: got 'samples' and samples_written=True; give one or the other")
        elif self.layout.n_samples:
            if samples is None:
                raise StoreInputError(
                    f"{where}: 'samples' is required, the store was created with "
                    f"n_samples={self.layout.n_samples}"
                )
            arrays["samples"] = _checked_array(
                samples, "samples", (self.layout.n_samples, n, *cell), np.float32, where
            )
        elif samples is not None:
            raise StoreInputError(f"{where}: got 'samples' but the store was created with n_samples=0")
        if self.layout.with_reference:
            if reference is None:
                raise StoreInputError(
                    f"{where}: 'reference' is required, the store was created with with_reference=True"
                )
            arrays["reference"] = _checked_array(reference, "reference", (n, *cell), np.float32, where)
        elif reference is not None:
            raise StoreInputError(f"{where}: got 'reference' but the store was created with with_reference=False")
        for name, value in (metrics or {}).items():
            if name not in self.layout.metric_names:
                raise StoreInputError(
                    f"{where}: metric {name!r} was not declared; expected one of "
                    f"{list(self.layout.metric_names)} (metric_names given to create)"
                )
            arrays[f"metric_{name}"] = _checked_array(value, f"metric_{name}", (n,), np.float64, where)
        extra = dict(extra or {})
        if set(extra) != set(self.layout.extra_images):
            raise StoreInputError(f"{where}: extra images {sorted(extra)}; the store was created with "
                                  f"extra_images={list(self.layout.extra_images)}")
        for name, value in extra.items():
            arrays[name] = _checked_array(value, name, (n, *cell), np.float32, where)
        info = _jsonable(dict(info or {}), "info")
        if self.write_guard is not None:
            self.write_guard()  # e.g. the input still is what the provenance says; raising writes nothing

        began = time.perf_counter()
        group = zarr.open_group(str(self.path), mode="r+", zarr_format=3, use_consolidated=True)
        for name, value in arrays.items():
            if name == "samples":
                group[name][:, start:stop] = value
            else:
                group[name][start:stop] = value
        seconds = time.perf_counter() - began

        previous = self._read_record(index)
        record = {
            "index": index,
            "start": start,
            "stop": stop,
            "completed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "write_seconds": seconds,
            "write_count": (previous["write_count"] if previous else 0) + 1,
            "writer": {"host": socket.gethostname(), "pid": os.getpid()},
            "info": info,
            "chunks": self._chunk_checksums(index),  # what `damaged_regions` checks the data against
        }
        _write_json_atomic(self._manifest_path(index), record)
        return record

    def write_samples(self, index: int, first_sample: int, block: np.ndarray) -> None:
        """Write samples ``first_sample .. first_sample + len(block)`` of region ``index``.

        ``block``: ``(k, stop - start, H, W)``. Samples are chunked one per chunk along ``sample``,
        so a block never shares a chunk with another writer. The region stays pending until
        :meth:`write_region` records it, so a crash between blocks leaves it to be redone.
        """
        start, stop = self._region_bounds(index)
        cell = self.layout.cell_shape
        where = f"{self.path} region {index} ({self.layout.leading_dim} {start}:{stop})"
        if not self.layout.n_samples:
            raise StoreInputError(f"{where}: got samples but the store was created with n_samples=0")
        array = np.asarray(block)
        if array.ndim != 2 + len(cell):
            raise StoreInputError(f"{where}: variable 'samples' block has shape {array.shape}, "
                                  f"expected (k, {stop - start}, {', '.join(map(str, cell))})")
        k = array.shape[0]
        first = int(first_sample)
        if first < 0 or first + k > self.layout.n_samples:
            raise StoreInputError(
                f"{where}: samples {first}..{first + k - 1} out of range; the store holds {self.layout.n_samples}"
            )
        array = _checked_array(array, "samples", (k, stop - start, *cell), np.float32, where)
        group = zarr.open_group(str(self.path), mode="r+", zarr_format=3, use_consolidated=True)
        group["samples"][first:first + k, start:stop] = array

    def update_attrs(self, update: Mapping[str, Any]) -> None:
        """Add run-level attrs (e.g. how intervals were made, a calibration's result).

        Like :meth:`write_summary` it rewrites the root ``zarr.json``: call it from one process,
        while no region is being written.
        """
        clean = _jsonable(dict(update), "attrs")
        reserved = {"provenance", "credible_level", "pixel_size_mm", "region_size"} & set(clean)
        if reserved:
            raise StoreInputError(f"{self.path}: attrs {sorted(reserved)} are fixed at creation and cannot be updated")
        with _quiet_zarr_metadata():
            group = zarr.open_group(str(self.path), mode="r+", zarr_format=3, use_consolidated=True)
            group.attrs.update(clean)
        self._attrs.update(clean)

    def meta_path(self, name: str) -> Path:
        """A file in the store's private ``_inversa`` directory (never listed by zarr readers)."""
        if not name or "/" in name or name.startswith("."):
            raise StoreInputError(f"{self.path}: meta file name must be a plain file name, got {name!r}")
        return self.path / META_DIR / name

    def write_meta_json(self, name: str, obj: Mapping[str, Any]) -> Path:
        """Write ``_inversa/<name>`` atomically (a crash leaves the old file or none)."""
        path = self.meta_path(name)
        _write_json_atomic(path, _jsonable(dict(obj), name))
        return path

    def write_meta_bytes(self, name: str, payload: bytes) -> Path:
        """Write ``_inversa/<name>`` atomically (arrays a run keeps beside its JSON records)."""
        path = self.meta_path(name)
        _write_bytes_atomic(path, bytes(payload))
        return path

    def read_meta_json(self, name: str) -> dict[str, Any] | None:
        """``_inversa/<name>`` as a dict, or None when absent or unreadable."""
        try:
            value = json.loads(self.meta_path(name).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_summary(self, metrics: Mapping[str, Any], report: Mapping[str, Any] | None = None) -> None:
        """Record run-level metrics (and an optional report) in the group attrs.

        Call once, from one process, after the regions are done: it rewrites the root
        ``zarr.json``. Non-finite floats become ``null`` because zarr metadata must be strict
        JSON for other zarr implementations to read it.
        """
        update = {"summary_metrics": _jsonable(dict(metrics), "metrics")}
        if report is not None:
            update["report"] = _jsonable(dict(report), "report")
        with _quiet_zarr_metadata():
            group = zarr.open_group(str(self.path), mode="r+", zarr_format=3, use_consolidated=True)
            group.attrs.update(update)
        self._attrs.update(update)

    # -- reading ----------------------------------------------------------------------------

    def to_xarray(self) -> xr.Dataset:
        """The whole store as a lazy (dask-backed) dataset; unwritten values read as NaN."""
        return xr.open_zarr(self.path, consolidated=True)

    # -- helpers ----------------------------------------------------------------------------

    def _region_bounds(self, index: int) -> tuple[int, int]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise StoreInputError(f"{self.path}: region index must be an integer, got {index!r}")
        if not 0 <= index < len(self.regions):
            raise StoreInputError(
                f"{self.path}: region index {index} out of range; expected 0..{len(self.regions) - 1}"
            )
        return self.regions[int(index)]

    def _mismatches(self, layout: StoreLayout, provenance: Mapping[str, Any]) -> list[str]:
        problems = []
        for key in REQUIRED_DIGESTS:
            theirs = self.provenance.get(key)
            if theirs != provenance[key]:
                problems.append(f"{key} differs (store: {theirs!r}, this run: {provenance[key]!r})")
        changed = self.layout.differences(layout)
        if changed:
            mine, new = self.layout.to_json(), layout.to_json()
            problems.append(
                "layout differs in "
                + ", ".join(f"{k} (store: {mine[k]!r}, this run: {new[k]!r})" for k in changed)
            )
        return problems


# --------------------------------------------------------------------------------------------
# Template


def _template_dataset(layout: StoreLayout, provenance: Mapping[str, Any]) -> xr.Dataset:
    """All variables as lazy NaN arrays chunked one region per chunk, with coords and attrs."""
    n, (height, width), r = layout.n_slices, layout.image_shape, layout.region_size
    image_dims, cell = layout.dims, layout.cell_shape
    lead = layout.leading_dim

    def empty(shape, chunks, dtype):
        return da.full(shape, np.nan, dtype=dtype, chunks=chunks)

    variables: dict[str, tuple] = {}
    descriptions = {
        "mean": "posterior mean",
        "std": "posterior standard deviation",
        "lower": f"lower end of the central {layout.credible_level:g} credible interval",
        "upper": f"upper end of the central {layout.credible_level:g} credible interval",
    }
    for name in IMAGE_VARIABLES:
        variables[name] = (
            image_dims,
            empty((n, *cell), (r, *cell), np.float32),
            {"long_name": descriptions[name]},
        )
    if layout.n_samples:
        variables["samples"] = (
            ("sample",) + image_dims,
            empty((layout.n_samples, n, *cell), (1, r, *cell), np.float32),
            {"long_name": "posterior samples"},
        )
    if layout.with_reference:
        variables["reference"] = (
            image_dims,
            empty((n, *cell), (r, *cell), np.float32),
            {"long_name": "reference (ground truth) image"},
        )
    for name in layout.metric_names:
        variables[f"metric_{name}"] = ((lead,), empty((n,), (r,), np.float64), {"long_name": name})
    for name in layout.extra_images:
        variables[name] = (image_dims, empty((n, *cell), (r, *cell), np.float32), {"long_name": name.replace("_", " ")})

    units = {"units": layout.coord_units}
    x_values = pixel_centres(width, layout.pixel_size_mm) if layout.x_coord is None else np.asarray(layout.x_coord)
    y_values = pixel_centres(height, layout.pixel_size_mm) if layout.y_coord is None else np.asarray(layout.y_coord)
    coords = {
        "y": ("y", y_values, {**units, "long_name": "cell centre y"}),
        "x": ("x", x_values, {**units, "long_name": "cell centre x"}),
    }
    if lead != "y":
        labels = np.arange(n) if layout.slice_labels is None else np.asarray(layout.slice_labels)
        if layout.labels_are_datetimes:
            labels = labels.astype("datetime64[ns]")
        coords[lead] = (lead, labels)
    if layout.components:
        coords["component"] = ("component", np.asarray(layout.components))
    attrs = {
        "credible_level": layout.credible_level,
        "inversa_version": inversa_version(),
        "region_size": layout.region_size,
        "provenance": dict(provenance),
    }
    if layout.x_coord is None:
        attrs["pixel_size_mm"] = layout.pixel_size_mm
    else:
        attrs["coord_units"] = layout.coord_units
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _template_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    encoding = {}
    for name, var in ds.data_vars.items():
        encoding[name] = {
            "chunks": tuple(c[0] for c in var.chunks),
            "_FillValue": var.dtype.type(np.nan),
        }
    return encoding


@contextlib.contextmanager
def _quiet_zarr_metadata():
    """Silence zarr's notes on what the store relies on, for one metadata write.

    Consolidated metadata is not (yet) in the v3 spec: we rely on it so that readers never list
    the `_inversa` directory. Text labels (vector components, slice names) are fixed-length
    UTF-32, also marked as not yet specified; zarr-python and xarray read both back.
    ``warnings.catch_warnings`` swaps process-wide state, so writers take turns.
    """
    with _TEMPLATE_WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message=r"The data type \(FixedLengthUTF32")
        yield


def _write_template(target: Path, layout: StoreLayout, provenance: Mapping[str, Any]) -> None:
    """Template first, marker last: a directory without the marker is never taken for a store."""
    ds = _template_dataset(layout, provenance)
    with _quiet_zarr_metadata():
        ds.to_zarr(
            target,
            mode="w-",
            compute=False,
            zarr_format=3,
            consolidated=True,
            encoding=_template_encoding(ds),
        )
    (target / META_DIR / REGIONS_DIR).mkdir(parents=True)
    _write_marker(target, layout, provenance)


def _write_marker(target: Path, layout: StoreLayout, provenance: Mapping[str, Any]) -> None:
    marker = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "inversa_version": inversa_version(),
        "layout": layout.to_json(),
        **{key: provenance[key] for key in REQUIRED_DIGESTS},
    }
    _write_json_atomic(target / META_DIR / MARKER_FILE, marker)


def _stage_template(path: Path, layout: StoreLayout, provenance: Mapping[str, Any]) -> Path:
    """Write the template into a fresh sibling of ``path``; on failure leave nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = _sibling(path, "tmp")
    try:
        _write_template(staged, layout, provenance)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _swap_into_place(staged: Path, path: Path) -> None:
    """Replace the store at ``path`` with ``staged``; restore the old one if the swap fails.

    Two renames, not one: POSIX cannot rename a directory onto a non-empty one. Between them
    ``path`` is briefly absent and the old store sits, whole, at ``.<name>.inversa-old-*``; a
    process killed right there leaves it so, and the next ``create`` moves it back
    (``_restore_interrupted_swap``). Once the new store is in place the old one's marker goes
    first, so a deletion cut short never leaves a half-deleted directory that looks like a store.
    """
    retired = _sibling(path, "old")
    try:
        os.rename(path, retired)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    try:
        os.rename(staged, path)
    except BaseException:
        if os.path.lexists(retired):  # else another creator has already moved it back
            os.rename(retired, path)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    (retired / META_DIR / MARKER_FILE).unlink(missing_ok=True)
    shutil.rmtree(retired, ignore_errors=True)


def _restore_interrupted_swap(path: Path) -> None:
    """Put back a store that a killed ``--overwrite`` left at ``.<name>.inversa-old-*``.

    Rolling back, not forward: the user's old results come back exactly as they were, and the
    caller then decides as for any existing store (resume it, refuse, or, asked to overwrite,
    swap again). A run holding the store lock (``data.store_lock``) is the only creator, so the
    retired directory found here is not another process's swap in progress.
    """
    if os.path.lexists(path) or not path.parent.is_dir():
        return
    prefix = f".{path.name}.inversa-old-"
    retired = sorted(
        path.parent / name
        for name in os.listdir(path.parent)
        if name.startswith(prefix) and (path.parent / name / META_DIR / MARKER_FILE).is_file()
    )
    if not retired:
        return
    if len(retired) > 1:
        raise StoreError(
            f"{path}: missing, and {len(retired)} stores that interrupted overwrites moved aside sit next to "
            f"it ({', '.join(p.name for p in retired)}); rename the one to keep to {path.name} and delete the others"
        )
    try:
        os.rename(retired[0], path)
    except OSError:
        if not os.path.lexists(path):
            raise
        return  # a concurrent creator put a store there first; create judges that one
    warnings.warn(f"{path}: restored the store that an interrupted overwrite had moved to {retired[0].name}",
                  stacklevel=3)


def _sibling(path: Path, role: str) -> Path:
    return path.with_name(f".{path.name}.inversa-{role}-{uuid.uuid4().hex[:12]}")


def _read_marker(path: Path) -> dict[str, Any]:
    marker_path = path / META_DIR / MARKER_FILE
    if not os.path.lexists(path):
        raise StoreError(f"{path}: no result store there (the path does not exist)")
    if not path.is_dir() or not (path / "zarr.json").is_file() or not marker_path.is_file():
        kind = "a file" if path.is_file() else "a directory" if path.is_dir() else "something"
        raise StoreError(
            f"{path} exists and is {kind} that is not an inversa result store (no zarr.json and "
            f"{META_DIR}/{MARKER_FILE}); inversa never writes into or deletes data it did not "
            "create, even with overwrite. Choose another path or remove it yourself."
        )
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{marker_path}: unreadable store marker ({exc!r}); expected JSON") from exc
    if not isinstance(marker, dict) or marker.get("format") != STORE_FORMAT:
        raise StoreError(f"{marker_path}: 'format' is not {STORE_FORMAT!r}; not an inversa result store")
    if marker.get("format_version") != STORE_FORMAT_VERSION:
        raise StoreError(
            f"{marker_path}: store format_version {marker.get('format_version')!r}; this inversa "
            f"reads version {STORE_FORMAT_VERSION}"
        )
    return marker


# --------------------------------------------------------------------------------------------
# Small utilities


def pixel_centres(n: int, pixel_size_mm: float) -> np.ndarray:
    """Pixel-centre coordinates in mm, centred on the rotation axis (docs/conventions.md)."""
    return (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * pixel_size_mm


def inversa_version() -> str:
    """The installed distribution's version, else the source tree's pyproject.toml."""
    try:
        return importlib.metadata.version("inversa")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


def _axis_coord(values: Any, size: int, name: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,) or not np.all(np.isfinite(array)):
        raise StoreInputError(f"{name}: expected {size} finite cell-centre coordinates, got shape {array.shape}")
    steps = np.diff(array)
    if size > 1 and not (np.all(steps > 0) or np.all(steps < 0)):
        raise StoreInputError(f"{name}: expected strictly monotonic coordinates")
    return tuple(array.tolist())


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise StoreInputError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _checked_array(value: Any, name: str, shape: tuple[int, ...], dtype: type, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise StoreInputError(f"{where}: variable {name!r} has shape {array.shape}, expected {shape}")
    if array.dtype.kind not in "biuf":
        raise StoreInputError(f"{where}: variable {name!r} has dtype {array.dtype}, expected real numbers")
    return np.ascontiguousarray(array, dtype=dtype)


def _jsonable(value: Any, where: str) -> Any:
    """A strict-JSON copy of ``value`` (numpy scalars/arrays unwrapped, non-finite floats to None)."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StoreInputError(f"{where}: key {key!r} is not a string; expected a JSON object")
            out[key] = _jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise StoreInputError(f"{where}: a {type(value).__name__} cannot be stored; expected JSON-serialisable values")


def _write_json_atomic(path: Path, obj: Any) -> None:
    _write_bytes_atomic(path, json.dumps(obj, indent=1, allow_nan=False).encode("utf-8"))


def _write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write to a unique temp file in the same directory, fsync, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
