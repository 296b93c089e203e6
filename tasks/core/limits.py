"""Whether a plan fits the machine: refused at planning, before a store or a byte is written.

A kind estimates what one worker holds at a time (``Plan.estimated_memory_bytes``) and what the
store will take (``Plan.estimated_storage_bytes``). Input attributes or recipe settings can ask
for far more than a machine has (a 100000 x 100000 grid); running such a plan only ends in a
MemoryError after a store has been declared, so `check` fails it and `run` refuses it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from inversa.tasks.core.kind import Plan

MEMORY_FRACTION = 0.9  # of the machine's physical memory one worker may be planned to use


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def free_disk_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system that would hold ``path`` (its nearest existing parent)."""
    p = Path(path).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def human_bytes(n: float) -> str:
    """``1.5 MB``: sizes in the lines ``inversa check`` prints and in refusals."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def check_fits_machine(plan: Plan, output: str | None, memory: int | None = None,
                       disk: int | None = None) -> None:
    """Raise ValueError when ``plan`` needs more memory per worker than this machine has, or
    more storage than is free where its store goes (a store already there counts as space)."""
    memory = machine_memory_bytes() if memory is None else memory
    where = f"{plan.input}" if plan.input else f"dataset {plan.dataset}"
    if memory and plan.estimated_memory_bytes > MEMORY_FRACTION * memory:
        raise ValueError(
            f"{where}: this plan needs about {human_bytes(plan.estimated_memory_bytes)} per worker, more than "
            f"this machine's {human_bytes(memory)} of memory; reduce the grid, samples or region_size")
    if output:
        free = free_disk_bytes(output) if disk is None else disk
        existing = Path(output)
        if existing.is_dir():
            free = (free or 0) + sum(f.stat().st_size for f in existing.rglob("*") if f.is_file())
        if free is not None and plan.estimated_storage_bytes > free:
            raise ValueError(
                f"{output}: the store will take about {human_bytes(plan.estimated_storage_bytes)}, and only "
                f"{human_bytes(free)} is free there; free some space or choose another --output")
