"""Real MRI through the pipeline: every MRI method on the shared brain scans (one JSON document).

1. ``chiew_sense16/raw_data.mat`` (fully sampled, 16 coils, 96 x 96), retrospectively undersampled
   at 4x and 8x (fastMRI-style equispaced lines, a fully sampled centre); reference: the root sum
   of squares of the fully sampled data. For each method: NRMSE, PSNR, SSIM of the posterior mean
   (magnitude) and, for the samplers, coverage of the 90 % interval uncalibrated and calibrated
   (conformal, on simulated brain slices), seconds and NFE.
2. ``sigpy_cartesian_brain/cartesian_ksp.npy`` (8 coils, 230 x 180, Poisson disc at about 8x, no
   reference): the data residual of the mean against the noise level estimated from outer
   k-space, and the posterior std (the uncertainty map, as a PNG beside the JSON).

Every run goes through the same ``reconstruct`` flow a user runs, so the figures are the product's.

    python benchmarks/mri_realdata.py [--samples 8] [--pairs 16] [--out benchmarks/results/mri_realdata]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "mri"
CHIEW = DATA / "chiew_sense16" / "raw_data.mat"
SIGPY = DATA / "sigpy_cartesian_brain" / "cartesian_ksp.npy"
METHODS = ("mri-zero-filled", "mri-cgsense", "mri-cs", "mri-dds", "mri-dps")
SAMPLERS = ("mri-dds", "mri-dps")


def _run(recipe_name: str, sets: list[str], inp: Path, output: Path) -> dict:
    from inversa.flows.reconstruct import reconstruct
    from inversa.tasks.core.recipe import load_recipe

    recipe = load_recipe(recipe_name, sets, input=str(inp), output=str(output))
    started = time.perf_counter()
    result = reconstruct(recipe, overwrite=True)
    keep = ("psnr", "ssim", "nrmse", "coverage", "data_residual", "nfe", "seconds", "interval_scale",
            "calibration_coverage_before", "calibration_coverage_after")
    row = {k: result[k] for k in keep if k in result and result[k] == result[k]}
    row["wall_seconds"] = round(time.perf_counter() - started, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=16, help="calibration pairs for the samplers (0: no calibrated run)")
    parser.add_argument("--accelerations", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default=None, help="write the std map PNG of the 8-coil brain here (prefix)")
    args = parser.parse_args()
    for path in (CHIEW, SIGPY):
        if not path.exists():
            sys.exit(f"{path}: missing (see ../shared/data/SOURCES.md)")

    from inversa.flows.runtime import local_run_settings

    report: dict = {"benchmark": "mri_realdata", "samples": args.samples, "calibration_pairs": args.pairs,
                    "cpu_threads": os.cpu_count(), "chiew_sense16": {}, "sigpy_cartesian_brain": {}}
    with tempfile.TemporaryDirectory() as tmp, local_run_settings():
        tmp = Path(tmp)
        for acceleration in args.accelerations:
            rows = {}
            for name in args.methods:
                sets = [f"undersampling.acceleration={acceleration:g}"]
                if acceleration >= 8:
                    sets.append("undersampling.center_fraction=0.04")
                if name in SAMPLERS:
                    sets.append(f"samples={args.samples}")
                    rows[name] = _run(name, sets, CHIEW, tmp / f"{name}-{acceleration:g}.zarr")
                    if not args.pairs:
                        continue
                    calibrated = _run(name, [*sets, f"calibration.pairs={args.pairs}"], CHIEW,
                                      tmp / f"{name}-{acceleration:g}-cal.zarr")
                    rows[name]["coverage_calibrated"] = calibrated.get("coverage")
                    rows[name]["calibration"] = {k: calibrated[k] for k in calibrated
                                                 if k.startswith("calibration") or k == "interval_scale"}
                    rows[name]["calibration"]["wall_seconds"] = calibrated["wall_seconds"]
                else:
                    rows[name] = _run(name, sets, CHIEW, tmp / f"{name}-{acceleration:g}.zarr")
            report["chiew_sense16"][f"{acceleration:g}x"] = rows
        for name in [m for m in args.methods if m in ("mri-cgsense", "mri-cs", "mri-dds")]:
            sets = [f"samples={args.samples}"] if name in SAMPLERS else []
            store = tmp / f"sigpy-{name}.zarr"
            row = _run(name, sets, SIGPY, store)
            if name in SAMPLERS:
                import xarray as xr

                ds = xr.open_zarr(store)
                std, mean = np.asarray(ds["std"].values[0]), np.asarray(ds["mean"].values[0])
                head = mean > 0.2 * np.percentile(mean, 99)
                row["std_median_inside_head_over_mean"] = round(float(np.median(std[head] / mean[head])), 4)
                row["std_over_peak_p99"] = round(float(np.percentile(std, 99) / np.percentile(mean, 99)), 4)
                if args.out:
                    from inversa.data.png import side_by_side, write_png

                    png = Path(f"{args.out}_sigpy_brain_{name}.png")
                    write_png(png, side_by_side([mean, std]))
                    row["png"] = str(png)
            report["sigpy_cartesian_brain"][name] = row
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
