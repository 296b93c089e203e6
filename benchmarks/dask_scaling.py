"""Scaling: slices per second of a compute-bound recipe (TV) on a 2-worker local Dask cluster
versus a 1-worker one, one torch thread per worker, in the same process.

Prints one JSON document. Both clusters are started and warmed up (torch and the operator
imported in every worker) before the clock starts, so the times are the reconstruct flow
itself: planning, the region tasks on the workers, the store writes, metrics and artifacts.
The two stores are compared value for value. Goal on a 2-core machine: speedup >= 1.8.

    python benchmarks/dask_scaling.py [--slices 16] [--size 64] [--views 90] [--iters 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from data.synthetic import write_study  # noqa: E402


def _warm_up() -> int:
    import torch  # noqa: F401

    import tasks.region  # noqa: F401

    return os.getpid()


def timed_run(recipe: dict, workers: int) -> tuple[float, dict]:
    from distributed import Client, LocalCluster

    from flows.reconstruct import reconstruct
    from flows.task_runners import RunnerOptions, local_cluster_kwargs, make_task_runner

    with LocalCluster(**local_cluster_kwargs(workers, 1)) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(_warm_up)
        runner = make_task_runner(RunnerOptions(address=cluster.scheduler_address))
        started = time.perf_counter()
        result = reconstruct.with_options(task_runner=runner)(recipe)
        return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="image size (pixels per side)")
    parser.add_argument("--views", type=int, default=90)
    parser.add_argument("--iters", type=int, default=300, help="TV iterations per slice")
    args = parser.parse_args()

    import xarray as xr

    from flows.recipe import load_recipe
    from flows.runtime import local_run_settings

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
            for workers in (1, 2):
                recipe = load_recipe(
                    "ct-tv", ["region_size=1", f"method.params.max_iter={args.iters}"],
                    input=str(measurement), output=str(Path(tmp) / f"w{workers}.zarr"),
                ).model_dump()
                seconds, result = timed_run(recipe, workers)
                runs[workers] = {"seconds": round(seconds, 2), "slices_per_s": round(args.slices / seconds, 3),
                                 "store": result["store"]}
        one, two = xr.open_zarr(runs[1].pop("store")), xr.open_zarr(runs[2].pop("store"))
        equal = all(np.array_equal(one[v].values, two[v].values, equal_nan=True) for v in ("mean", "std", "lower", "upper"))
    speedup = runs[2]["slices_per_s"] / runs[1]["slices_per_s"]
    print(json.dumps({
        "benchmark": "dask_scaling",
        "recipe": "ct-tv", "slices": args.slices, "size": args.size, "views": args.views, "tv_iterations": args.iters,
        "threads_per_worker": 1,
        "workers_1": runs[1], "workers_2": runs[2],
        "speedup": round(speedup, 3), "goal": 1.8, "meets_goal": speedup >= 1.8,
        "stores_equal": bool(equal),
        "cpu_count": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
    }, indent=2))


if __name__ == "__main__":
    main()
