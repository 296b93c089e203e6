"""Grouping pending regions into coarse work units: how many Prefect task runs a run creates.

A region stays the unit of writing, of the manifest and of resume; a work unit is only the unit
of scheduling: one Prefect task run reconstructs its regions in order, recording each as it
finishes. Why group at all: every task run costs a few API round trips and rows in the Prefect
database (tens of milliseconds against a local SQLite server), while FBP reconstructs a small
slice in milliseconds, and a batch of thousands of one-slice regions would otherwise spend most
of its time, and the server most of its capacity, on bookkeeping.

How many units: ``units_per_worker`` (default 4) per worker for each dataset, never more than
the dataset's pending regions, with an optional cap on the total. Four units per worker keeps
the last wave short (when a worker takes its last unit the others have at most one unit's worth
left, about a quarter of a worker's share of the dataset) and gives a progress step at least
every quarter of a worker's share, while the number of task runs grows with workers and
datasets, not with slices. A cap (``max_units``) shrinks every dataset's count in proportion,
keeping at least one unit per dataset, since a unit never spans two stores.

Units hold contiguous runs of a dataset's pending regions (neighbouring slices share reads of
the measurement), and the units of all datasets are interleaved round-robin, so that workers
keep busy across datasets and every dataset makes progress from the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

UNITS_PER_WORKER = 4


@dataclass(frozen=True)
class WorkUnit:
    """Regions of one dataset's store that one task run reconstructs, in this order."""

    dataset: Hashable
    regions: tuple[int, ...]


def work_units(
    pending: Sequence[tuple[Hashable, int]],
    workers: int,
    units_per_worker: int = UNITS_PER_WORKER,
    max_units: int | None = None,
) -> list[WorkUnit]:
    """Group ``(dataset, region_index)`` pairs into units, interleaved across datasets.

    Every pair lands in exactly one unit; within a dataset, regions keep the order given.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"work_units: workers must be an integer >= 1, got {workers!r}")
    if isinstance(units_per_worker, bool) or not isinstance(units_per_worker, int) or units_per_worker < 1:
        raise ValueError(f"work_units: units_per_worker must be an integer >= 1, got {units_per_worker!r}")
    by_dataset: dict[Hashable, list[int]] = {}
    seen: set[tuple[Hashable, int]] = set()
    for dataset, index in pending:
        if (dataset, index) in seen:
            raise ValueError(f"work_units: region {index} of dataset {dataset!r} is listed twice")
        seen.add((dataset, index))
        by_dataset.setdefault(dataset, []).append(int(index))
    if max_units is not None and max_units < len(by_dataset):
        raise ValueError(
            f"work_units: max_units={max_units} is fewer than the {len(by_dataset)} datasets with pending "
            "regions; a unit never spans two stores"
        )

    counts = {ds: min(len(regions), workers * units_per_worker) for ds, regions in by_dataset.items()}
    total = sum(counts.values())
    if max_units is not None and total > max_units:
        counts = _scaled_counts(counts, max_units)

    per_dataset = [
        [WorkUnit(ds, tuple(part)) for part in _split(regions, counts[ds])] for ds, regions in by_dataset.items()
    ]
    interleaved = []
    for wave in range(max((len(units) for units in per_dataset), default=0)):
        interleaved.extend(units[wave] for units in per_dataset if wave < len(units))
    return interleaved


def _scaled_counts(counts: dict[Hashable, int], max_units: int) -> dict[Hashable, int]:
    """Shrink every count in proportion so the total fits ``max_units``, each at least 1."""
    total = sum(counts.values())
    scaled = {ds: max(1, math.floor(n * max_units / total)) for ds, n in counts.items()}
    # Rounding down with a floor of 1 can still overshoot; take the excess from the largest.
    while sum(scaled.values()) > max_units:
        largest = max(scaled, key=lambda ds: scaled[ds])
        scaled[largest] -= 1
    return scaled


def _split(items: list[int], parts: int) -> list[list[int]]:
    """``parts`` contiguous runs whose lengths differ by at most one."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for part in range(parts):
        stop = start + size + (1 if part < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out
