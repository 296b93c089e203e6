"""Sea-surface temperature gap filling: exact GP vs interpolation on withheld ocean points.

Prints one JSON document. Why each choice:

* **Data.** The NDJFM SST anomalies (50 winters, 5-degree grid, land missing), read through the
  project's own grid reader (``data.readers.field_input.read_field_input``), so the coordinates
  are the ones the pipeline's ``field-gp`` sees: longitude and latitude in degrees, no
  reprojection (a gridded input keeps its grid; ARD lengthscales absorb the unequal axes).
* **What is withheld.** In each winter, ``--fraction`` of the ocean points chosen at random
  (seeded by ``(seed, winter)``, the rule of the pipeline's ``holdout``); every method sees the
  remaining points of that winter only, and is scored on the withheld ones.
* **Methods.** The exact GP (``--kernel``, hyperparameters by marginal likelihood per winter,
  90 % interval of a new value = mean +- 1.645 predictive std with the learned noise),
  ``scipy.interpolate.griddata`` linear interpolation (nearest neighbour outside the hull of the
  kept points), and the zero anomaly (climatology: what a filled gap is when nothing is known).
  Only the GP gives an interval, so coverage is the GP's alone.

    python benchmarks/sst_fill.py [--fraction 0.3] [--seed 0] [--winters 50] [--kernel matern52]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.interpolate import griddata  # noqa: E402

from inversa.data.readers.field_input import read_field_input  # noqa: E402
from inversa.models.solvers import ExactGPSolver  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fields" / "eofs" / "sst_ndjfm_anom.nc"
Z90 = 1.6448536269514722


def rmse(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(e ** 2)))


def linear_fill(x_keep, y_keep, x_out) -> np.ndarray:
    pred = griddata(x_keep, y_keep, x_out, method="linear")
    outside = ~np.isfinite(pred)
    if outside.any():
        pred[outside] = griddata(x_keep, y_keep, x_out[outside], method="nearest")
    return pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--winters", type=int, default=None, help="the first N winters (default: all)")
    ap.add_argument("--kernel", default="matern52")
    ap.add_argument("--max-iter", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    ds = read_field_input(args.data.resolve(), {"units": "K"}, variable="sst")
    gx, gy = np.meshgrid(ds.x.values, ds.y.values)
    values = ds["value"].values
    n_time = values.shape[0] if args.winters is None else min(args.winters, values.shape[0])

    errors = {"gp": [], "linear": [], "zero_anomaly": []}
    inside, widths, gp_seconds, per_winter = [], [], [], []
    for t in range(n_time):
        ocean = np.isfinite(values[t])
        x = np.column_stack([gx[ocean], gy[ocean]])
        y = values[t][ocean]
        rng = np.random.default_rng((args.seed, t))
        out = np.zeros(y.size, dtype=bool)
        out[rng.choice(y.size, int(round(args.fraction * y.size)), replace=False)] = True

        started = time.perf_counter()
        gp = ExactGPSolver(kernel=args.kernel, max_iter=args.max_iter, seed=args.seed).fit(x[~out], y[~out])
        mean, std = gp.predict(x[out], include_noise=True)
        gp_seconds.append(time.perf_counter() - started)
        e_gp = mean - y[out]
        errors["gp"].append(e_gp)
        errors["linear"].append(linear_fill(x[~out], y[~out], x[out]) - y[out])
        errors["zero_anomaly"].append(-y[out])
        hit = np.abs(e_gp) <= Z90 * std
        inside.append(hit)
        widths.append(2 * Z90 * std)
        per_winter.append({"winter": str(ds.time.values[t])[:10], "n_kept": int((~out).sum()),
                           "n_withheld": int(out.sum()), "gp_rmse": rmse(e_gp),
                           "linear_rmse": rmse(errors["linear"][-1]), "gp_coverage90": float(hit.mean())})

    pooled = {name: rmse(np.concatenate(e)) for name, e in errors.items()}
    result = {
        "benchmark": "sst_fill", "data": str(args.data.resolve()), "winters": n_time,
        "fraction_withheld": args.fraction, "seed": args.seed, "kernel": args.kernel,
        "threads": torch.get_num_threads(),
        "n_withheld_total": int(sum(w["n_withheld"] for w in per_winter)),
        "anomaly_std_k": float(np.nanstd(values[:n_time])),
        "rmse_pooled_k": pooled,
        "rmse_ratio_to_gp": {name: value / pooled["gp"] for name, value in pooled.items()},
        "gp_coverage90_pooled": float(np.concatenate(inside).mean()),
        "gp_mean_width90_k": float(np.concatenate(widths).mean()),
        "gp_seconds_per_winter": float(np.mean(gp_seconds)),
        "gp_winters_better_than_linear": int(sum(w["gp_rmse"] < w["linear_rmse"] for w in per_winter)),
        "per_winter": per_winter,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
