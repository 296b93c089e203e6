"""A Dask cluster on this machine: one worker process per task, N torch threads each.

    inversa run ct-tv --input study.nc --output tv.zarr --dask-cluster local --workers 2

The same as `--workers N`, written out as a spec to copy and edit (memory limits, a dashboard
port, a scratch directory). `make_cluster(workers, threads_per_worker)` is the contract every
spec in this directory follows: inversa calls it when the flow starts and closes the cluster
when the flow ends.
"""

from __future__ import annotations

import os

from distributed import LocalCluster

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def make_cluster(workers: int | None = None, threads_per_worker: int = 1) -> LocalCluster:
    """`workers` processes (default: cores / threads_per_worker), each running one task at a time."""
    n = workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
    return LocalCluster(
        n_workers=n,
        threads_per_worker=1,  # one region at a time per process; torch threads do the rest
        processes=True,
        dashboard_address=":0",  # a free port; the flow's log prints the link
        memory_limit="auto",  # the machine's memory split evenly between the workers
        env={name: str(threads_per_worker) for name in THREAD_ENV},
    )
