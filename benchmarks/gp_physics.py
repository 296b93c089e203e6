"""Physics-informed GP versus the plain exact GP on a Darcy study with known truth, vs sensor count.

Prints one JSON document. The problem is ``data.synthetic_fields.simulate_darcy_study`` with a
constant coefficient ``k`` and ``f = 2 pi^2 sin(pi x) sin(pi y)`` on the unit square (``u = 0``
on the boundary, so ``u = sin(pi x) sin(pi y) / k``), observed at ``n`` random sensors with
Gaussian noise. For each sensor count and seed:

* ``physics``: ``PhysicsGPSolver(k=...)`` with the known ``f`` and ``k``, ``--collocation`` points
  and the Dirichlet boundary ``u = 0``;
* ``physics_no_boundary``: the same without boundary values (the PDE and the sensors only);
* ``physics_no_boundary_known_noise``: that, with the sensors' noise std given (``y_noise_std``)
  rather than learned (with few sensors the marginal likelihood underestimates it);
* ``exact_rbf`` / ``exact_matern52``: ``ExactGPSolver`` on the same sensors, no physics.

Each reports RMSE of the posterior mean against the true ``u`` on the ``--grid`` nodes, the
fraction of nodes inside the 90 % interval, the mean posterior std and seconds (fit, grid
prediction). ``summary`` averages over seeds.

    python benchmarks/gp_physics.py [--sensors 10 20 40] [--seeds 0 1 2] [--collocation 256]
                                    [--noise 0.01] [--k 1.0] [--grid 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time


import numpy as np  # noqa: E402
import torch  # noqa: E402

from inversa.data.synthetic_fields import simulate_darcy_study  # noqa: E402
from inversa.models.solvers import ExactGPSolver, PhysicsGPSolver  # noqa: E402

Z90 = 1.6448536269514722


def sine_source(p: np.ndarray) -> np.ndarray:
    return 2 * math.pi ** 2 * np.sin(math.pi * p[:, 0]) * np.sin(math.pi * p[:, 1])


def score(fit, xs, ys, u) -> dict:
    """Fit (a callable returning a fitted solver), predict on the grid, compare with the truth."""
    t0 = time.perf_counter()
    solver = fit()
    t1 = time.perf_counter()
    post = solver.predict_grid(xs, ys)
    t2 = time.perf_counter()
    inside = np.abs(post.mean - u) <= Z90 * post.std
    return {"rmse": float(np.sqrt(np.mean((post.mean - u) ** 2))), "coverage_90": float(inside.mean()),
            "mean_std": float(post.std.mean()), "fit_seconds": t1 - t0, "predict_seconds": t2 - t1,
            "hyperparameters": solver.hyperparameters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, nargs="+", default=[10, 20, 40])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--collocation", type=int, default=256)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--k", type=float, default=1.0)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    domain = [[0.0, 1.0], [0.0, 1.0]]
    runs = []
    for n_sensors in args.sensors:
        for seed in args.seeds:
            obs, truth = simulate_darcy_study(n=args.grid, seed=seed, n_sensors=n_sensors, noise_sigma=args.noise,
                                              coefficient="constant", source="sine", k_value=args.k)
            x = np.column_stack([obs["x"].values, obs["y"].values])
            y = obs["value"].values
            xs, ys, u = truth["x"].values, truth["y"].values, truth["u"].values

            def physics(boundary, noise_std=None):
                return lambda: PhysicsGPSolver(n_collocation=args.collocation, seed=seed, k=args.k).fit(
                    x, y, noise_std, source=sine_source, domain=domain, boundary=boundary)

            runs.append({
                "n_sensors": n_sensors, "seed": seed,
                "physics": score(physics(0.0), xs, ys, u),
                "physics_no_boundary": score(physics(None), xs, ys, u),
                "physics_no_boundary_known_noise": score(physics(None, np.full(n_sensors, args.noise)), xs, ys, u),
                "exact_rbf": score(lambda: ExactGPSolver(kernel="rbf").fit(x, y), xs, ys, u),
                "exact_matern52": score(lambda: ExactGPSolver(kernel="matern52").fit(x, y), xs, ys, u),
            })
    methods = ("physics", "physics_no_boundary", "physics_no_boundary_known_noise", "exact_rbf", "exact_matern52")
    summary = {}
    for n_sensors in args.sensors:
        rows = [r for r in runs if r["n_sensors"] == n_sensors]
        summary[str(n_sensors)] = {
            m: {key: float(np.mean([r[m][key] for r in rows]))
                for key in ("rmse", "coverage_90", "mean_std", "fit_seconds", "predict_seconds")}
            for m in methods}
        summary[str(n_sensors)]["rmse_ratio_physics_to_exact_rbf"] = (
            summary[str(n_sensors)]["physics"]["rmse"] / summary[str(n_sensors)]["exact_rbf"]["rmse"])
    out = {"problem": "darcy, constant k, f = 2 pi^2 sin(pi x) sin(pi y), u = 0 on the unit square",
           "k": args.k, "noise_std": args.noise, "grid": args.grid, "n_collocation": args.collocation,
           "seeds": args.seeds, "threads": args.threads, "torch": torch.__version__,
           "summary": summary, "runs": runs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
