"""Memory: peak resident memory of `inversa run` on a 1,024-slice input versus a 64-slice input.

The same recipe runs on both inputs, each in a fresh process that reports its own peak RSS
(`ru_maxrss`) when the run is over. A pipeline that held the whole input (or output) in memory
would grow with the slice count; the goal is a ratio of at most 1.2. The inputs are sized so that
this is a real test: the 1,024-slice sinogram alone is about as large as the baseline process.

    python benchmarks/memory_scaling.py [--slices 64 1024] [--size 256] [--views 360] [--recipe ct-fbp]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inversa.data.synthetic import simulate_ct_study  # noqa: E402

CHILD = """
import json, resource, sys
from inversa.flows.cli import main
code = main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def write_tiled_study(path: Path, n_slices: int, block: xr.Dataset) -> None:
    """``n_slices`` slices made by repeating a simulated block, written lazily (never all in memory)."""
    reps = -(-n_slices // block.sizes["slice"])
    lazy = block.chunk({"slice": 1})
    tiled = xr.concat([lazy] * reps, dim="slice").isel(slice=slice(0, n_slices))
    tiled = tiled.assign_coords(slice=np.arange(n_slices))
    tiled.to_netcdf(path)


def peak_rss_of_run(recipe: str, measurement: Path, output: Path, sets: list[str]) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    args = ["run", recipe, "--input", str(measurement), "--output", str(output), "--overwrite",
            *sum((["--set", s] for s in sets), [])]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"inversa run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("PEAK_RSS_KB"))
    return int(line.split()[1]) * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs=2, default=[64, 1024], metavar=("SMALL", "LARGE"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=360)
    parser.add_argument("--recipe", default="ct-fbp")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    n_det = int(np.ceil(args.size * 1.5))
    block, _ = simulate_ct_study(
        kind="htc-discs", n_slices=16, image_size=args.size, pixel_size_mm=80.0 / args.size,
        geometry={"geometry": "parallel", "n_det": n_det, "detector_spacing_mm": 80.0 / args.size},
        angles=np.linspace(0, np.pi, args.views, endpoint=False),
        noise={"model": "gaussian", "relative_sigma": 0.01}, seed=3,
    )
    sets = [f"grid.size={args.size}", *args.set]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.slices:
            path = tmp / f"study{n}.nc"
            write_tiled_study(path, n, block)
            rss, seconds = peak_rss_of_run(args.recipe, path, tmp / f"out{n}.zarr", sets)
            results[n] = {"input_bytes": path.stat().st_size, "peak_rss_bytes": rss, "seconds": round(seconds, 2)}
    small, large = (results[n] for n in args.slices)
    ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
    print(json.dumps({
        "benchmark": "memory_scaling",
        "recipe": args.recipe, "sets": sets,
        "image": f"{args.size}x{args.size}", "views": args.views, "detectors": n_det,
        "runs": {str(n): r for n, r in results.items()},
        "ratio_peak_rss_large_vs_small": round(ratio, 3),
        "large_input_vs_small_peak_rss": round(large["input_bytes"] / small["peak_rss_bytes"], 3),
        "goal_ratio_at_most": 1.2,
        "goal_met": ratio <= 1.2,
    }, indent=2))


if __name__ == "__main__":
    main()
