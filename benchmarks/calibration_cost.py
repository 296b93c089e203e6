"""What calibration costs a batch: eight HTC2022-like datasets of one scanner, default settings.

Eight one-slice studies are simulated in the HTC2022 scanner's geometry (fan beam, 560 detectors
of 0.2 mm, source 410.66 mm and detector 553.74 mm from the source, 721 views over a full turn;
the organisers' 512 x 512 grid of 0.14832 mm) with other discs each and the measured noise level
of the real ta scan (Gaussian, sigma 0.0072 in log units). Each runs through the real
`reconstruct` flow with a stochastic HTC recipe as shipped (calibration on by default), one after
another, sharing the on-disk calibration cache as a batch does; the cache starts empty. The
cost ratio is the calibration's seconds (the runs that simulated and reconstructed pairs)
over the posterior's seconds (every region of the eight runs). A rerun of the batch is timed
too: it finds every dataset's pairs in the cache. With the truth known, the coverage of each
dataset's 90 % interval is reported overall and per std band of the calibration.

    python benchmarks/calibration_cost.py [--recipe htc2022-dds] [--wedge 60] [--datasets 8]
        [--json benchmarks/results/calibration_cost.json]
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
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command_line, emit  # noqa: E402

HTC_GEOMETRY = {"geometry": "fan", "n_det": 560, "detector_spacing_mm": 0.2, "source_origin_mm": 410.66,
                "origin_detector_mm": 553.74 - 410.66}
HTC_GRID = (512, 0.14832)
NOISE_SIGMA = 0.0072  # the real ta sinogram's estimated noise (tasks/kinds/ct/calibration.measurement_noise_sigma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="htc2022-dds")
    parser.add_argument("--wedge", type=float, default=60.0)
    parser.add_argument("--datasets", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import xarray as xr

    from inversa.data.store import ResultStore
    from inversa.models.conformal import coverage_by_band
    from inversa.data.synthetic import write_study
    from inversa.flows.reconstruct import reconstruct
    from inversa.tasks.core.recipe import load_recipe

    tmp = tempfile.TemporaryDirectory(prefix="calibration-cost-")
    work = Path(tmp.name)
    os.environ["INVERSA_CACHE_DIR"] = str(work / "cache")
    angles = np.deg2rad(np.arange(721) * 0.5)
    studies = [write_study(work / "inputs", name=f"disc{i}", kind="htc-discs", n_slices=1, image_size=HTC_GRID[0],
                           pixel_size_mm=HTC_GRID[1], geometry=HTC_GEOMETRY, angles=angles,
                           noise={"model": "gaussian", "sigma": NOISE_SIGMA}, seed=100 + i)
               for i in range(args.datasets)]
    started = time.perf_counter()
    rows = []
    for attempt in ("first", "rerun"):
        for i, (measurement, truth) in enumerate(studies):
            recipe = load_recipe(args.recipe, [f"angular_range_deg={args.wedge:g}"], input=str(measurement),
                                 reference=str(truth), output=str(work / attempt / f"disc{i}.zarr"))
            wall = time.perf_counter()
            result = reconstruct(recipe)
            record = ResultStore.open(result["store"]).read_meta_json("calibration.json") or {}
            ds = xr.open_zarr(result["store"])
            bands = coverage_by_band(record, *(ds[n].values for n in ("mean", "std", "lower", "upper", "reference")))
            rows.append({"attempt": attempt, "dataset": f"disc{i}", "seconds_flow": round(time.perf_counter() - wall, 2),
                         "seconds_posterior": round(float(result["seconds"]), 2),
                         "calibration_seconds": record.get("seconds"), "calibration_cached": record.get("cached"),
                         "calibration_draws": int(record.get("pairs", 0)) * int(record.get("samples", 0)),
                         "posterior_draws": int(recipe.samples) * int(result.get("slices", 1) or 1),
                         "coverage": round(float(result["coverage"]), 4), "psnr": round(float(result["psnr"]), 2),
                         "coverage_by_band": [round(b["coverage"], 4) for b in bands],
                         "band_fractions": [round(b["fraction"], 4) for b in bands],
                         "noise_sigma_used": record.get("noise_sigma"),
                         "measured_noise_sigma": record.get("measured_noise_sigma")})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {}
    for attempt in ("first", "rerun"):
        mine = [r for r in rows if r["attempt"] == attempt]
        posterior = sum(r["seconds_posterior"] for r in mine)
        calibration = sum(r["calibration_seconds"] for r in mine if not r["calibration_cached"])
        summary[attempt] = {"posterior_seconds": round(posterior, 2), "calibration_seconds": round(calibration, 2),
                            "calibration_over_posterior": round(calibration / posterior, 4),
                            # Sampler work, whatever else shares the machine: images through the whole chain.
                            "calibration_draws_over_posterior_draws": round(
                                sum(r["calibration_draws"] for r in mine if not r["calibration_cached"])
                                / sum(r["posterior_draws"] for r in mine), 4),
                            "calibrations_computed": sum(not r["calibration_cached"] for r in mine),
                            "mean_coverage": round(float(np.mean([r["coverage"] for r in mine])), 4),
                            "mean_coverage_by_band": [round(float(v), 4) for v in
                                                      np.mean([r["coverage_by_band"] for r in mine], axis=0)]}
    import torch

    doc = {"benchmark": "calibration_cost",
           "command": command_line(),
           "recipe": args.recipe, "wedge_deg": args.wedge, "datasets": args.datasets,
           "goal": "calibration at most 20 % of the batch's posterior time", "summary": summary, "runs": rows,
           "machine": {"threads": torch.get_num_threads()}, "seconds_total": round(time.perf_counter() - started, 1)}
    emit(doc, args.json)
    tmp.cleanup()


if __name__ == "__main__":
    main()
