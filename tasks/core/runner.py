"""Where a run's tasks execute, as options: threads, a local Dask cluster, or one elsewhere.

Only the options and their consistency rules live here (a recipe's ``runner`` block is checked
against them); building the Prefect task runner they describe is flows/task_runners.py's job.
Where a run executes never changes its numbers, so the recipe digest leaves these out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_THREADS = 2  # regions at once in the thread pool (the reconstruct flow's own default)


class RunnerError(ValueError):
    """Runner options that contradict each other or name a cluster spec that cannot be loaded."""


@dataclass(frozen=True)
class RunnerOptions:
    """Where tasks run.

    kind: "threads" or "dask"; when not given, "dask" if address, cluster or
        threads_per_worker is, else "threads".
    workers: threads: tasks at once (default 2); dask: worker processes of the local cluster
        (default: cores / threads_per_worker) or of the cluster spec (passed to it).
    threads_per_worker: dask only, clusters inversa starts: torch threads in each worker
        process (default 1). Workers of an existing cluster (`address`) keep what they were
        started with.
    address: dask only: the scheduler of a running cluster, e.g. tcp://10.0.0.5:8786.
    cluster: dask only: a cluster spec (see the module docstring).
    """

    kind: Literal["threads", "dask"] | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    address: str | None = None
    cluster: str | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            dask = any(getattr(self, n) is not None for n in ("address", "cluster", "threads_per_worker"))
            object.__setattr__(self, "kind", "dask" if dask else "threads")
        if self.kind not in ("threads", "dask"):
            raise RunnerError(f"runner.kind: {self.kind!r}: expected 'threads' or 'dask'")
        for name in ("workers", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise RunnerError(f"runner.{name}: {value!r}: expected a whole number >= 1")
        for name in ("address", "cluster"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise RunnerError(f"runner.{name}: {value!r}: expected a non-empty string")
        if self.kind == "threads":
            given = [n for n in ("address", "cluster", "threads_per_worker") if getattr(self, n) is not None]
            if given:
                raise RunnerError(f"runner.{given[0]} needs runner kind 'dask' (the runner kind is 'threads')")
            return
        if self.address is not None:
            if "://" not in self.address:
                raise RunnerError(f"runner.address: {self.address!r}: expected a scheduler address like tcp://HOST:8786")
            given = [n for n in ("cluster", "workers", "threads_per_worker") if getattr(self, n) is not None]
            if given:
                raise RunnerError(
                    f"runner.address and runner.{given[0]} exclude each other: an existing cluster keeps "
                    "its own workers (start them with the threads you want)"
                )

    @property
    def label(self) -> str:
        """A few words for logs: what executes the tasks."""
        if self.kind == "threads":
            return f"{self.workers or DEFAULT_THREADS} threads"
        if self.address:
            return f"Dask cluster at {self.address}"
        where = f"cluster spec {self.cluster}" if self.cluster else "local Dask cluster"
        count = f"{self.workers} workers" if self.workers else "default workers"
        return f"{where} ({count} x {self.threads_per_worker or 1} threads)"
