"""Grouping pending regions into work units: nothing lost or doubled, few units, datasets interleaved."""

from __future__ import annotations

import pytest

from inversa.tasks.core.work_units import WorkUnit, work_units


def _pending(sizes: dict[str, int], skip: set[tuple[str, int]] = frozenset()) -> list[tuple[str, int]]:
    return [(ds, i) for ds, n in sizes.items() for i in range(n) if (ds, i) not in skip]


def _flatten(units: list[WorkUnit]) -> list[tuple[str, int]]:
    return [(u.dataset, i) for u in units for i in u.regions]


def test_every_pending_region_lands_in_exactly_one_unit_in_order():
    sizes = {f"d{k}": n for k, n in enumerate([1, 7, 40, 333, 2])}
    pending = _pending(sizes, skip={("d2", 5), ("d3", 0), ("d3", 100)})
    units = work_units(pending, workers=3)
    flat = _flatten(units)
    assert sorted(flat) == sorted(pending) and len(flat) == len(set(flat))
    for ds in sizes:  # a dataset's regions keep their order across its units
        assert [i for d, i in flat if d == ds] == [i for d, i in pending if d == ds]
    assert all(u.regions for u in units)


def test_task_runs_grow_with_workers_and_datasets_not_with_regions():
    pending = _pending({f"scan{k:02d}": 125 for k in range(16)})  # 2,000 one-slice regions
    units = work_units(pending, workers=2)
    assert len(units) == 16 * 2 * 4
    sizes = sorted(len(u.regions) for u in units)
    assert sizes[0] >= 15 and sizes[-1] <= 16  # even split: 125 regions in 8 runs
    # A small run keeps one region per unit: nothing to gain from grouping 4 regions on 2 workers.
    small = work_units(_pending({"tiny": 4}), workers=2)
    assert [u.regions for u in small] == [(0,), (1,), (2,), (3,)]


def test_max_units_caps_the_total_and_keeps_a_unit_per_dataset():
    pending = _pending({"big": 1000, "mid": 100, "one": 1})
    units = work_units(pending, workers=8, max_units=10)
    assert len(units) <= 10
    assert {u.dataset for u in units} == {"big", "mid", "one"}
    assert sorted(_flatten(units)) == sorted(pending)
    with pytest.raises(ValueError, match="max_units=2 is fewer than the 3 datasets"):
        work_units(pending, workers=8, max_units=2)


def test_units_of_all_datasets_are_interleaved():
    units = work_units(_pending({"a": 40, "b": 40, "c": 3}), workers=1)
    assert [u.dataset for u in units[:3]] == ["a", "b", "c"]
    assert [u.dataset for u in units[3:6]] == ["a", "b", "c"]
    # Once the small dataset runs out, the others keep alternating.
    assert [u.dataset for u in units[9:]] == ["a", "b"]
    # Units hold contiguous regions.
    assert all(list(u.regions) == list(range(u.regions[0], u.regions[-1] + 1)) for u in units)


def test_bad_arguments_are_refused_with_their_name():
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        work_units([("a", 0)], workers=0)
    with pytest.raises(ValueError, match="region 3 of dataset 'a' is listed twice"):
        work_units([("a", 3), ("a", 3)], workers=2)
    assert work_units([], workers=2) == []
