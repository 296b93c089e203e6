"""HTC2022 limited-angle benchmark: the real `reconstruct` flow on the measured phantoms ta and tb.

Each case (phantom, wedge, start angle, method) is one in-process run of the `htc2022-limited`
recipe (the diffusion samplers dps/dds/reddiff: their own `htc2022-<method>` recipe, which samples
on the shipped prior's 64 x 64 grid and writes the mean on the output grid) into its own store; the MCC is the pipeline's own score (Otsu segmentation of the mean
against the organisers' segmentation), so what is measured is what a user gets from
`inversa run`. Prints one JSON document: every case's MCC and seconds, means per wedge and
method, and the ASTRA SIRT reference points of DESIGN.md (measured elsewhere with ASTRA 2.5,
200 non-negative iterations, start 0, 512 x 512 grid) beside ours.

    python benchmarks/limited_angle_htc.py [--grid 512|256] [--phantoms ta tb] [--wedges 90 60]
        [--starts 0 90 180] [--methods fbp tv gaussian dps dds reddiff] [--set method.params.lam=3 ...]
        [--gaussian-set samples=4] [--output DIR] [--quick]

At `--grid 256` (0.29664 mm pixels, twice the organisers') the organisers' 512 x 512
segmentation is downsampled by 2 x 2 majority (a tie counts as foreground) and written as an
.npy reference beside the stores, so the pipeline still computes the MCC. Projector matrices are
cached per process by geometry: the loops run wedge, start, phantom, method so each (wedge,
start) builds its projector once (ta and tb share the scanner geometry).
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

REPO = Path(__file__).resolve().parents[1]

DATA = REPO / ".." / "shared" / "data" / "ct" / "htc2022"
RECIPE = "htc2022-limited"
PIXEL_512_MM = 0.14832
# DESIGN.md: ASTRA 2.5 SIRT, 200 iterations, non-negative, 512 x 512, start 0 degrees.
# Methods with a recipe of their own (htc2022-<method>.yaml): the samplers with a learned prior, and gaussian.
OWN_RECIPES = ("gaussian", "dps", "dds", "reddiff", "flowdps", "vble", "pnp-hvae", "vae-langevin")  # htc2022-<method> recipes
ASTRA_SIRT = {"ta": {90: 0.81, 60: 0.65, 30: 0.60}, "tb": {90: 0.77, 60: 0.64, 30: 0.46}}


def majority_downsample(segmentation: np.ndarray, factor: int = 2) -> np.ndarray:
    """Block-majority downsampling of a binary (slice, y, x) segmentation; ties count as foreground."""
    s, h, w = segmentation.shape
    if h % factor or w % factor:
        raise ValueError(f"segmentation of {h} x {w} cannot be split into {factor} x {factor} blocks")
    blocks = (segmentation > 0).reshape(s, h // factor, factor, w // factor, factor)
    return (blocks.mean(axis=(2, 4)) >= 0.5).astype(np.uint8)


def reference_for(phantom: str, grid: int, workdir: Path) -> Path:
    """The organisers' segmentation at the reconstruction grid (a downsampled .npy copy below 512)."""
    path = DATA / f"htc2022_{phantom}_full_recon_fbp_seg.mat"
    if grid == 512:
        return path
    from inversa.data.readers import read_reference

    seg = read_reference(path).values
    factor = 512 // grid
    if factor * grid != 512:
        raise ValueError(f"--grid {grid}: expected 512 divided by a whole number")
    out = workdir / f"htc2022_{phantom}_seg_{grid}.npy"
    np.save(out, majority_downsample(seg, factor))
    return out


def run_case(phantom, wedge, start, method, grid, workdir, extra_sets, reference) -> dict:
    from inversa.tasks.core.recipe import load_recipe
    from inversa.flows.reconstruct import reconstruct

    overrides = [f"angular_range_deg={wedge}", f"start_angle_deg={start}"]
    recipe_name = RECIPE
    if method in OWN_RECIPES:  # its own HTC recipe (the shipped prior, or a working grid)
        recipe_name = f"htc2022-{method}"
    elif method != load_recipe(RECIPE).method.name:  # another method: the recipe's parameters are not its own
        overrides += [f"method.name={method}", "method.params={}"]
    if grid != 512:
        overrides += [f"grid.size={grid}", f"grid.pixel_size_mm={PIXEL_512_MM * 512 / grid}"]
    overrides += extra_sets
    tag = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in "-".join(s.split("=")[-1] for s in extra_sets))
    store = workdir / f"{phantom}-{wedge:g}-{start:g}-{method}-{grid}{'-' + tag if tag else ''}.zarr"
    recipe = load_recipe(
        recipe_name, overrides,
        input=str(DATA / f"htc2022_{phantom}_full.mat"), reference=str(reference), output=str(store),
    )
    started = time.perf_counter()
    result = reconstruct(recipe, overwrite=True)
    wall = time.perf_counter() - started
    return {
        "phantom": phantom, "wedge_deg": wedge, "start_deg": start, "method": method,
        "params": recipe.method.params, "samples": None if method in ("fbp", "tv") else recipe.samples, "recipe": recipe_name,
        "mcc": round(float(result["mcc"]), 4),
        "seconds_region": round(float(result["seconds"]), 2),  # inside the region task (incl. projector build if first)
        "seconds_flow": round(wall, 2),  # the whole in-process flow run
        "store": str(store),
    }


