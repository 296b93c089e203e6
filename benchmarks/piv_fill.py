"""PIV gap filling on the soap-film frames: exact GP per component vs the incompressible PINN ensemble.

Prints one JSON document (per frame and averaged). Why each choice:

* **Data.** ``fields/pivpy_soapfilm/*.vec`` through the project's reader
  (``data.readers.piv_vec.read_piv_vec``): a 63 x 63 grid, x and y in mm, u and v in m/s, about
  9 % of the vectors flagged invalid by Insight (``mask``). Units are kept: errors in m/s,
  divergence in 1/s (``(m/s) / mm * 1000``).
* **Test vectors.** Per frame, ``--holdout`` (10 %) of the VALID vectors are removed at random
  (seed ``--seed`` + frame index); both methods train on the remaining valid vectors only and are
  scored on the removed ones: RMSE over both components, and the coverage of the 90 % interval
  of a new measurement (latent std combined with the noise std). The originally invalid
  vectors have no truth; they are filled too and enter the divergence.
* **GP.** ``ExactGPSolver`` (Matern 5/2, ARD) for u and for v separately; hyperparameters by
  marginal likelihood on a seeded subset of ``--fit-points`` vectors, posterior on all.
* **PINN.** ``PINNEnsembleSolver("incompressible")``: the velocity is the curl of a stream
  function per member, so each member - and the ensemble mean - is exactly divergence-free.
  The noise std per component is the GP's learned noise std for that component (the PINN has
  no likelihood of its own to learn it from; the same assumed noise makes the two coverages
  comparable). Observations are minibatched (``--batch``) to keep the run inside minutes, and
  the standardised coordinates are multiplied by ``--input-gain`` (the field holds many eddies
  per frame; a tanh MLP on +-1 inputs learns them slowly).
* **Divergence.** Central finite differences on the grid (``np.gradient`` with the grid
  coordinates): for the measured field (NaN where invalid, so the mean runs over the cells with a
  complete stencil), for each filled field (measured vectors kept, removed and invalid ones
  replaced by the method's mean) on all cells and on the measured field's cells, and for each
  method's mean field alone. The mean |vorticity| of the measured field is the scale to read
  them against. A perfectly divergence-free continuous field still shows a finite-difference
  divergence of the order of the truncation error; the soap film itself is not exactly 2-D
  incompressible (thickness varies), which the measured value shows.

    OMP_NUM_THREADS=1 python benchmarks/piv_fill.py [--frames 2] [--steps 4000] [--members 4]
        [--width 64] [--depth 3] [--batch 512] [--input-gain 4] [--fit-points 1000] [--holdout 0.1]
        [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from inversa.data.readers.piv_vec import read_piv_vec  # noqa: E402
from inversa.models.solvers import ExactGPSolver, PINNEnsembleSolver  # noqa: E402

DATA = Path("/work/shared/data/fields/pivpy_soapfilm")
Z90 = 1.6448536269514722
PER_SECOND = 1000.0  # (m/s) / mm -> 1/s


def divergence_vorticity(u: np.ndarray, v: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """Finite-difference divergence and vorticity (1/s) of a (ny, nx) velocity field."""
    du_dy, du_dx = np.gradient(u, ys, xs)
    dv_dy, dv_dx = np.gradient(v, ys, xs)
    return PER_SECOND * (du_dx + dv_dy), PER_SECOND * (dv_dx - du_dy)


def mean_abs(a: np.ndarray, where: np.ndarray | None = None) -> float:
    a = a if where is None else a[where]
    return float(np.mean(np.abs(a[np.isfinite(a)])))


def scores(name: str, mean: np.ndarray, std_new: np.ndarray, truth: np.ndarray) -> dict:
    """RMSE (m/s) and 90 % coverage at the removed vectors, both components pooled."""
    inside = np.abs(mean - truth) <= Z90 * std_new
    return {f"{name}_rmse": float(np.sqrt(np.mean((mean - truth) ** 2))),
            f"{name}_rmse_u": float(np.sqrt(np.mean((mean[:, 0] - truth[:, 0]) ** 2))),
            f"{name}_rmse_v": float(np.sqrt(np.mean((mean[:, 1] - truth[:, 1]) ** 2))),
            f"{name}_coverage90": float(inside.mean())}


def run_frame(path: Path, index: int, a: argparse.Namespace) -> dict:
    ds = read_piv_vec(path)
    xs, ys = ds["x"].values, ds["y"].values
    gx, gy = np.meshgrid(xs, ys)
    grid_pts = np.column_stack([gx.ravel(), gy.ravel()])
    valid = ds["mask"].values
    measured = np.stack([ds["u"].values, ds["v"].values], axis=-1)  # (ny, nx, 2), NaN where invalid
    flat_valid = np.flatnonzero(valid.ravel())
    rng = np.random.default_rng(a.seed + index)
    removed = rng.choice(flat_valid, size=int(round(a.holdout * flat_valid.size)), replace=False)
    train = np.setdiff1d(flat_valid, removed)
    values = measured.reshape(-1, 2)
    x_tr, y_tr = grid_pts[train], values[train]
    x_te, y_te = grid_pts[removed], values[removed]

    div_meas, vort_meas = divergence_vorticity(measured[..., 0], measured[..., 1], xs, ys)
    meas_cells = np.isfinite(div_meas)
    out = {"frame": path.name, "grid": list(valid.shape), "valid": int(flat_valid.size),
           "invalid_filled": int(valid.size - flat_valid.size), "removed": int(removed.size),
           "train": int(train.size), "velocity_std": float(np.nanstd(values[flat_valid])),
           "measured_mean_abs_divergence": mean_abs(div_meas),
           "measured_mean_abs_vorticity": mean_abs(vort_meas)}

    def filled_divergence(name: str, grid_mean: np.ndarray) -> None:
        filled = values.copy()
        gaps = np.ones(values.shape[0], bool)
        gaps[train] = False
        filled[gaps] = grid_mean.reshape(-1, 2)[gaps]
        filled = filled.reshape(measured.shape)
        div_f, _ = divergence_vorticity(filled[..., 0], filled[..., 1], xs, ys)
        div_m, _ = divergence_vorticity(grid_mean[..., 0], grid_mean[..., 1], xs, ys)
        out.update({f"{name}_filled_mean_abs_divergence": mean_abs(div_f),
                    f"{name}_filled_mean_abs_divergence_measured_cells": mean_abs(div_f, meas_cells),
                    f"{name}_model_mean_abs_divergence": mean_abs(div_m)})

    # (a) exact GP, one per component
    t0 = time.perf_counter()
    gp_mean_te, gp_std_te, gp_grid, noise_std, hyper = [], [], [], [], []
    for c in range(2):
        gp = ExactGPSolver(kernel="matern52", fit_max_points=a.fit_points, seed=a.seed + index)
        gp.fit(x_tr, y_tr[:, c])
        m, s = gp.predict(x_te, include_noise=True)
        gm, _ = gp.predict(grid_pts, return_std=False)
        gp_mean_te.append(m), gp_std_te.append(s), gp_grid.append(gm.reshape(valid.shape))
        h = gp.hyperparameters()
        hyper.append({k: h[k] for k in ("lengthscale", "outputscale", "noise")})
        noise_std.append(float(np.sqrt(h["noise"])))
    out["gp_seconds"] = time.perf_counter() - t0
    out["gp_hyperparameters"] = {"u": hyper[0], "v": hyper[1]}
    out.update(scores("gp", np.column_stack(gp_mean_te), np.column_stack(gp_std_te), y_te))
    filled_divergence("gp", np.stack(gp_grid, axis=-1))

    # (b) incompressible PINN ensemble, one batched training of all members
    t0 = time.perf_counter()
    pinn = PINNEnsembleSolver("incompressible", members=a.members, width=a.width, depth=a.depth, steps=a.steps,
                              lr=a.lr, batch_size=a.batch, input_gain=a.input_gain,
                              seed=a.seed + index)
    sigma = np.tile(noise_std, (x_tr.shape[0], 1))
    pinn.fit(x_tr, y_tr, sigma, domain=[(xs.min(), xs.max()), (ys.min(), ys.max())])
    m, s = pinn.predict(x_te)
    grid_post = pinn.predict_grid(xs, ys)
    out["pinn_seconds"] = time.perf_counter() - t0
    out["pinn_train_seconds"] = pinn.info["seconds"]
    out["pinn_noise_std_assumed"] = noise_std
    out.update(scores("pinn", m, np.sqrt(s ** 2 + np.square(noise_std)), y_te))
    out["pinn_coverage90_ensemble_std_only"] = float((np.abs(m - y_te) <= Z90 * s).mean())
    out["pinn_mean_ensemble_std"] = float(s.mean())
    filled_divergence("pinn", grid_post.mean)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--fit-points", type=int, default=1000)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--input-gain", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    files = sorted(a.data.glob("*.vec"))[: a.frames]
    if not files:
        raise SystemExit(f"piv_fill: no .vec files in {a.data}")
    t0 = time.perf_counter()
    frames = []
    for i, path in enumerate(files):
        frames.append(run_frame(path, i, a))
        print(json.dumps(frames[-1]), file=sys.stderr, flush=True)
    keys = [k for k, v in frames[0].items() if isinstance(v, float)]
    result = {"benchmark": "piv_fill", "units": {"rmse": "m/s", "divergence": "1/s", "seconds": "s"},
              "settings": vars(a) | {"data": str(a.data)}, "threads": torch.get_num_threads(),
              "mean_over_frames": {k: float(np.mean([f[k] for f in frames])) for k in keys},
              "frames": frames, "total_seconds": time.perf_counter() - t0}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
