"""Each field solver's ``estimated_memory_bytes`` against the peak memory its fit + predict takes.

The planner sizes workers by these estimates, so each must be within a factor of 3 of what a
fit followed by a full prediction tile really allocates, for a small and a larger n.

How the peak is measured: in one child process (so earlier tests' allocations do not count),
glibc is told to serve every block of 64 KiB or more by its own mapping, returned on free
(``mallopt``: no heap reuse hides an allocation, no freed block stays resident), the kernel's
high-water mark of resident memory is reset (``/proc/self/clear_refs``, Linux >= 4.0) after a
small warm-up run, and the peak is the high-water mark minus the resident memory before the
fit. That counts torch's and numpy's allocations alike, which tracemalloc does not (torch's CPU
allocator bypasses it). Where this is unavailable (not Linux/glibc) the measured checks skip;
the scaling checks below run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from inversa.models.solvers import SOLVERS, ExactGPSolver, PhysicsGPSolver, PINNEnsembleSolver, SparseGPSolver

# (method, constructor settings, fit keywords, small n, larger n): sizes big enough to measure
# (several MB at least), small enough to take seconds on two cores.
CASES = [
    ("gp", {"max_iter": 3}, {}, 300, 800),
    ("sparse-gp", {"inducing": 64, "min_steps": 5, "epochs": 0}, {}, 2000, 20000),
    ("gp-physics", {"max_iter": 3, "n_collocation": 128}, {"source": 1.0, "boundary": 0.0}, 200, 600),
    ("pinn", {"pde": "poisson", "members": 4, "width": 32, "depth": 2, "steps": 3, "n_collocation": 256},
     {"source": 1.0, "boundary": 0.0, "noise": True}, 1000, 10000),
    ("pinn-flow", {"pde": "incompressible", "members": 4, "width": 32, "depth": 2, "steps": 3},
     {"noise": True}, 5000, None),
    ("pinn-heat", {"pde": "heat", "members": 4, "width": 32, "depth": 3, "steps": 3, "n_collocation": 512},
     {"boundary": 0.0, "noise": True}, 2000, None),
]


def _measurable() -> str | None:
    """Why the peak cannot be measured here, or None."""
    if not sys.platform.startswith("linux"):
        return "peak measurement needs Linux (/proc/self/clear_refs)"
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "peak measurement needs glibc (mallopt)"
    if not os.access("/proc/self/clear_refs", os.W_OK):
        return "/proc/self/clear_refs is not writable"
    return None


@pytest.fixture(scope="module")
def measured():
    reason = _measurable()
    if reason:
        pytest.skip(reason)
    runs = []
    for key, settings, fit_kw, small, large in CASES:
        method = "pinn" if key.startswith("pinn") else key
        runs += [{"key": key, "method": method, "settings": settings, "fit_kw": fit_kw, "n": n}
                 for n in (small, large) if n is not None]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, json.dumps(runs)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(runs), out.stdout
    return {(r["key"], r["n"]): r for r in rows}


@pytest.mark.parametrize("key", [c[0] for c in CASES])
def test_estimate_is_within_a_factor_of_three_of_the_measured_peak(measured, key):
    rows = [r for (k, _), r in measured.items() if k == key]
    assert rows
    for r in rows:
        ratio = r["estimated"] / r["measured"]
        assert r["measured"] > 2e6, r  # a few MB at least: the measurement resolves it
        assert 1 / 3 <= ratio <= 3, (key, r["n"], r["estimated"], r["measured"])


# ---------------------------------------------------------------- the formulas' scaling (everywhere)

def test_exact_gp_is_quadratic_in_the_points_it_factors():
    s = ExactGPSolver()
    big = [s.estimated_memory_bytes(n) for n in (20_000, 40_000)]
    assert big[1] / big[0] == pytest.approx(4.0, rel=0.05)  # n^2 terms dominate
    two = ExactGPSolver(kernel="matern52+matern52")
    assert two.estimated_memory_bytes(20_000) > s.estimated_memory_bytes(20_000)  # more per kernel term
    # Hyperparameters on a subset: the optimisation no longer dominates, the posterior still is n^2.
    sub = ExactGPSolver(fit_max_points=1000)
    assert sub.estimated_memory_bytes(20_000) < s.estimated_memory_bytes(20_000)
    assert sub.estimated_memory_bytes(40_000) / sub.estimated_memory_bytes(20_000) == pytest.approx(4.0, rel=0.1)


def test_sparse_gp_is_linear_in_n_and_quadratic_in_inducing_points():
    s = SparseGPSolver(inducing=512)
    a, b, c = (s.estimated_memory_bytes(n) for n in (1_000_000, 2_000_000, 4_000_000))
    assert (c - b) == pytest.approx(2 * (b - a), rel=1e-6)  # linear in n beyond the k-means sample
    assert (b - a) == pytest.approx(8 * 8 * 1_000_000, rel=1e-6)  # the data: 8 numbers per point
    m = [SparseGPSolver(inducing=k, batch_size=64, tile_size=64).estimated_memory_bytes(10 ** 6) for k in (4096, 8192)]
    assert m[1] / m[0] > 3.0  # m^2 matrices dominate at large m


def test_physics_gp_is_quadratic_in_the_joint_system():
    s = PhysicsGPSolver(n_collocation=256, n_boundary=64)
    e = [s.estimated_memory_bytes(n) for n in (10_000 - 320, 20_000 - 320)]
    assert e[1] / e[0] == pytest.approx(4.0, rel=0.02)
    assert PhysicsGPSolver(n_collocation=2048).estimated_memory_bytes(100) > s.estimated_memory_bytes(100)


def test_pinn_grows_with_n_members_width_and_collocation():
    base = dict(pde="poisson", members=4, width=32, depth=2, n_collocation=256)
    s = PINNEnsembleSolver(**base)
    a, b, c = (s.estimated_memory_bytes(n) for n in (100_000, 200_000, 300_000))
    assert c - b == pytest.approx(b - a, rel=1e-6) and b > a  # linear in n
    for change in ({"members": 8}, {"width": 64}, {"depth": 3}, {"n_collocation": 1024}, {"dtype": "float64"}):
        assert PINNEnsembleSolver(**{**base, **change}).estimated_memory_bytes(100_000) > a, change
    # Minibatches cap the activations: beyond the batch, only the stored data grows with n.
    batched = PINNEnsembleSolver(**base, batch_size=512)
    assert batched.estimated_memory_bytes(200_000) < s.estimated_memory_bytes(200_000)
    heat = PINNEnsembleSolver(**{**base, "pde": "heat"})
    assert heat.estimated_memory_bytes(1000) > s.estimated_memory_bytes(1000)  # d = 3, boundary at 11 times


def test_every_solver_reports_an_int_and_rejects_a_bad_n():
    for cls in SOLVERS.values():
        solver = cls()
        assert isinstance(solver.estimated_memory_bytes(1000), int) and solver.estimated_memory_bytes(1000) > 0
        with pytest.raises(ValueError, match="n_observations"):
            solver.estimated_memory_bytes(-1)


# ---------------------------------------------------------------- the child process

def _child(runs: list[dict]) -> None:
    import ctypes
    import gc
    import re

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)   # M_MMAP_THRESHOLD: blocks >= 64 KiB get their own mapping ...
    libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD: ... and the heap top is returned promptly
    import torch

    torch.set_num_threads(1)

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return 1024 * int(re.search(key + r":\s+(\d+)", f.read()).group(1))

    def run(method, settings, fit_kw, n):
        solver = SOLVERS[method](**settings)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, (n, solver.input_dim))
        u = np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1])
        y = u if solver.components is None else np.column_stack([u, np.cos(3 * x[:, 1])])
        kw = dict(fit_kw)
        noise = 0.01 if kw.pop("noise", False) else None
        solver.fit(x, y + 0.01 * rng.standard_normal(y.shape), noise, **kw)
        tile = getattr(solver, "tile_size", 4096)  # a full tile of queries, and a ragged one
        solver.predict(np.random.default_rng(1).uniform(0, 1, (2 * tile + 7, solver.input_dim)))
        return solver

    for r in runs:
        run(r["method"], r["settings"], r["fit_kw"], max(16, r["settings"].get("inducing", 16)))  # warm-up
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark of resident memory
        before = status("VmRSS")
        solver = run(r["method"], r["settings"], r["fit_kw"], r["n"])
        peak = status("VmHWM") - before
        print(json.dumps({**r, "measured": peak, "estimated": solver.estimated_memory_bytes(r["n"])}), flush=True)
        del solver
        gc.collect()


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