def method_runs(methods, tv_lams, per_method) -> list[tuple[str, list[str]]]:
    """(method, its overrides) in run order; tv becomes one run per swept lam when asked."""
    runs = []
    for method in methods:
        if method == "tv" and tv_lams:
            runs += [("tv", per_method["tv"] + [f"method.params.lam={lam:g}"]) for lam in tv_lams]
        else:
            runs.append((method, per_method.get(method, [])))
    return runs


def label(case: dict) -> str:
    lam = case["params"].get("lam") if case["method"] == "tv" else None
    return case["method"] if lam is None else f"tv(lam={lam:g})"


def summarise(cases: list[dict]) -> dict:
    means: dict = {}
    for wedge in sorted({c["wedge_deg"] for c in cases}, reverse=True):
        for method in dict.fromkeys(label(c) for c in cases):
            rows = [c for c in cases if c["wedge_deg"] == wedge and label(c) == method]
            if rows:
                means.setdefault(f"{wedge:g}", {})[method] = {
                    "mcc": round(float(np.mean([r["mcc"] for r in rows])), 4),
                    "seconds_flow": round(float(np.mean([r["seconds_flow"] for r in rows])), 2),
                    "cases": len(rows),
                }
    return means


def versus_astra(cases: list[dict]) -> list[dict]:
    rows = []
    for c in cases:
        ref = ASTRA_SIRT.get(c["phantom"], {}).get(int(c["wedge_deg"]))
        if c["start_deg"] == 0 and ref is not None:
            rows.append({
                "phantom": c["phantom"], "wedge_deg": c["wedge_deg"], "method": label(c),
                "mcc": c["mcc"], "astra_sirt_mcc": ref, "difference": round(c["mcc"] - ref, 4),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, choices=(512, 256), default=512)
    parser.add_argument("--phantoms", nargs="+", default=["ta", "tb"])
    parser.add_argument("--wedges", nargs="+", type=float, default=[90.0, 60.0])
    parser.add_argument("--starts", nargs="+", type=float, default=[0.0, 90.0, 180.0])
    parser.add_argument("--methods", nargs="+", default=["fbp", "tv", "gaussian"])
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="recipe override for every method, e.g. samples=4; the recipe's own method keeps its params, others start from {}")
    parser.add_argument("--gaussian-set", action="append", default=[],
                        help="recipe override for the gaussian method only, e.g. samples=4")
    parser.add_argument("--tv-set", action="append", default=[], help="recipe override for tv only")
    parser.add_argument("--tv-lams", nargs="+", type=float, default=[],
                        help="instead of tv's default, run tv once per lam value (a sweep; cases named tv(lam=X))")
    parser.add_argument("--output", type=Path, help="directory for the stores (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="ta only, 90 degrees, start 0")
    args = parser.parse_args()
    if args.quick:
        args.phantoms, args.wedges, args.starts = ["ta"], [90.0], [0.0]
    for phantom in args.phantoms:
        for suffix in ("_full.mat", "_full_recon_fbp_seg.mat"):
            if not (DATA / f"htc2022_{phantom}{suffix}").is_file():
                sys.exit(f"{DATA / f'htc2022_{phantom}{suffix}'}: missing (see ../shared/data/SOURCES.md)")

    per_method = {"gaussian": args.gaussian_set, "tv": args.tv_set}
    tmp = None
    if args.output is None:
        tmp = tempfile.TemporaryDirectory(prefix="htc2022-limited-")
        workdir = Path(tmp.name)
    else:
        workdir = args.output
        workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        references = {p: reference_for(p, args.grid, workdir) for p in args.phantoms}
        cases = []
        for wedge in args.wedges:
            for start in args.starts:
                for phantom in args.phantoms:
                    for method, sets in method_runs(args.methods, args.tv_lams, per_method):
                        case = run_case(phantom, wedge, start, method, args.grid, workdir,
                                        args.sets + sets, references[phantom])
                        if tmp is not None:
                            case.pop("store")
                        cases.append(case)
                        print(json.dumps(case), file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    import torch

    print(json.dumps({
        "benchmark": "htc2022_limited",
        "recipe": RECIPE,
        "grid": {"size": args.grid, "pixel_size_mm": PIXEL_512_MM * 512 / args.grid},
        "reference_segmentation": "organisers' reconFullFbpSeg" + (
            "" if args.grid == 512 else f", 2x2-majority downsampled to {args.grid} (tie = foreground)"),
        "score": "pipeline metric_mcc: Otsu segmentation of the mean vs the reference segmentation",
        "overrides": {"all": args.sets, **{k: v for k, v in per_method.items() if v}},
        "cases": cases,
        "means": summarise(cases),
        "versus_astra_sirt": {
            "reference": "DESIGN.md: ASTRA 2.5 SIRT, 200 iterations, non-negative, 512 x 512, start 0",
            "rows": versus_astra(cases),
        },
        "machine": {"threads": torch.get_num_threads(), "device": "cpu" if not torch.cuda.is_available() else "cuda"},
        "seconds_total": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
