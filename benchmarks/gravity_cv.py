"""Gravity gridding benchmark: exact GP vs ``verde.Spline``, spatially blocked k-fold CV.

Prints one JSON document. Why each choice:

* **Data.** The southern-Africa gravity stations, read through the project's own reader
  (``data.readers.field_csv.read_field_csv``: lon/lat projected to metres by a transverse Mercator,
  the 34 repeated stations averaged), once for gravity and once for the station height.
* **What is gridded: the free-air anomaly minus a plane.** Raw gravity is dominated by the
  normal-gravity latitude term (~1000 mGal over the survey) and by station height
  (-0.3086 mGal/m, i.e. hundreds of mGal over the plateau): neither is the geological signal a
  gridding method should be judged on, and the GP engineer found a ~18 mGal noise std on the raw
  field. The standard remedy is the free-air anomaly
  ``g - gamma(lat) + 0.3086 h`` (``gamma``: WGS84 Somigliana normal gravity on the ellipsoid,
  ``h``: height above sea level; boule, which would compute it, is not installed), then a
  degree-1 polynomial trend (``verde.Trend``) fitted on each training fold only and subtracted
  from both training and held-out values. Both methods grid the same residuals; the trend is added
  back to neither (it cancels in the errors).
* **Folds.** ``verde.BlockKFold`` (blocks of ``--block-km`` km, shuffled with seed 0): held-out
  stations lie in whole blocks, so a method cannot score well by copying a neighbouring station.
  Both methods see the identical folds.
* **GP.** ``models.solvers.ExactGPSolver`` (ARD): the kernel is chosen among ``--kernels`` by
  the log marginal likelihood of fold 0's training stations (the likelihood alone, no held-out
  station is looked at; default: one Matern 5/2 or a sum of two, a regional and a local
  component); hyperparameters fitted per fold on a seeded subset of ``--fit-points`` training
  stations, posterior conditioned on all training stations; at held-out stations the predictive std includes the learned noise (a new
  observation's spread), and the 90 % interval is mean +- 1.645 std.
* **Calibration** (``--calibrate``): in each fold, the pipeline's blocked conformal calibration
  (``tasks.kinds.field.calibration.blocked_record``, the defaults of a field recipe's
  ``calibration:`` block) runs on that fold's training stations only: one more GP fit without
  ``--cal-blocks`` spatial blocks of them (about 10 % of the stations), its factor per band of
  predictive std applied to the held-out block's intervals. Coverage before and after is over
  the same held-out stations; the GP mean (and so its RMSE) is the same fit either way.
* **verde.** ``verde.Spline`` with verde's default damping, or, with ``--spline-dampings``, the
  value with the lowest RMSE on the first fold (a search on that fold only: it slightly favours
  verde on that fold, which is stated in the output). verde gives no uncertainty: RMSE only.

verde is imported here only (a benchmark dependency, not a project one).

    OMP_NUM_THREADS=2 python benchmarks/gravity_cv.py [--folds 10] [--block-km 100]
        [--fit-points 2000] [--max-stations N] [--spline-dampings 1e-8,1e-6,1e-4]
        [--kernels matern52,matern52+matern52] [--calibrate] [--cal-blocks 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402
import verde as vd  # noqa: E402

from inversa.data.readers.field_csv import read_field_csv  # noqa: E402
from inversa.models.conformal import scale_map  # noqa: E402
from inversa.models.solvers import ExactGPSolver  # noqa: E402
from inversa.tasks.kinds.field.calibration import blocked_record  # noqa: E402
from inversa.tasks.kinds.field.problem import Points  # noqa: E402

DATA = Path("/work/shared/data/fields/fatiando/southern-africa-gravity.csv.xz")
Z90 = 1.6448536269514722
FREE_AIR_MGAL_PER_M = 0.3086


def normal_gravity_mgal(lat_deg: np.ndarray) -> np.ndarray:
    """WGS84 normal gravity on the ellipsoid (Somigliana closed form), mGal."""
    s2 = np.sin(np.radians(lat_deg)) ** 2
    return 978032.53359 * (1 + 0.00193185265241 * s2) / np.sqrt(1 - 0.00669437999013 * s2)


def load(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Projected coordinates (n, 2) in metres and the free-air anomaly (n,) in mGal."""
    columns = {"x": "longitude", "y": "latitude"}
    g = read_field_csv(path, {**columns, "value": "gravity_mgal"}, units="mGal", duplicates="mean")
    h = read_field_csv(path, {**columns, "value": "height_sea_level_m"}, units="m", duplicates="mean")
    xy = np.column_stack([g["x"].values, g["y"].values])
    if not np.array_equal(xy, np.column_stack([h["x"].values, h["y"].values])):
        raise RuntimeError(f"{path}: gravity and height reads gave different station orders")
    anomaly = g["value"].values - normal_gravity_mgal(g["lat"].values) + FREE_AIR_MGAL_PER_M * h["value"].values
    return xy, anomaly, g.attrs["crs"]


