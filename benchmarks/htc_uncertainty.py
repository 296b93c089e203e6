"""Honest uncertainty on real HTC2022 data: every stochastic CT method with its default settings.

For phantoms ta and tb at 90, 60 and 30 degrees (start 0), each stochastic method runs through
the real `reconstruct` flow as a user would run it (calibration on by default, its pairs cached
on disk across the cases as a batch would share them; a fresh cache per invocation so the
first case of each setting pays). Scored against the organisers' full-data FBP (``reconFullFbp``
in 1/pixel, converted to 1/mm) and segmentation:

- MCC of the Otsu-segmented mean (the challenge score),
- coverage of the stored 90 % interval, overall and per std band of the calibration record, and
  the same with the interval widened by the reference's own pixel noise (the reference is an FBP
  of noisy data: an interval for the truth cannot cover its noise in flat air),
- Spearman rank correlation of |mean - reference| with the std (does the std point at the errors),
  and the same after averaging the signed error (and the std) over 5 x 5 pixels,
- seconds of the whole flow (calibration included) and of the calibration alone.

    python benchmarks/htc_uncertainty.py [--phantoms ta tb] [--wedges 90 60 30]
        [--methods gaussian dps dds reddiff] [--output DIR] [--json benchmarks/results/htc_uncertainty.json]
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
from limited_angle_htc import DATA, PIXEL_512_MM, run_case  # noqa: E402
from report import command_line, emit  # noqa: E402

METHODS = ("gaussian", "dps", "dds", "reddiff", "flowdps", "vble", "pnp-hvae", "vae-langevin")
RANK_PIXELS = 50_000  # pixels drawn for the rank correlation (all 262,144 change it by < 0.005)


def scores(store_path: Path, phantom: str) -> dict:
    import xarray as xr
    from scipy.ndimage import binary_fill_holes, uniform_filter
    from scipy.stats import spearmanr

    from inversa.data.readers import read_reference
    from inversa.data.store import ResultStore
    from inversa.models.conformal import coverage_by_band
    from inversa.models.uq import coverage, interval_z

    ds = xr.open_zarr(store_path)
    mean, std, lower, upper = (np.asarray(ds[n].values[0], dtype=np.float64) for n in ("mean", "std", "lower", "upper"))
    ref = np.asarray(read_reference(DATA / f"htc2022_{phantom}_full_recon_fbp.mat").values[0]) / PIXEL_512_MM
    record = ResultStore.open(store_path).read_meta_json("calibration.json") or {}
    error = np.abs(mean - ref).ravel()
    pick = np.random.default_rng(0).choice(error.size, RANK_PIXELS, replace=False)
    rank = spearmanr(error[pick], std.ravel()[pick]).statistic
    # The same with the signed error averaged over 5 x 5 pixels first: the reference's pixel noise
    # (independent of anything the posterior knows) drops fivefold, the structure stays.
    smooth_error = np.abs(uniform_filter(mean - ref, size=5)).ravel()
    rank_smoothed = spearmanr(smooth_error[pick], uniform_filter(std, size=5).ravel()[pick]).statistic
    # Inside the disc (the organisers' segmentation with its holes filled): where the object's
    # structure, not the reference's air offset and noise, makes the errors.
    seg = np.asarray(read_reference(DATA / f"htc2022_{phantom}_full_recon_fbp_seg.mat").values[0]) > 0
    disc = binary_fill_holes(seg).ravel()
    rank_inside = spearmanr(error[disc], std.ravel()[disc]).statistic
    bands = coverage_by_band(record, mean, std, lower, upper, ref) if record else []
    # The reference is itself a noisy FBP: its pixel noise (robust, from neighbour differences)
    # widens an interval for the truth into one for the reference, mean +- sqrt(h^2 + (z s_ref)^2).
    ref_noise = float(np.median(np.abs(np.diff(ref, axis=1))) * 1.4826 / np.sqrt(2))
    half = (upper - lower) / 2
    widened = np.sqrt(half**2 + (interval_z(0.9) * ref_noise) ** 2)
    aware = coverage_by_band(record, mean, std, mean - widened, mean + widened, ref) if record else []

    def rounded(rows):
        return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in b.items()} for b in rows]

    return {
        "coverage": round(float(coverage(lower, upper, ref)), 4),
        "coverage_by_band": rounded(bands),
        "reference_noise_per_mm": round(ref_noise, 6),
        "coverage_reference_noise_aware": round(float(coverage(mean - widened, mean + widened, ref)), 4),
        "coverage_by_band_reference_noise_aware": rounded(aware),
        "rank_correlation": round(float(rank), 4),
        "rank_correlation_5x5": round(float(rank_smoothed), 4),
        "rank_correlation_inside_disc": round(float(rank_inside), 4),
        "coverage_inside_disc": round(float(coverage(lower.ravel()[disc], upper.ravel()[disc], ref.ravel()[disc])), 4),
        "interval_scale": record.get("scale"),
        "band_scales": [round(b["scale"], 4) for b in record.get("bands", [])],
        "calibration_cached": record.get("cached"),
        "calibration_seconds": record.get("seconds"),
        "calibration_coverage_after": record.get("coverage_after"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", nargs="+", default=["ta", "tb"])
    parser.add_argument("--wedges", nargs="+", type=float, default=[90.0, 60.0, 30.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override for every case")
    parser.add_argument("--output", type=Path, help="directory for the stores (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="htc-uncertainty-")
    workdir = args.output or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["INVERSA_CACHE_DIR"] = str(Path(tmp.name) / "cache")  # cold cache: first cases pay
    started = time.perf_counter()
    cases = []
    for method in args.methods:
        for wedge in args.wedges:
            for phantom in args.phantoms:
                reference = DATA / f"htc2022_{phantom}_full_recon_fbp_seg.mat"
                case = run_case(phantom, wedge, 0.0, method, 512, workdir, args.sets, reference)
                case.update(scores(Path(case.pop("store")), phantom))
                cases.append(case)
                print(json.dumps(case), file=sys.stderr, flush=True)
    means = {}
    for method in args.methods:
        for wedge in args.wedges:
            rows = [c for c in cases if c["method"] == method and c["wedge_deg"] == wedge]
            if rows:
                means.setdefault(method, {})[f"{wedge:g}"] = {
                    key: round(float(np.mean([r[key] for r in rows])), 4)
                    for key in ("mcc", "coverage", "coverage_reference_noise_aware", "rank_correlation", "rank_correlation_5x5",
                                "rank_correlation_inside_disc", "coverage_inside_disc",
                                "seconds_flow")
                }
    import torch

    doc = {
        "benchmark": "htc_uncertainty",
        "command": command_line(),
        "reference": "organisers' reconFullFbp / 0.14832 mm (1/mm) for coverage and rank correlation; "
                     "reconFullFbpSeg for the MCC",
        "goals": {"coverage": [0.85, 0.95], "rank_correlation": 0.6, "mcc_30deg_mean": 0.85},
        "cases": cases,
        "means": means,
        "machine": {"threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    emit(doc, args.json)
    tmp.cleanup()


if __name__ == "__main__":
    main()
