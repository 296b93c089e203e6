"""ESPIRiT maps (models/physics/espirit.py): against the truth on simulated smooth coils, against
SigPy's ``EspiritCalib`` on the same data and on the real SigPy brain file, and the exactness of
the correlation-based per-pixel matrices.

Measured on the simulated data below (64 x 56, 6 coils, 24 fully sampled centre lines plus 30 %
random lines elsewhere, complex64): inside the object the per-pixel ``|<S_est, S_true>|`` has
median 0.999996 and minimum 0.99986 (projector ``S S^H`` difference, Frobenius: median 0.004,
max 0.024); against SigPy: median 1 - 3e-8, minimum 0.9999997, relative difference of the maps
2e-7, identical crop support. On ``sigpy_cartesian_brain`` (8 coils, 230 x 180): relative
difference 3e-7, minimum ``|<ours, sigpy>|`` 0.9999995, identical support (29505 pixels).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inversa.models.physics import espirit
from inversa.models.physics.espirit import espirit_maps
from inversa.models.physics.mri import fft2c, ifft2c

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny problems: extra threads only wait


def simulate(h=64, w=56, coils=6, seed=0):
    """A piecewise-constant phantom with a smooth phase, smooth complex Gaussian coil profiles
    around it (sum_c |S_c|^2 = 1), 24 fully sampled centre lines and 30 % random lines elsewhere."""
    y = (torch.arange(h, dtype=torch.float64) - h // 2) / h
    x = (torch.arange(w, dtype=torch.float64) - w // 2) / w
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    obj = ((yy / 0.40) ** 2 + (xx / 0.34) ** 2 <= 1).double()
    obj = obj * (1.0 + 0.5 * (((yy - 0.1) / 0.15) ** 2 + ((xx + 0.08) / 0.1) ** 2 <= 1).double()
                 - 0.4 * (((yy + 0.15) / 0.1) ** 2 + ((xx - 0.1) / 0.12) ** 2 <= 1).double())
    image = obj * torch.exp(1j * 2 * math.pi * (0.3 * yy - 0.2 * xx))
    maps = []
    for c in range(coils):
        a = 2 * math.pi * c / coils
        cy, cx = 0.55 * math.sin(a), 0.55 * math.cos(a)
        magnitude = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.35 ** 2))
        phase = a + 2 * math.pi * (0.5 * (yy - cy) * math.cos(a) + 0.3 * (xx - cx) * math.sin(a))
        maps.append(magnitude * torch.exp(1j * phase))
    maps = torch.stack(maps)
    maps = maps / torch.linalg.vector_norm(maps, dim=0, keepdim=True)
    mask = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < 0.3
    mask[h // 2 - 12:h // 2 + 12, :] = True
    ksp = (fft2c(maps * image) * mask).to(torch.complex64)
    return ksp, maps, obj > 0


@pytest.fixture(scope="module")
def simulated():
    ksp, true, inside = simulate()
    est, eig = espirit_maps(ksp, return_eigenvalues=True)
    return ksp, true, inside, est, eig


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``|<a, b>|`` over coils (1 when equal up to a phase, for unit vectors)."""
    return (a.to(torch.complex128) * b.to(torch.complex128).conj()).sum(0).abs()


def test_maps_recover_the_true_sensitivities_up_to_a_phase(simulated):
    ksp, true, inside, est, eig = simulated
    assert est.shape == ksp.shape and est.dtype == torch.complex64
    assert bool((est[:, inside].abs().sum(0) > 0).all()), "maps cropped inside the object"
    inner = _inner(est, true)[inside]
    assert float(inner.median()) > 0.99995  # measured 0.999996
    assert float(inner.min()) > 0.9995  # measured 0.99986
    p_est = est.to(torch.complex128)[:, None] * est.to(torch.complex128).conj()[None]
    p_true = true[:, None] * true.conj()[None]
    diff = torch.linalg.matrix_norm((p_est - p_true).permute(2, 3, 0, 1))[inside]
    assert float(diff.max()) < 0.05  # measured 0.024
    # Eigenvalue ~1 on the object; the normalisation of the conventions where not cropped.
    assert float(eig[inside].min()) > 0.95
    kept = est.abs().sum(0) > 0
    energy = (est.abs() ** 2).sum(0)
    torch.testing.assert_close(energy[kept], torch.ones_like(energy[kept]), rtol=0, atol=1e-5)
    # Phase relative to the first coil: coil 0 real and non-negative.
    assert float(est[0].imag.abs().max()) < 1e-6 and float(est[0].real.min()) >= 0