def rmse(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a ** 2)))


def spline_fit_predict(xy_tr, r_tr, xy_te, damping):
    spline = vd.Spline(damping=damping).fit((xy_tr[:, 0], xy_tr[:, 1]), r_tr)
    return spline.predict((xy_te[:, 0], xy_te[:, 1]))


class _Fitted:
    """A fitted ExactGPSolver as the calibration asks for one (predict at Points, noise variance)."""

    def __init__(self, solver):
        self.solver = solver

    def predict(self, points):
        return self.solver.predict(points.xy)

    def noise_variance(self):
        return self.solver.noise_variance()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--block-km", type=float, default=100.0)
    ap.add_argument("--fit-points", type=int, default=2000)
    ap.add_argument("--max-stations", type=int, default=None, help="seeded random subsample (quick runs)")
    ap.add_argument("--trend-degree", type=int, default=1)
    ap.add_argument("--spline-dampings", type=str, default="",
                    help="comma-separated dampings searched on the first fold (empty: verde default)")
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--kernels", type=str, default="matern52,matern52+matern52",
                    help="comma-separated GP kernels; fold 0's marginal likelihood picks one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate", action="store_true", help="blocked conformal calibration per fold")
    ap.add_argument("--cal-blocks", type=int, default=200)
    ap.add_argument("--cal-fraction", type=float, default=0.1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(max(1, int(__import__("os").environ.get("OMP_NUM_THREADS", "1"))))

    t0 = time.perf_counter()
    xy, anomaly, crs = load(args.data)
    n_all = xy.shape[0]
    if args.max_stations and args.max_stations < n_all:
        keep = np.sort(np.random.default_rng(args.seed).choice(n_all, args.max_stations, replace=False))
        xy, anomaly = xy[keep], anomaly[keep]
    load_s = time.perf_counter() - t0

    kfold = vd.BlockKFold(spacing=args.block_km * 1e3, n_splits=args.folds, shuffle=True, random_state=args.seed)
    folds = list(kfold.split(xy))
    dampings = [float(d) for d in args.spline_dampings.split(",") if d.strip()]
    chosen_damping, damping_search = None, {}
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    kernel, kernel_search = kernels[0], {}

    per_fold = []
    gp_err, sp_err, gp_std, inside, inside_cal = [], [], [], [], []
    for k, (tr, te) in enumerate(folds):
        coords_tr = (xy[tr, 0], xy[tr, 1])
        trend = vd.Trend(degree=args.trend_degree).fit(coords_tr, anomaly[tr])
        r_tr = anomaly[tr] - trend.predict(coords_tr)
        r_te = anomaly[te] - trend.predict((xy[te, 0], xy[te, 1]))

        def fit_gp(kind):
            solver = ExactGPSolver(kernel=kind, fit_max_points=args.fit_points, max_iter=args.max_iter,
                                   seed=args.seed)
            return solver.fit(xy[tr], r_tr)

        if k == 0 and len(kernels) > 1:
            for kind in kernels:
                t = time.perf_counter()
                lml = fit_gp(kind).info["log_marginal_likelihood"]
                kernel_search[kind] = {"log_marginal_likelihood_fold0_train": lml, "seconds": time.perf_counter() - t}
            kernel = max(kernels, key=lambda kind: kernel_search[kind]["log_marginal_likelihood_fold0_train"])
            print(json.dumps({"kernel_search": kernel_search, "chosen": kernel}), file=sys.stderr, flush=True)
        t = time.perf_counter()
        gp = fit_gp(kernel)
        mean, std = gp.predict(xy[te], include_noise=True)
        gp_s = time.perf_counter() - t

        if k == 0 and dampings:
            for d in dampings:
                t = time.perf_counter()
                err = spline_fit_predict(xy[tr], r_tr, xy[te], d) - r_te
                damping_search[repr(d)] = {"rmse_fold0": rmse(err), "seconds": time.perf_counter() - t}
            chosen_damping = min(dampings, key=lambda d: damping_search[repr(d)]["rmse_fold0"])
        t = time.perf_counter()
        sp_pred = spline_fit_predict(xy[tr], r_tr, xy[te], chosen_damping)
        sp_s = time.perf_counter() - t

        e_gp, e_sp = mean - r_te, sp_pred - r_te
        hit = np.abs(e_gp) <= Z90 * std
        gp_err.append(e_gp), sp_err.append(e_sp), gp_std.append(std), inside.append(hit)
        calibration = {}
        if args.calibrate:
            t = time.perf_counter()

            def fit_without(points):
                return _Fitted(ExactGPSolver(kernel=kernel, fit_max_points=args.fit_points, max_iter=args.max_iter,
                                             seed=args.seed).fit(points.xy, points.values))

            record = blocked_record([(None, Points(xy[tr], r_tr))], fit_without, blocks=args.cal_blocks,
                                    fraction=args.cal_fraction, bands=4, seed=7, alpha=0.1, credible_level=0.9)
            hit_cal = np.abs(e_gp) <= Z90 * std * scale_map(record, std)
            inside_cal.append(hit_cal)
            calibration = {"calibrated_coverage90": float(hit_cal.mean()), "interval_scale": record["scale"],
                           "calibration_units": record["units"], "calibration_bands": len(record["bands"]),
                           "calibration_seconds": time.perf_counter() - t}
        hp = gp.info["hyperparameters"]
        per_fold.append({
            "fold": k, "n_train": int(tr.size), "n_test": int(te.size),
            "gp_rmse": rmse(e_gp), "spline_rmse": rmse(e_sp),
            "gp_coverage90": float(hit.mean()), "gp_mean_width90": float(2 * Z90 * std.mean()),
            "gp_seconds": gp_s, "spline_seconds": sp_s,
            "gp_noise_std": float(np.sqrt(hp["noise"])),
            "gp_lengthscale_km": (np.asarray(hp["lengthscale"], dtype=float).ravel() / 1e3).tolist(),
            **calibration,
        })
        print(json.dumps(per_fold[-1]), file=sys.stderr, flush=True)

    cat = np.concatenate
    result = {
        "command": "python " + shlex.join(sys.argv),
        "data": str(args.data), "crs": crs, "n_stations_file_merged": int(n_all), "n_stations_used": int(xy.shape[0]),
        "target": f"free-air anomaly (g - WGS84 normal gravity + {FREE_AIR_MGAL_PER_M} h) minus a degree-"
                  f"{args.trend_degree} verde.Trend fitted per training fold",
        "free_air_anomaly_std_mgal": float(np.std(anomaly)),
        "folds": args.folds, "block_km": args.block_km, "fit_points": args.fit_points, "seed": args.seed,
        "threads": torch.get_num_threads(), "load_seconds": load_s,
        "gp": {
            "kernel": kernel, "kernel_search_fold0": kernel_search or None,
            "rmse_mean_over_folds": float(np.mean([f["gp_rmse"] for f in per_fold])),
            "rmse_pooled": rmse(cat(gp_err)),
            "coverage90_pooled": float(cat(inside).mean()),
            "calibrated_coverage90_pooled": float(cat(inside_cal).mean()) if inside_cal else None,
            "mean_width90_mgal": float(2 * Z90 * cat(gp_std).mean()),
            "seconds_per_fold": float(np.mean([f["gp_seconds"] for f in per_fold])),
        },
        "spline": {
            "damping": chosen_damping, "damping_search_fold0": damping_search or None,
            "rmse_mean_over_folds": float(np.mean([f["spline_rmse"] for f in per_fold])),
            "rmse_pooled": rmse(cat(sp_err)),
            "seconds_per_fold": float(np.mean([f["spline_seconds"] for f in per_fold])),
        },
        "per_fold": per_fold,
    }
    g, s = result["gp"], result["spline"]
    result["goal"] = {
        "gp_rmse_at_most_spline": g["rmse_pooled"] <= s["rmse_pooled"],
        "gp_coverage_in_0.85_0.95": 0.85 <= g["coverage90_pooled"] <= 0.95,
    }
    if inside_cal:
        result["goal"]["gp_calibrated_coverage_in_0.85_0.95"] = 0.85 <= g["calibrated_coverage90_pooled"] <= 0.95
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
