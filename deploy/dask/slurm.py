"""Dask workers as SLURM jobs (dask-jobqueue), one GPU each; the scheduler runs with the flow.

Start the flow on a login node (or in a small long-running job):

    inversa run ct-dds --input scan.nc --output scan.zarr --dask-cluster slurm            # adaptive
    inversa run ct-dds --input scan.nc --output scan.zarr --dask-cluster slurm --workers 8  # fixed

Each job runs one Dask worker that declares the resource `GPU=1` (tasks.gpu.gpu_annotations
places GPU tasks only on such workers) and runs one task at a time with `threads_per_worker`
CPU threads. Jobs ask for one hour; the worker retires itself after 55 minutes, staggered by
up to 4 so that workers do not all leave at once, and is replaced by a fresh job
(`--lifetime-restart`): workers leave on their own terms, not when SLURM kills the job at
walltime. A region interrupted by a retiring worker is rerun elsewhere; region writes are
idempotent. Keep one region well under the 5-minute margin (`region_size`).

Site settings come from the environment (or copy this file and edit it):
INVERSA_SLURM_PARTITION (default gpu), INVERSA_SLURM_ACCOUNT, INVERSA_SLURM_MEMORY (default
32GB), INVERSA_SLURM_INTERFACE (the network interface compute nodes reach the scheduler on,
e.g. ib0), INVERSA_SLURM_MAX_JOBS (adaptive maximum, default 16), INVERSA_SLURM_PROLOGUE
(shell lines run before the worker starts, separated by ';', e.g. "module load cuda; source
~/venvs/inversa/bin/activate").
"""

from __future__ import annotations

import os

from dask_jobqueue import SLURMCluster

WALLTIME = "01:00:00"
LIFETIME = ["--lifetime", "55m", "--lifetime-stagger", "4m", "--lifetime-restart"]
GPU_RESOURCE = ["--resources", "GPU=1"]


def slurm_cluster(threads_per_worker: int = 1) -> SLURMCluster:
    """The cluster object (its scheduler starts here); no job is submitted until it scales."""
    prologue = [line.strip() for line in os.environ.get("INVERSA_SLURM_PROLOGUE", "").split(";") if line.strip()]
    threads = str(threads_per_worker)
    return SLURMCluster(
        queue=os.environ.get("INVERSA_SLURM_PARTITION", "gpu"),
        account=os.environ.get("INVERSA_SLURM_ACCOUNT") or None,
        cores=1,  # Dask threads: one task at a time per worker ...
        processes=1,
        job_cpu=threads_per_worker,  # ... with this many CPUs booked for its torch threads
        memory=os.environ.get("INVERSA_SLURM_MEMORY", "32GB"),
        walltime=WALLTIME,
        interface=os.environ.get("INVERSA_SLURM_INTERFACE") or None,
        job_extra_directives=["--gres=gpu:1"],
        worker_extra_args=[*GPU_RESOURCE, *LIFETIME],
        job_script_prologue=[
            *prologue,
            f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}",
        ],
    )


def make_cluster(workers: int | None = None, threads_per_worker: int = 1) -> SLURMCluster:
    """`workers` jobs, or adaptive between 0 and INVERSA_SLURM_MAX_JOBS when not given."""
    cluster = slurm_cluster(threads_per_worker)
    if workers:
        cluster.scale(jobs=workers)
    else:
        cluster.adapt(minimum_jobs=0, maximum_jobs=int(os.environ.get("INVERSA_SLURM_MAX_JOBS", "16")))
    return cluster
