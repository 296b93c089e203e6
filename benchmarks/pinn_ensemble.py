"""Seconds per training step of a PINN deep ensemble: one vmapped pass versus a Python loop.

Both variants train the same M members (same initial parameters, anchors, perturbed data and
collocation points) on the heat equation with unknown kappa, in the same process:

* ``batched``: ``PINNEnsembleSolver.ensemble_loss`` - torch.vmap over the parameters stacked by
  ``torch.func.stack_module_state``, one backward, one Adam step on the stacked tensors.
* ``loop``: M separate ``FieldNet`` modules; a Python loop calls ``member_loss`` (the very
  function the batched variant vmaps) with each module's own parameters, the M losses are summed,
  one backward, one Adam step over all modules' parameters. Only the batching over members
  differs; derivatives at the points are computed by torch.func in both.

The step-0 losses of the two variants are printed as a check that they compute the same thing.

    python benchmarks/pinn_ensemble.py [--members 8] [--width 32] [--depth 3] [--collocation 256]
                                       [--obs 500] [--steps 20] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import time


import numpy as np  # noqa: E402
import torch  # noqa: E402

from inversa.models.solvers.pinn import PINNEnsembleSolver  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--collocation", type=int, default=256)
    ap.add_argument("--obs", type=int, default=500)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(a.obs, 3))
    x[:, 2] *= 0.5
    y = np.exp(-2 * 0.1 * math.pi ** 2 * x[:, 2]) * np.sin(math.pi * x[:, 0]) * np.sin(math.pi * x[:, 1])
    solver = PINNEnsembleSolver("heat", members=a.members, width=a.width, depth=a.depth, steps=1,
                                n_collocation=a.collocation, seed=0, device=a.device)
    solver.fit(x, y, 1e-2, domain=[(0, 1), (0, 1), (0, 0.5)])  # builds members, anchors, data
    nets = solver.member_modules()
    stacked = {k: v.detach().clone().requires_grad_(True) for k, v in solver.params.items()}
    loop_params = [dict(net.named_parameters()) for net in nets]
    anchors = [{k: v[m] for k, v in solver.anchors.items()} for m in range(a.members)]

    opt_b = torch.optim.Adam(list(stacked.values()), lr=1e-3)
    opt_l = torch.optim.Adam([p for net in nets for p in net.parameters()], lr=1e-3)

    def step_batched(z, f):
        loss = solver.ensemble_loss(stacked, z, f).sum()
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()
        return float(loss.detach())

    def step_loop(z, f):
        loss = sum(solver.member_loss(loop_params[m], anchors[m], solver._y_members[m], z, f)
                   for m in range(a.members))
        opt_l.zero_grad(set_to_none=True)
        loss.backward()
        opt_l.step()
        return float(loss.detach())

    g = torch.Generator().manual_seed(1)
    batches = [solver.collocation(g) for _ in range(a.warmup + a.steps)]
    first = {"batched": step_batched(*batches[0]), "loop": step_loop(*batches[0])}
    result = {"members": a.members, "width": a.width, "depth": a.depth, "collocation": a.collocation,
              "observations": a.obs, "steps_timed": a.steps, "threads": a.threads,
              "torch": torch.__version__, "step0_loss": first,
              "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"}
    for name, step in (("batched", step_batched), ("loop", step_loop)):
        for z, f in batches[1:a.warmup]:
            step(z, f)
        t0 = time.perf_counter()
        for z, f in batches[a.warmup:]:
            step(z, f)
        result[f"{name}_seconds_per_step"] = (time.perf_counter() - t0) / a.steps
    result["speedup_loop_over_batched"] = result["loop_seconds_per_step"] / result["batched_seconds_per_step"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
