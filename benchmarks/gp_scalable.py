"""Sparse variational GP on 500,000 synthetic scattered points: fit, 500 x 500 grid, accuracy.

Prints one JSON document. The field is known (a smooth sum of waves over a 100 km x 50 km
extent in metres) and observed with Gaussian noise at uniformly scattered points, so the
accuracy of both solvers is measured against the truth as well as against each other. Stages:

* ``sparse_fit``: ``SparseGPSolver`` on all ``--n`` points (k-means init, ``--epochs`` passes
  of minibatch NGD + Adam, then the closed-form optimal q(u) in one streamed pass).
* ``sparse_grid``: posterior mean and std on the ``--grid`` x ``--grid`` grid (tiled).
* ``exact``: ``ExactGPSolver`` conditioned on a seeded ``--exact-n`` subset (hyperparameters on
  ``--exact-fit`` of them), the reference the task asks for; the RMSE of the sparse mean
  against it and against the truth is reported at ``--test`` held-out points.
* ``peak_rss_mib`` is the process high-water mark (``ru_maxrss``), measured after the sparse
  stages (``peak_rss_sparse_mib``) and at the end (includes the exact GP's n^2 matrix);
  ``sparse_estimated_memory_mib`` / ``exact_estimated_memory_mib`` are the solvers' own
  ``estimated_memory_bytes`` (what the pipeline plans workers by), beside them.

    python benchmarks/gp_scalable.py [--n 500000] [--inducing 512] [--epochs 1] [--grid 500]
                                     [--exact-n 20000] [--exact-fit 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import time


import numpy as np  # noqa: E402
import torch  # noqa: E402

from inversa.models.solvers import ExactGPSolver, SparseGPSolver  # noqa: E402

EXTENT = (100_000.0, 50_000.0)


def field(x: np.ndarray) -> np.ndarray:
    """Known smooth field (wavelengths 20-60 km), values of order 1."""
    u, v = x[:, 0] / 1000.0, x[:, 1] / 1000.0
    return (np.sin(2 * np.pi * u / 60.0) * np.cos(2 * np.pi * v / 40.0)
            + 0.5 * np.sin(2 * np.pi * (u + v) / 25.0) + 0.3 * np.cos(2 * np.pi * (u - 2 * v) / 35.0))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--inducing", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--min-steps", type=int, default=300)
    ap.add_argument("--grid", type=int, default=500)
    ap.add_argument("--exact-n", type=int, default=20_000)
    ap.add_argument("--exact-fit", type=int, default=2000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    x = rng.uniform(0.0, 1.0, (args.n, 2)) * EXTENT
    y = field(x) + args.noise * rng.standard_normal(args.n)
    xt = rng.uniform(0.02, 0.98, (args.test, 2)) * EXTENT
    ft = field(xt)
    out: dict = {"n": args.n, "noise_std": args.noise, "inducing": args.inducing, "batch": args.batch,
                 "epochs": args.epochs, "grid": args.grid, "threads": args.threads}

    t0 = time.perf_counter()
    sparse = SparseGPSolver(inducing=args.inducing, batch_size=args.batch, epochs=args.epochs,
                            min_steps=args.min_steps, seed=args.seed).fit(x, y)
    out["sparse_fit_seconds"] = time.perf_counter() - t0
    out["sparse_train_seconds"] = sparse.info["fit_seconds"]
    out["sparse_optimal_q_seconds"] = sparse.info["optimal_q_seconds"]
    out["sparse_steps"] = sparse.info["steps"]
    out["sparse_hyperparameters"] = sparse.hyperparameters()

    xs = np.linspace(0.0, EXTENT[0], args.grid)
    ys = np.linspace(0.0, EXTENT[1], args.grid)
    t0 = time.perf_counter()
    post = sparse.predict_grid(xs, ys)
    out["sparse_grid_seconds"] = time.perf_counter() - t0
    gx, gy = np.meshgrid(xs, ys)
    truth = field(np.column_stack([gx.ravel(), gy.ravel()])).reshape(post.mean.shape)
    out["sparse_grid_rmse_vs_truth"] = float(np.sqrt(np.mean((post.mean - truth) ** 2)))
    out["sparse_grid_mean_std"] = float(post.std.mean())
    ms, ss = sparse.predict(xt)
    out["sparse_test_rmse_vs_truth"] = float(np.sqrt(np.mean((ms - ft) ** 2)))
    out["sparse_test_coverage_90"] = float(np.mean(np.abs(ms - ft) <= 1.6448536 * ss))
    out["peak_rss_sparse_mib"] = peak_rss_mib()
    out["sparse_estimated_memory_mib"] = sparse.estimated_memory_bytes(args.n) / 2 ** 20

    if args.exact_n > 0:
        idx = np.sort(rng.choice(args.n, min(args.exact_n, args.n), replace=False))
        t0 = time.perf_counter()
        exact = ExactGPSolver(fit_max_points=args.exact_fit, max_iter=50, seed=args.seed).fit(x[idx], y[idx])
        out["exact_n"] = int(idx.size)
        out["exact_fit_seconds"] = time.perf_counter() - t0
        out["exact_hyperparameters"] = exact.hyperparameters()
        me, se = exact.predict(xt)
        out["exact_test_rmse_vs_truth"] = float(np.sqrt(np.mean((me - ft) ** 2)))
        out["exact_test_coverage_90"] = float(np.mean(np.abs(me - ft) <= 1.6448536 * se))
        out["sparse_vs_exact_rmse"] = float(np.sqrt(np.mean((ms - me) ** 2)))
        out["exact_estimated_memory_mib"] = exact.estimated_memory_bytes(int(idx.size)) / 2 ** 20
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
