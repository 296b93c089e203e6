"""Field solvers on a GPU give what they give on the CPU (skipped where there is no CUDA device).

The exact GP stays float64 on the GPU, so its posterior must agree with the CPU one to rounding;
the PINN is float32 with different kernels, so it must agree to float32 tolerance, and a fit made
on the GPU must move to the CPU through ``state()`` without changing a prediction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inversa.models.solvers import ExactGPSolver, PINNEnsembleSolver

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _scattered(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 2)) * [5e4, 3e4] + [2e5, 6e6]
    y = 30 * np.sin(x[:, 0] / 8e3) + 10 * np.cos(x[:, 1] / 3e3) + rng.standard_normal(n)
    xq = rng.uniform(0, 1, size=(300, 2)) * [5e4, 3e4] + [2e5, 6e6]
    return x, y, xq


@pytest.mark.parametrize("kernel", ["matern52", "matern52+rbf"])
def test_exact_gp_on_cuda_matches_cpu(kernel):
    x, y, xq = _scattered()
    cpu = ExactGPSolver(kernel=kernel, max_iter=30).fit(x, y)
    gpu = ExactGPSolver(kernel=kernel, max_iter=30, device="cuda").fit(x, y)
    np.testing.assert_allclose(np.ravel(gpu.hyperparameters()["lengthscale"]),
                               np.ravel(cpu.hyperparameters()["lengthscale"]), rtol=1e-5)
    assert gpu.info["log_marginal_likelihood"] == pytest.approx(cpu.info["log_marginal_likelihood"], rel=1e-8)
    m_cpu, s_cpu = cpu.predict(xq, include_noise=True)
    m_gpu, s_gpu = gpu.predict(xq, include_noise=True, tile_size=64)
    np.testing.assert_allclose(m_gpu, m_cpu, rtol=0, atol=1e-5 * np.std(y))
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-5)


def test_exact_gp_fitted_on_cuda_restores_on_the_cpu():
    """The FieldSolver state holds the raw parameters as numpy arrays: a GPU fit re-conditions on the CPU."""
    x, y, xq = _scattered()
    gpu = ExactGPSolver(max_iter=30, device="cuda").fit(x, y)
    cpu = ExactGPSolver(max_iter=30).restore(gpu.state(), x, y)
    hg, hc = gpu.hyperparameters(), cpu.hyperparameters()
    np.testing.assert_allclose(hc["lengthscale"], hg["lengthscale"], rtol=1e-12)
    for key in ("outputscale", "noise", "mean"):
        assert hc[key] == pytest.approx(hg[key], rel=1e-12)
    m_gpu, s_gpu = gpu.predict(xq)
    m_cpu, s_cpu = cpu.predict(xq)
    np.testing.assert_allclose(m_cpu, m_gpu, rtol=0, atol=1e-5 * np.std(y))
    np.testing.assert_allclose(s_cpu, s_gpu, rtol=1e-5)


def _heat(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 3))
    x[:, 2] *= 0.5
    y = np.exp(-2 * 0.1 * math.pi ** 2 * x[:, 2]) * np.sin(math.pi * x[:, 0]) * np.sin(math.pi * x[:, 1])
    return x, y


def test_pinn_ensemble_on_cuda_matches_cpu_and_moves_back_through_its_state():
    x, y = _heat()
    settings = dict(members=4, width=16, depth=2, steps=30, n_collocation=64, seed=3)
    domain = [(0, 1), (0, 1), (0, 0.5)]
    cpu = PINNEnsembleSolver("heat", **settings).fit(x, y, 1e-2, domain=domain)
    gpu = PINNEnsembleSolver("heat", device="cuda", **settings).fit(x, y, 1e-2, domain=domain)
    # Same seeds draw the same collocation points and perturbed data on either device.
    np.testing.assert_allclose(gpu.info["loss_tail"], cpu.info["loss_tail"], rtol=1e-3)
    np.testing.assert_allclose(gpu.info["parameter_members"], cpu.info["parameter_members"], rtol=1e-3)
    xq = x[:50]
    m_gpu, s_gpu = gpu.predict(xq)
    m_cpu, _ = cpu.predict(xq)
    np.testing.assert_allclose(m_gpu, m_cpu, atol=1e-3)
    state = gpu.state()
    back = PINNEnsembleSolver.from_state(state.arrays, state.meta)  # onto the CPU
    m_back, s_back = back.predict(xq)
    np.testing.assert_allclose(m_back, m_gpu, atol=1e-5)
    np.testing.assert_allclose(s_back, s_gpu, atol=1e-5)