def test_agrees_with_sigpy_espiritcalib(simulated):
    sigpy_mri = pytest.importorskip("sigpy.mri")
    ksp, _, _, est, _ = simulated
    ref = torch.from_numpy(sigpy_mri.app.EspiritCalib(ksp.numpy(), show_pbar=False).run())
    support_ours, support_ref = est.abs().sum(0) > 0, ref.abs().sum(0) > 0
    assert int((support_ours != support_ref).sum()) == 0
    both = support_ours & support_ref
    inner = _inner(est, ref)[both]
    assert float(inner.median()) > 1 - 1e-5 and float(inner.min()) > 1 - 1e-4
    # Same phase convention: the maps themselves agree, not only their projectors.
    rel = torch.linalg.vector_norm((est - ref)[:, both]) / torch.linalg.vector_norm(ref[:, both])
    assert float(rel) < 1e-4  # measured 2e-7: float32 rounding


def test_correlation_gram_equals_the_direct_sum_over_kernel_images():
    """G(r) from kernel cross-correlations equals (N / kw^2) sum_k g_k g_k^H, g_k = ifft2c(padded kernel)."""
    ksp, _, _ = simulate(h=20, w=17, coils=3)
    ksp = ksp.to(torch.complex128)
    kw, (h, w) = 5, ksp.shape[-2:]
    kernels = espirit._signal_kernels(espirit._centre_crop(ksp, (12, 12)), kw, 0.02)
    padded = torch.zeros(kernels.shape[0], 3, h, w, dtype=torch.complex128)
    padded[..., h // 2 - kw // 2:h // 2 - kw // 2 + kw, w // 2 - kw // 2:w // 2 - kw // 2 + kw] = kernels
    g = ifft2c(padded)  # (K, C, h, w)
    direct = torch.einsum("kcyx,kdyx->cdyx", g, g.conj()) * (h * w) / kw ** 2
    corr = espirit._correlations(kernels, kw) / kw ** 2
    fast = espirit._lag_phases(h, kw, torch.complex128, ksp.device) @ (
        corr @ espirit._lag_phases(w, kw, torch.complex128, ksp.device).T)
    torch.testing.assert_close(fast, direct, rtol=0, atol=1e-12)


def test_batched_slices_and_complex128(simulated):
    ksp, _, inside, est, _ = simulated
    other, _, _ = simulate(seed=1)
    both = espirit_maps(torch.stack([ksp, other]))
    assert both.shape == (2, *ksp.shape)
    torch.testing.assert_close(both[0], est)
    torch.testing.assert_close(both[1], espirit_maps(other))
    est128 = espirit_maps(ksp.to(torch.complex128))
    assert est128.dtype == torch.complex128
    assert float(_inner(est128, est)[inside].min()) > 1 - 1e-5
    # NumPy input works too.
    torch.testing.assert_close(espirit_maps(ksp.numpy()), est)


def test_rejects_bad_input():
    with pytest.raises(TypeError):
        espirit_maps(torch.zeros(4, 32, 32))
    with pytest.raises(ValueError):
        espirit_maps(torch.zeros(32, 32, dtype=torch.complex64))
    with pytest.raises(ValueError):
        espirit_maps(torch.zeros(2, 32, 32, dtype=torch.complex64), calib_width=4, kernel_width=6)


@pytest.mark.realdata
def test_sigpy_brain_agrees_with_sigpy():
    """The real file: same algorithm in the same float32 arithmetic, so the maps must agree to
    rounding (measured relative difference 3e-7); 1e-4 leaves room for another BLAS/LAPACK, and
    at most 0.5 % of the support may flip where the eigenvalue sits at the crop level."""
    from tests.conftest import shared_file

    sigpy_mri = pytest.importorskip("sigpy.mri")
    ksp = np.load(shared_file("mri/sigpy_cartesian_brain/cartesian_ksp.npy"))
    assert ksp.shape == (8, 230, 180) and ksp.dtype == np.complex64
    ref = torch.from_numpy(sigpy_mri.app.EspiritCalib(ksp, show_pbar=False).run())
    ours = espirit_maps(torch.from_numpy(ksp))
    support_ours, support_ref = ours.abs().sum(0) > 0, ref.abs().sum(0) > 0
    assert int(support_ref.sum()) > 10000
    assert int((support_ours != support_ref).sum()) <= 0.005 * int(support_ref.sum())
    both = support_ours & support_ref
    inner = _inner(ours, ref)[both]
    assert float(inner.median()) > 1 - 1e-5 and float(inner.min()) > 1 - 1e-3
    rel = torch.linalg.vector_norm((ours - ref)[:, both]) / torch.linalg.vector_norm(ref[:, both])
    assert float(rel) < 1e-4


@pytest.mark.gpu
def test_gpu_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ksp, _, inside = simulate()
    cpu = espirit_maps(ksp)
    gpu = espirit_maps(ksp.cuda())
    assert gpu.is_cuda and gpu.dtype == torch.complex64
    assert float(_inner(gpu.cpu(), cpu)[inside].min()) > 1 - 1e-5
