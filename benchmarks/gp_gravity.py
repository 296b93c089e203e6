"""Exact GP on the 14,359 southern-Africa gravity stations: fit, then a 500 x 500 grid.

Prints one JSON document with seconds per stage and the peak resident memory. Coordinates are
longitude/latitude in degrees (the solver standardises each axis; the projected data layer is
separate work), values are gravity in mGal. Stages:

* ``fit``: hyperparameters by exact marginal likelihood (L-BFGS, Cholesky) on a seeded subset of
  ``--fit-points`` stations (each evaluation is O(m^3); on all 14,359 it would be ~14,359^3/3
  flops per evaluation, times tens of evaluations), then the posterior conditioned on all
  stations (one Cholesky of the full 14,359 x 14,359 matrix, timed as ``cholesky``).
* ``mean_grid``: posterior mean on the full ``--grid`` x ``--grid`` grid (O(n) per point).
* ``std``: exact latent std is O(n^2) per point (a triangular solve against the full Cholesky
  factor), so it is timed on a ``--std-grid`` x ``--std-grid`` grid over the same extent and the
  full-grid time is extrapolated linearly (labelled as such); ``--std-grid 0`` means the full grid.

On a GPU (``--device cuda``) the whole grid's std is cheap enough to compute rather than
extrapolate (``--std-grid 0``); peak GPU memory is reported beside the peak resident memory,
and the solver's own ``estimated_memory_bytes`` (what the pipeline plans workers by) beside both.

    python benchmarks/gp_gravity.py [--fit-points 3000] [--grid 500] [--std-grid 60] [--threads 2]
                                    [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import lzma
import resource
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from inversa.models.solvers import ExactGPSolver  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fields" / "fatiando" / "southern-africa-gravity.csv.xz"


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with lzma.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        table = np.loadtxt(fh, delimiter=",")
    cols = {name: i for i, name in enumerate(header)}
    x = table[:, [cols["longitude"], cols["latitude"]]]
    return x, table[:, cols["gravity_mgal"]]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--fit-points", type=int, default=3000)
    ap.add_argument("--grid", type=int, default=500)
    ap.add_argument("--std-grid", type=int, default=60)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kernel", default="matern52")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    x, y = load(args.data.resolve())
    # Stations repeated at identical coordinates would make K singular: keep the first.
    _, keep = np.unique(x, axis=0, return_index=True)
    keep = np.sort(keep)
    x, y = x[keep], y[keep]
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()

    solver = ExactGPSolver(kernel=args.kernel, max_iter=args.max_iter, fit_max_points=args.fit_points,
                           tile_size=args.tile, seed=0, device=args.device)
    t0 = time.perf_counter()
    solver.fit(x, y)
    fit_total_s = time.perf_counter() - t0
    info = solver.info

    xs = np.linspace(x[:, 0].min(), x[:, 0].max(), args.grid)
    ys = np.linspace(x[:, 1].min(), x[:, 1].max(), args.grid)
    gx, gy = np.meshgrid(xs, ys)
    t0 = time.perf_counter()
    mean, _ = solver.predict(np.column_stack([gx.ravel(), gy.ravel()]), return_std=False)
    mean_s = time.perf_counter() - t0

    ng = args.std_grid or args.grid
    sx = np.linspace(xs[0], xs[-1], ng)
    sy = np.linspace(ys[0], ys[-1], ng)
    t0 = time.perf_counter()
    post = solver.predict_grid(sx, sy)
    std_s = time.perf_counter() - t0
    std_full_s = std_s * (args.grid ** 2) / (ng ** 2)

    # In-sample check that the fit is sane: residual RMSE at the stations (not a CV score).
    m_obs, s_obs = solver.predict(x[:: max(1, len(x) // 2000)], return_std=True)
    rmse_in = float(np.sqrt(np.mean((m_obs - y[:: max(1, len(x) // 2000)]) ** 2)))

    print(json.dumps({
        "benchmark": "gp_gravity",
        "stations": int(len(x)),
        "threads": args.threads,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "fit_points": info["n_fit"],
        "grid": [args.grid, args.grid],
        "seconds": {
            "load": round(load_s, 3),
            "hyperparameter_fit": round(info["fit_seconds"], 3),
            "cholesky_all_stations": round(info["cholesky_seconds"], 3),
            "fit_total": round(fit_total_s, 3),
            "mean_grid": round(mean_s, 3),
            "std_grid_measured": round(std_s, 3),
            "std_grid_points": ng * ng,
            "std_full_grid_extrapolated" if ng != args.grid else "std_full_grid": round(std_full_s, 1),
            "fit_plus_full_grid_mean_and_std": round(fit_total_s + mean_s + std_full_s, 1),
        },
        "iterations": info["iterations"],
        "function_evaluations": info["function_evaluations"],
        "hyperparameters": info["hyperparameters"],
        "log_marginal_likelihood": info["log_marginal_likelihood"],
        "in_sample_rmse_mgal": round(rmse_in, 3),
        "median_std_mgal": round(float(np.median(post.std)), 3),
        "mean_grid_range_mgal": [round(float(mean.min()), 1), round(float(mean.max()), 1)],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_after_load_mib": round(rss_after_load, 1),
        "estimated_memory_mib": round(solver.estimated_memory_bytes(len(x)) / 2 ** 20, 1),
        "peak_gpu_mib": (round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
                         if args.device.startswith("cuda") else None),
    }, indent=2))


if __name__ == "__main__":
    main()
