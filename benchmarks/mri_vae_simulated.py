"""The MR priors of every family beside CS on simulated brain slices (known truth).

DDS with the diffusion prior, FlowDPS with the flow-matching prior, and VBLE and PnP-HVAE with the
hierarchical VAE, each built as its MRI recipe builds it (fewer steps where an option says so).

Two slices of the MNI152 template (64 x 64, 8 coils, 6x Cartesian undersampling with an 8 %
centre, 1 % noise: the set-up of tests/flows/test_shipped_prior.py), each method built as its MRI
recipe builds it; PSNR of the magnitude mean against the truth, and seconds.

    python benchmarks/mri_vae_simulated.py [--methods cs dds flowdps vble pnp-hvae] [--vble-iters 300]
        [--samples 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import command_line, emit  # noqa: E402

from inversa.data.synthetic_mri import simulate_mri_study  # noqa: E402
from inversa.models.uq import psnr  # noqa: E402
from inversa.resources import priors_dir  # noqa: E402
from inversa.tasks.core.recipe import load_recipe  # noqa: E402
from inversa.tasks.kinds.mri.measurement import slice_batch  # noqa: E402
from inversa.tasks.kinds.mri.methods import MRI_METHODS  # noqa: E402
from inversa.tasks.kinds.mri.posterior import draw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["cs", "dds", "flowdps", "vble", "pnp-hvae"])
    parser.add_argument("--vble-iters", type=int, default=300)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    m, truth = simulate_mri_study(n_slices=2, matrix=(64, 64), n_coils=8, acceleration=6.0, center_fraction=0.08,
                                  relative_noise=0.01, seed=args.seed)
    shape = (m.sizes["slice"], m.sizes["ky"], m.sizes["kx"])
    mask = np.broadcast_to(np.asarray(m["mask"].values, dtype=bool), shape)
    sigma = np.full(shape[0], float(m.attrs["noise_sigma"]), dtype=np.float32)
    batch = slice_batch(m["kspace"].values, mask, m["sensitivity"].values, sigma, torch.device("cpu"))
    ref = np.asarray(truth["reference"].values)
    hvae, diffusion = str(priors_dir() / "mri-brain-hvae-64"), str(priors_dir() / "mri-brain-64")
    flow = str(priors_dir() / "mri-brain-flow-64")
    runs = [("cs", {}, 1), ("dds", {"prior": diffusion, "n_steps": 20, "cg_steps": 5}, args.samples),
            ("flowdps", {**load_recipe("mri-flowdps").method.params, "prior": flow}, args.samples),
            ("vble", {"prior": hvae, "n_iter": args.vble_iters}, args.samples),
            ("pnp-hvae", {"prior": hvae}, args.samples)]
    rows = {}
    for name, params, samples in (run for run in runs if run[0] in args.methods):
        started = time.perf_counter()
        sampler = MRI_METHODS.build(name, params, torch.device("cpu"))
        mean = draw(sampler, batch, 0, range(shape[0]), samples, torch.device("cpu")).mean
        rows[name] = {"params": params, "samples": samples,
                      "psnr_per_slice": [round(float(psnr(a, r, data_range=float(r.max()))), 2) for a, r in zip(mean, ref)],
                      "seconds": round(time.perf_counter() - started, 1)}
        print(name, rows[name], file=sys.stderr, flush=True)
    emit({"benchmark": "mri_vae_simulated", "command": command_line(), "torch_threads": torch.get_num_threads(),
          "study": {"slices": shape[0], "matrix": [64, 64], "coils": 8, "acceleration": 6.0, "noise": 0.01,
                    "seed": args.seed}, "methods": rows}, args.json)


if __name__ == "__main__":
    main()
