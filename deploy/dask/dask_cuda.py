"""One Dask worker per GPU on this machine (dask-cuda's LocalCUDACluster).

    pip install dask-cuda        # on the GPU machine; needs CUDA
    inversa run ct-dds --input scan.nc --output scan.zarr --dask-cluster dask-cuda

Each worker is pinned to its own GPU (CUDA_VISIBLE_DEVICES rotated per worker, so inside the
task `cuda` is that GPU), declares the resource `GPU=1` for tasks.gpu.gpu_annotations, and runs
one task at a time. `workers` limits how many GPUs are used (the first N visible ones).
"""

from __future__ import annotations

import os

import dask

try:
    from dask_cuda import LocalCUDACluster
except ImportError as exc:  # not installable without CUDA; say what to do instead of a bare ImportError
    raise ImportError(
        "deploy/dask/dask_cuda.py needs the dask-cuda package (pip install dask-cuda, on a machine with "
        f"NVIDIA GPUs); without it use --workers N or deploy/dask/local.py ({exc})"
    ) from None

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def make_cluster(workers: int | None = None, threads_per_worker: int = 1) -> LocalCUDACluster:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
    if workers and devices:
        devices = devices[:workers]
    elif workers:
        devices = [str(i) for i in range(workers)]
    # LocalCUDACluster sets each worker's environment itself (CUDA_VISIBLE_DEVICES); the thread
    # counts go in through the environment Dask gives every worker process it spawns.
    threads = {f"distributed.nanny.pre-spawn-environ.{name}": str(threads_per_worker) for name in THREAD_ENV}
    with dask.config.set(threads):
        return LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=",".join(devices) if devices else None,  # None: every GPU
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address=":0",
        )
