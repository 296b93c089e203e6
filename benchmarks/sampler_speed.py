"""Seconds per posterior sample of every learned-prior CT method, as its recipe ships, on one device.

The cost figure the evaluation tables quote comes from runs that shared the CPU with other work;
this one times each sampler alone, in one process, on the same problem, so the ratios between
methods (VBLE's against DPS's above all) are clean. Problem: ``--slices`` simulated HTC-like discs
on the priors' 64 x 64 grid (76 mm), 60 degrees of fan-beam views at 0.5 degree steps, 1 % noise.
Each method is built from its ``ct-*`` recipe (shipped prior and settings), called once to warm up
(one slice, one draw), then timed drawing ``--samples`` per slice for all slices in one call
(synchronised on CUDA). One fit of VBLE serves all draws: its cost per sample falls as draws are
added, which ``--samples`` shows.

    python benchmarks/sampler_speed.py [--device cpu|cuda] [--slices 4] [--samples 4]
        [--methods dps dds flowdps vble pnp-hvae vae-langevin] [--json PATH]

On a device machine without the project's dependencies (prefect, zarr, dask, pydantic), carry
their wheels (see the device README); the script itself needs no Prefect server.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command_line, emit  # noqa: E402
from timing import synchronize  # noqa: E402

from inversa.data.synthetic import simulate_ct_study  # noqa: E402
from inversa.models.resampling import Grid  # noqa: E402
from inversa.models.uq import psnr  # noqa: E402
from inversa.tasks.core.recipe import load_recipe  # noqa: E402
from inversa.tasks.kinds.ct.measurement import geometry_for, operator_for  # noqa: E402
from inversa.tasks.kinds.ct.methods import build_sampler  # noqa: E402

SIZE, FIELD_OF_VIEW_MM = 64, 76.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["dps", "dds", "flowdps", "vble", "pnp-hvae", "vae-langevin"])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    angles = np.deg2rad(np.arange(0.0, 60.0 + 1e-9, 0.5))
    m, truth = simulate_ct_study("htc-discs", n_slices=args.slices, image_size=SIZE, angles=angles,
                                 geometry={"field_of_view_mm": FIELD_OF_VIEW_MM},
                                 noise={"model": "gaussian", "relative_sigma": 0.01}, seed=args.seed)
    op = operator_for(geometry_for(m, Grid(SIZE, FIELD_OF_VIEW_MM / SIZE)), device)
    y = torch.tensor(np.asarray(m.sinogram.values), dtype=torch.float32, device=device)
    sigma, ref = float(m.attrs["noise_sigma"]), truth.reference.values
    rows = {}
    for name in args.methods:
        method = load_recipe(f"ct-{name}").method
        sampler = build_sampler(method.name, method.params, device)
        sampler.sample(y[:1], op, sigma, 1, [torch.Generator(device).manual_seed(0)])  # warm-up
        synchronize(device)
        started = time.perf_counter()
        result = sampler.sample(y, op, sigma, args.samples,
                                [torch.Generator(device).manual_seed(i) for i in range(args.slices)])
        synchronize(device)
        seconds = time.perf_counter() - started
        mean = result.samples.detach().mean(0).cpu().numpy()
        rows[name] = {"recipe": f"ct-{name}", "params": {k: str(v) for k, v in method.params.items()},
                      "nfe_per_call": result.nfe, "seconds_call": round(seconds, 3),
                      "seconds_per_sample": round(seconds / (args.slices * args.samples), 4),
                      "psnr_mean": round(float(np.mean([psnr(a, r, data_range=float(r.max()))
                                                        for a, r in zip(mean, ref)])), 2)}
        print(name, rows[name], file=sys.stderr, flush=True)
    if "dps" in rows:
        for row in rows.values():
            row["speedup_over_dps"] = round(rows["dps"]["seconds_per_sample"] / row["seconds_per_sample"], 3)
    emit({"benchmark": "sampler_speed", "command": command_line(),
          "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                      or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads()},
          "problem": {"slices": args.slices, "samples_per_slice": args.samples, "grid": SIZE,
                      "wedge_deg": 60, "view_step_deg": 0.5, "noise": 0.01, "seed": args.seed},
          "methods": rows}, args.json)


if __name__ == "__main__":
    main()
