"""Field intervals before and after the blocked conformal calibration, through the pipeline itself.

Prints one JSON document (and writes it to ``--out``). Each recipe runs as ``inversa run`` would
(plan, store, the kind's prepare step: calibration and the shared fit, every region, summary),
minus Prefect, with a random ``holdout`` of the observations that neither the calibration nor the
map ever sees. Why each number is what it is:

* **Hidden-point coverage before and after** come from the same run and the same fit:
  ``holdout_coverage_uncalibrated`` is the interval of a new measurement (latent std with the
  observation noise, tasks/kinds/field/intervals.py) with factor 1, ``holdout_coverage`` with the
  calibrated factor. The goal is 0.85-0.95 for a 90 % interval.
* **RMSE** is the map's, from the fit of all non-hidden observations: the calibration's extra
  fit never feeds the map, so calibration cannot change it; ``--compare-off`` runs the recipe
  again with ``calibration=off`` and reports both RMSEs to show it.
* **Reference coverage** (synthetic studies with a known latent field): the stored interval
  against the truth on the grid, before (``mean +- z std``) and after (the stored interval).
* **Cases.** ``darcy``/``heat``: ``inversa field-study`` with ``--study`` settings; ``sst``: the
  NDJFM anomalies (land kept out with ``mask=unobserved``: the file marks land only by missing
  values); ``piv``: the soap-film frames (``--frames``; one frame is a static field, several a
  series fitted frame by frame); ``gravity``: the southern-Africa stations (raw gravity, lon/lat
  projected; the blocked cross-validation of gravity_cv.py is the harder test).

    OMP_NUM_THREADS=2 python benchmarks/field_calibration.py --case darcy \\
        --recipes field-gp field-gp-physics,method.params.source=sine --holdout 0.2 [--set KEY=VALUE] \\
        [--study n_sensors=200] [--compare-off] [--out benchmarks/results/x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import yaml

from inversa.flows.cli_field_study import write_field_study
from inversa.models.uq import gaussian_interval
from inversa.tasks.core.recipe import load_recipe
from inversa.tasks.core.stores import create_store, make_plan
from inversa.tasks.kinds import kind_of

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fields"
STUDY_DEFAULTS = {
    "darcy": {"n": 33, "n_sensors": 200, "coefficient": "lognormal", "source": "sine", "noise_sigma": 0.01, "seed": 1},
    "heat": {"n": 17, "n_times": 6, "n_sensors": 40, "noise_sigma": 0.01, "kappa": 0.05, "seed": 1},
}
GRAVITY_SETS = ["observations={columns: {x: longitude, y: latitude, value: gravity_mgal}, units: mGal, "
                "duplicates: mean}", "grid.spacing=20000", "grid.mask=convex-hull"]


def case_inputs(args, root: Path) -> tuple[str, str | None, list[str]]:
    """(input, reference or None, extra --set items) of a case."""
    if args.case in STUDY_DEFAULTS:
        settings = {**STUDY_DEFAULTS[args.case], **{k: yaml.safe_load(v) for k, v in
                                                     (item.split("=", 1) for item in args.study)}}
        obs, truth = write_field_study(args.case, root / f"{args.case}.nc", settings)
        return str(obs), str(truth), []
    if args.case == "sst":
        return str((SHARED / "eofs" / "sst_ndjfm_anom.nc").resolve()), None, ["observations.units=K", "mask=unobserved"]
    if args.case == "piv":
        frames = sorted((SHARED / "pivpy_soapfilm").resolve().glob("*.vec"))[: args.frames]
        if len(frames) == 1:
            return str(frames[0]), None, []
        folder = root / "piv"
        folder.mkdir()
        for frame in frames:
            (folder / frame.name).symlink_to(frame)
        return str(folder), None, []
    if args.case == "gravity":
        return str((SHARED / "fatiando" / "southern-africa-gravity.csv.xz").resolve()), None, GRAVITY_SETS
    raise SystemExit(f"unknown case {args.case}")


def run_recipe(name: str, inp: str, reference: str | None, sets: list[str], output: Path) -> dict:
    recipe = load_recipe(name, sets, input=inp, output=str(output), reference=reference)
    kind = kind_of(recipe)
    started = time.perf_counter()
    plan = make_plan(recipe)
    store = create_store(recipe, recipe.digest(), plan, overwrite=True)
    t0 = time.perf_counter()
    message = kind.prepare(store, recipe).message if plan.prepare else ""
    prepare_s = time.perf_counter() - t0
    for index in store.pending_regions():
        kind.reconstruct_region(store, index, recipe)
    summary = kind.summarize(store)
    out = {"recipe": name, "sets": sets, "seconds": time.perf_counter() - started, "prepare_seconds": prepare_s,
           "prepare": message}
    keys = ("holdout_points", "holdout_rmse", "holdout_coverage_uncalibrated", "holdout_coverage", "rmse",
            "coverage", "interval_scale", "calibration_units", "calibration_coverage_before",
            "calibration_coverage_after", "fit_seconds", "k_mean", "kappa_mean")
    out.update({k: summary[k] for k in keys if k in summary})
    calibration = store.read_meta_json("calibration.json")
    if calibration is not None:
        out["calibration"] = {k: calibration[k] for k in ("scale", "units", "units_kind", "withheld_points",
                                                          "withheld_fraction", "fits", "steps", "seconds",
                                                          "coverage_before", "coverage_after")}
        out["calibration"]["bands"] = [{k: b[k] for k in ("std_low", "std_high", "scale", "coverage_before",
                                                          "coverage_after")} for b in calibration["bands"]]
    if reference is not None:
        ds = xr.open_zarr(output)
        mean, std, lower, upper, ref = (np.asarray(ds[v].values, dtype=np.float64)
                                        for v in ("mean", "std", "lower", "upper", "reference"))
        ok = np.isfinite(mean) & np.isfinite(ref)
        lo, hi = gaussian_interval(mean, std, recipe.credible_level)
        out["reference_coverage_uncalibrated"] = float(np.mean((lo[ok] <= ref[ok]) & (ref[ok] <= hi[ok])))
        out["reference_coverage"] = float(np.mean((lower[ok] <= ref[ok]) & (ref[ok] <= upper[ok])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True, choices=["darcy", "heat", "sst", "piv", "gravity"])
    ap.add_argument("--recipes", nargs="+", required=True,
                    help="recipe names, each optionally with its own overrides: NAME,KEY=VALUE,...")
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--set", action="append", default=[], help="recipe override for every recipe")
    ap.add_argument("--study", action="append", default=[], help="field-study setting (darcy, heat)")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--compare-off", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inp, reference, case_sets = case_inputs(args, root)
        sets = case_sets + [f"holdout.fraction={args.holdout}"] + args.set
        runs = []
        for item in args.recipes:
            name, *own = item.split(",")
            run = run_recipe(name, inp, reference, sets + own, root / f"{name}.zarr")
            if args.compare_off:
                off = run_recipe(name, inp, reference, sets + own + ["calibration=off"], root / f"{name}-off.zarr")
                run["calibration_off"] = {k: off.get(k) for k in ("holdout_rmse", "holdout_coverage", "rmse",
                                                                  "coverage", "seconds")}
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    result = {"benchmark": "field_calibration", "command": "python " + shlex.join(sys.argv),
              "case": args.case, "holdout": args.holdout, "threads": torch.get_num_threads(),
              "goal": "hidden-point coverage of the 90 % interval in 0.85-0.95 after calibration",
              "runs": runs}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
