"""Scaling: slices per second of a compute-bound recipe (TV) on a 2-worker local Dask cluster
versus a 1-worker one, one torch thread per worker, in the same process.

Prints one JSON document. Both clusters are started and warmed up (torch and the operator
imported in every worker) before the clock starts, so the times are the reconstruct flow
itself: planning, the region tasks on the workers, the store writes, metrics and artifacts.
The two stores are compared value for value. Goal on a 2-core machine: speedup >= 1.8. The
same model code is also timed with no pipeline in 1 and then 2 bare processes: that speedup is the
ceiling the machine allows, and the Dask figure is reported against it too.

    python benchmarks/dask_scaling.py [--slices 16] [--size 128] [--views 90] [--iters 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


import numpy as np  # noqa: E402

from inversa.data.synthetic import write_study  # noqa: E402


def _warm_up() -> int:
    import torch  # noqa: F401

    import inversa.tasks.kinds.ct.region  # noqa: F401

    return os.getpid()


def timed_run(recipe: dict, workers: int) -> tuple[float, dict]:
    from distributed import Client, LocalCluster

    from inversa.flows.reconstruct import reconstruct
    from inversa.flows.task_runners import RunnerOptions, local_cluster_kwargs, make_task_runner

    with LocalCluster(**local_cluster_kwargs(workers, 1)) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(_warm_up)
        runner = make_task_runner(RunnerOptions(address=cluster.scheduler_address))
        started = time.perf_counter()
        result = reconstruct.with_options(task_runner=runner)(recipe)
        return time.perf_counter() - started, result


def bare_tv(args: tuple[str, dict, list[int]]) -> float:
    """The same model code with no pipeline: read, build the operator, TV on the given slices."""
    import torch

    from inversa.tasks.core.recipe import load_recipe
    from inversa.tasks.kinds.ct.measurement import geometry_for, grid_for, load_measurement, noise_levels, operator_for
    from inversa.tasks.kinds.ct.methods import build_sampler

    path, recipe, slices = args
    recipe = load_recipe(recipe)
    torch.set_num_threads(1)
    measurement = load_measurement(recipe)
    operator = operator_for(geometry_for(measurement, grid_for(recipe, measurement)), torch.device("cpu"))
    sampler = build_sampler("tv", recipe.method.params)
    started = time.perf_counter()
    for i in slices:
        y = torch.as_tensor(np.asarray(measurement.sinogram.isel(slice=slice(i, i + 1)).values, dtype=np.float32))
        sampler.sample(y, operator, noise_levels(measurement, y), 1, None)
    return time.perf_counter() - started


def bare_processes_speedup(recipe: dict, n_slices: int) -> dict:
    """The ceiling this machine allows: the model code alone in 1 process, then in 2 at once.

    Two processes share memory bandwidth and caches (the projector's sparse matrix is larger
    than L2), so even with no pipeline at all two do not run twice as fast as one.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    env = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    os.environ.update(env)
    half = n_slices // 2
    with context.Pool(2) as pool:
        pool.map(bare_tv, [(recipe["input"], recipe, [0])] * 2)  # imports and operators, before the clock
        started = time.perf_counter()
        pool.map(bare_tv, [(recipe["input"], recipe, list(range(2 * half)))], chunksize=1)
        one = time.perf_counter() - started
        started = time.perf_counter()
        pool.map(bare_tv, [(recipe["input"], recipe, list(range(half))),
                           (recipe["input"], recipe, list(range(half, 2 * half)))], chunksize=1)
        two = time.perf_counter() - started
    return {"seconds_1_process": round(one, 2), "seconds_2_processes": round(two, 2), "speedup": round(one / two, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per worker count; the best counts")
    parser.add_argument("--size", type=int, default=128, help="image size (pixels per side)")
    parser.add_argument("--views", type=int, default=90)
    parser.add_argument("--iters", type=int, default=300, help="TV iterations per slice")
    args = parser.parse_args()

    import xarray as xr

    from inversa.tasks.core.recipe import load_recipe
    from inversa.flows.runtime import local_run_settings

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="inversa-dask-scaling-") as tmp:
        measurement, _ = write_study(
            Path(tmp), name="scaling", kind="htc-discs", n_slices=args.slices, image_size=args.size,
            pixel_size_mm=2.4 * 32 / args.size, geometry={"geometry": "parallel", "n_det": int(args.size * 1.5),
                                                         "detector_spacing_mm": 1.6 * 32 / args.size},
            angles=np.linspace(0, np.pi, args.views, endpoint=False),
            noise={"model": "gaussian", "relative_sigma": 0.01}, seed=3,
        )
        runs = {}
        with local_run_settings():
            from inversa.flows.reconstruct import reconstruct

            warm = load_recipe("ct-tv", ["region_size=1", "method.params.max_iter=1"], input=str(measurement),
                               output=str(Path(tmp) / "warm.zarr")).model_dump()
            reconstruct(warm)  # starts Prefect's ephemeral server before any clock does
            times: dict[int, list[float]] = {1: [], 2: []}
            for repeat in range(args.repeats):  # interleaved, so load on the machine hits both alike
                for workers in (1, 2):
                    recipe = load_recipe(
                        "ct-tv", ["region_size=1", f"method.params.max_iter={args.iters}"],
                        input=str(measurement), output=str(Path(tmp) / f"w{workers}-{repeat}.zarr"),
                    ).model_dump()
                    seconds, result = timed_run(recipe, workers)
                    times[workers].append(round(seconds, 2))
                    runs[workers] = {"seconds": min(times[workers]), "all_seconds": times[workers],
                                     "slices_per_s": round(args.slices / min(times[workers]), 3),
                                     "store": result["store"]}
        bare = bare_processes_speedup(warm | {"method": recipe["method"]}, args.slices)
        one, two = xr.open_zarr(runs[1].pop("store")), xr.open_zarr(runs[2].pop("store"))
        equal = all(np.array_equal(one[v].values, two[v].values, equal_nan=True) for v in ("mean", "std", "lower", "upper"))
    speedup = runs[2]["slices_per_s"] / runs[1]["slices_per_s"]
    print(json.dumps({
        "benchmark": "dask_scaling",
        "recipe": "ct-tv", "slices": args.slices, "size": args.size, "views": args.views, "tv_iterations": args.iters,
        "threads_per_worker": 1,
        "workers_1": runs[1], "workers_2": runs[2],
        "speedup": round(speedup, 3), "goal": 1.8, "meets_goal": speedup >= 1.8,
        "bare_processes_same_model_code": bare,
        "dask_speedup_vs_bare_ceiling": round(speedup / bare["speedup"], 3),
        "stores_equal": bool(equal),
        "cpu_count": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
    }, indent=2))


if __name__ == "__main__":
    main()
