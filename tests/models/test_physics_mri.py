"""The centred FFT and the SENSE operator of models/physics/mri.py (docs/conventions.md, "MRI").

The shared conformance suite runs on SENSE through the registry in test_physics_conformance.py
(region-stacked S = 2, single coil, fully sampled); this file checks what the suite cannot:
the definition against a direct per-item formula, the batch rule ``maps[n % S]``, the complex
API, exact recovery, the norm, dtypes, chunking, and (gpu marker) CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inversa.models.physics import conformance
from inversa.models.physics.base import LinearOperator
from inversa.models.physics.mri import SenseOperator, channels_to_image, fft2c, ifft2c, image_to_channels

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny FFTs: extra intra-op threads only wait


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _crandn(*shape, seed=0, dtype=torch.complex128):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _normalised_maps(s, c, h, w, seed=0, dtype=torch.complex128):
    maps = _crandn(s, c, h, w, seed=seed, dtype=dtype)
    return maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)  # sum_c |S_c|^2 = 1 everywhere


def _mask(s, h, w, seed=1, p=0.4):
    return torch.rand(s, h, w, generator=_gen(seed)) < p


def _reference_forward(maps, mask, x):
    """Item n: maps[n % S], mask[n % S]; the definition, one item and one coil at a time."""
    s_maps, s_mask = maps.shape[0], 1 if mask is None else mask.shape[0]
    out = []
    for n in range(x.shape[0]):
        m = 1.0 if mask is None else mask[n % s_mask].to(x.real.dtype)
        out.append(torch.stack([m * fft2c(maps[n % s_maps, c] * x[n]) for c in range(maps.shape[1])]))
    return torch.stack(out)


def _reference_adjoint(maps, mask, k):
    s_maps, s_mask = maps.shape[0], 1 if mask is None else mask.shape[0]
    out = []
    for n in range(k.shape[0]):
        m = 1.0 if mask is None else mask[n % s_mask].to(k.real.dtype)
        out.append(sum(maps[n % s_maps, c].conj() * ifft2c(m * k[n, c]) for c in range(maps.shape[1])))
    return torch.stack(out)


# ============================================================================ FFT
@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (6, 5), (1, 4)])
def test_fft2c_is_the_centred_orthonormal_dft(shape):
    h, w = shape
    x = _crandn(3, h, w, seed=2)
    k = fft2c(x)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(k.numpy(), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ifft2c(k), x, rtol=0, atol=1e-12)  # inverse
    torch.testing.assert_close(fft2c(ifft2c(x)), x, rtol=0, atol=1e-12)
    assert torch.linalg.vector_norm(k) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-12)  # unitary
    # DC at N // 2: a constant image has all its energy there, real and positive.
    ones = fft2c(torch.ones(h, w, dtype=torch.complex128))
    dc = ones[h // 2, w // 2]
    assert dc.real == pytest.approx(math.sqrt(h * w), rel=1e-12) and abs(dc.imag) < 1e-12
    assert float(ones.abs().sum() - ones[h // 2, w // 2].abs()) < 1e-10
    # ... and an impulse at the image centre (index N // 2) has flat, real, positive k-space.
    impulse = torch.zeros(h, w, dtype=torch.complex128)
    impulse[h // 2, w // 2] = 1
    torch.testing.assert_close(fft2c(impulse), torch.full((h, w), 1 / math.sqrt(h * w), dtype=torch.complex128))


def test_fft_refuses_real_input():
    with pytest.raises(TypeError):
        fft2c(torch.zeros(4, 4))
    with pytest.raises(TypeError):
        ifft2c(torch.zeros(4, 4))


def test_channel_views_round_trip():
    x = _crandn(2, 3, 5, 4, seed=3)
    ch = image_to_channels(x)
    assert ch.shape == (2, 3, 2, 5, 4) and ch.dtype == torch.float64
    torch.testing.assert_close(ch[:, :, 0], x.real)
    torch.testing.assert_close(ch[:, :, 1], x.imag)
    torch.testing.assert_close(channels_to_image(ch), x)
    with pytest.raises(ValueError):
        channels_to_image(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError):
        image_to_channels(torch.zeros(2, 4, 4))


# ============================================================================ definition
@pytest.mark.parametrize("shape", [(6, 5), (8, 8), (7, 9)])
@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_sense_matches_the_definition_with_the_batch_rule(shape, chunk):
    h, w = shape
    maps, mask = _crandn(2, 3, h, w, seed=4), _mask(2, h, w)
    op = SenseOperator(maps, mask, coil_chunk=chunk)
    assert op.in_shape == (2, h, w) and op.out_shape == (3, h, w, 2) and op.dtype == torch.float64
    x = _crandn(6, h, w, seed=5)  # k = 3 posterior samples of a 2-slice region, sample-major
    k = op.forward_complex(x)
    torch.testing.assert_close(k, _reference_forward(maps, mask, x), rtol=0, atol=1e-12)
    y = _crandn(6, 3, h, w, seed=6)
    torch.testing.assert_close(op.adjoint_complex(y), _reference_adjoint(maps, mask, y), rtol=0, atol=1e-12)
    # The real view is the same map.
    torch.testing.assert_close(op(image_to_channels(x)), torch.view_as_real(k), rtol=0, atol=1e-12)
    torch.testing.assert_close(op.adjoint(torch.view_as_real(y)), image_to_channels(op.adjoint_complex(y)),
                               rtol=0, atol=1e-12)


def test_batch_rule_item_n_uses_slice_n_mod_s():
    maps, mask = _crandn(3, 2, 6, 6, seed=7), _mask(3, 6, 6)
    op = SenseOperator(maps, mask)
    x = _crandn(6, 6, 6, seed=8)
    k = op.forward_complex(x)
    for n in range(6):
        single = SenseOperator(maps[n % 3: n % 3 + 1], mask[n % 3: n % 3 + 1])
        torch.testing.assert_close(k[n], single.forward_complex(x[n:n + 1])[0], rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="multiple"):
        op.forward_complex(x[:4])
    with pytest.raises(ValueError, match="multiple"):
        op(torch.zeros(4, 2, 6, 6, dtype=torch.float64))


def test_stacked_layout_is_a_reshape_of_the_flat_one():
    maps, mask = _crandn(2, 3, 5, 6, seed=9), _mask(2, 5, 6)
    flat, stacked = SenseOperator(maps, mask), SenseOperator(maps, mask, stack_slices=True)
    assert stacked.in_shape == (2, 2, 5, 6) and stacked.out_shape == (2, 3, 5, 6, 2)
    x = torch.randn(4, 2, 5, 6, generator=_gen(10), dtype=torch.float64)
    torch.testing.assert_close(stacked(x.reshape(2, 2, 2, 5, 6)).reshape(4, 3, 5, 6, 2), flat(x))
    y = flat(x)
    torch.testing.assert_close(stacked.adjoint(y.reshape(2, 2, 3, 5, 6, 2)).reshape(4, 2, 5, 6), flat.adjoint(y))
    assert stacked.norm() == pytest.approx(flat.norm(), rel=1e-6)


def test_mask_layouts_and_weights():
    maps = _crandn(1, 2, 5, 4, seed=11)
    m2 = _mask(1, 5, 4)[0]
    x = _crandn(2, 5, 4, seed=12)
    a = SenseOperator(maps, m2).forward_complex(x)
    b = SenseOperator(maps, m2[None]).forward_complex(x)
    c = SenseOperator(maps, m2.double()).forward_complex(x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    # maps of one slice with a mask of two: S = 2, maps shared.
    masks = _mask(2, 5, 4, seed=13)
    op = SenseOperator(maps, masks)
    assert op.n_slices == 2
    torch.testing.assert_close(op.forward_complex(x), _reference_forward(maps, masks, x), rtol=0, atol=1e-12)
    # Real weights (e.g. a soft mask): normal uses |M|^2.
    weights = torch.rand(5, 4, generator=_gen(14), dtype=torch.float64)
    op = SenseOperator(maps, weights)
    torch.testing.assert_close(op.normal_complex(x), op.adjoint_complex(op.forward_complex(x)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        SenseOperator(_crandn(2, 2, 5, 4), _mask(3, 5, 4))
    with pytest.raises(ValueError):
        SenseOperator(maps, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError):
        SenseOperator(torch.ones(1, 2, 5, 4))


def test_single_coil_is_the_masked_centred_fft():
    mask = _mask(1, 7, 6)[0]
    op = SenseOperator.single_coil((7, 6), mask, dtype=torch.float64)
    assert op.n_coils == 1 and op.out_shape == (1, 7, 6, 2)
    x = _crandn(3, 7, 6, seed=15)
    torch.testing.assert_close(op.forward_complex(x)[:, 0], mask * fft2c(x), rtol=0, atol=1e-13)


# ============================================================================ adjoint and normal
@pytest.mark.parametrize("dtype,tol", [(torch.complex128, 1e-13), (torch.complex64, 1e-5)])
def test_complex_dot_product(dtype, tol):
    """<A x, y> = <x, A^H y> as complex numbers (real and imaginary parts)."""
    maps, mask = _crandn(2, 4, 9, 8, seed=16, dtype=dtype), _mask(2, 9, 8)
    op = SenseOperator(maps, mask)
    x, y = _crandn(4, 9, 8, seed=17, dtype=dtype), _crandn(4, 4, 9, 8, seed=18, dtype=dtype)
    lhs = torch.vdot(y.flatten().to(torch.complex128), op.forward_complex(x).flatten().to(torch.complex128))
    rhs = torch.vdot(op.adjoint_complex(y).flatten().to(torch.complex128), x.flatten().to(torch.complex128))
    assert abs(lhs - rhs) / abs(lhs) < tol
    assert abs(lhs.imag) > 1e-3 * abs(lhs)  # a genuinely complex number was compared


@pytest.mark.parametrize("mask_kind", ["random", "full"])
def test_normal_equals_adjoint_of_forward(mask_kind):
    maps = _crandn(2, 3, 8, 7, seed=19)
    op = SenseOperator(maps, _mask(2, 8, 7) if mask_kind == "random" else None, coil_chunk=2)
    x = torch.randn(4, 2, 8, 7, generator=_gen(20), dtype=torch.float64)
    torch.testing.assert_close(op.normal(x), op.adjoint(op(x)), rtol=0, atol=1e-12)


def test_flat_multislice_layout_passes_the_batch_two_checks():
    """The suite's checks that use batches of 2 hold for the flat S = 2 layout itself."""
    maps, mask = _crandn(2, 3, 6, 5, seed=21), _mask(2, 6, 5)
    make = lambda dtype, device: SenseOperator(maps, mask).to(dtype=dtype, device=device)
    for dtype in (torch.float32, torch.float64):
        for check in (conformance.check_adjoint, conformance.check_linearity, conformance.check_normal,
                      conformance.check_autograd):
            check(make, dtype=dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_fully_sampled_adjoint_recovers_the_image(dtype, tol):
    """Noiseless, fully sampled, sum_c |S_c|^2 = 1: A^H A = I, so the adjoint is the inverse."""
    maps = _normalised_maps(2, 5, 12, 11, seed=22)
    op = SenseOperator(maps).to(dtype=dtype)
    x = torch.randn(4, 2, 12, 11, generator=_gen(23), dtype=torch.float64).to(dtype)
    assert conformance._rel(op.adjoint(op(x)), x) < tol
    assert conformance._rel(op.normal(x), x) < tol
    assert op.norm() == pytest.approx(1.0, rel=tol * 10)


# ============================================================================ norm
def test_exact_norm_agrees_with_power_iteration():
    maps = _crandn(1, 3, 9, 8, seed=24)
    op = SenseOperator(maps)
    exact = op.norm()
    assert exact == pytest.approx(float((maps.abs() ** 2).sum(1).max().sqrt()), rel=1e-12)
    power = LinearOperator.norm(SenseOperator(maps), n_iter=2000, tol=1e-12)
    assert power == pytest.approx(exact, rel=1e-4)
    # Normalised maps: at most 1 under any mask.
    maps = _normalised_maps(1, 3, 9, 8, seed=25)
    assert SenseOperator(maps).norm() == pytest.approx(1.0, rel=1e-12)
    assert SenseOperator(maps, _mask(1, 9, 8)).norm() <= 1.0 + 1e-9


def test_multislice_norm_covers_every_slice():
    """Flat S = 2: the norm of the block-diagonal operator, max over slices (not slice 0's)."""
    maps, mask = _crandn(2, 3, 6, 5, seed=26), _mask(2, 6, 5)
    maps[1] *= 3.0  # slice 1 dominates
    op = SenseOperator(maps, mask)
    per_slice = []
    for s in range(2):
        dense = conformance.dense_matrix(SenseOperator(maps[s:s + 1], mask[s:s + 1]))
        per_slice.append(float(torch.linalg.matrix_norm(dense, ord=2)))
    assert per_slice[1] > 2 * per_slice[0]
    assert op.norm(generator=_gen(0)) == pytest.approx(max(per_slice), rel=1e-3)
    # Constant per-slice masks: exact.
    op = SenseOperator(maps, torch.stack([torch.full((6, 5), 0.5), torch.full((6, 5), 2.0)]).double())
    energy = (maps.abs() ** 2).sum(1).flatten(1).max(1).values.sqrt()
    assert op.norm() == pytest.approx(float(max(0.5 * energy[0], 2.0 * energy[1])), rel=1e-12)


# ============================================================================ dtype, chunks, autograd
def test_dtype_moves_keep_the_imaginary_part():
    maps64, mask = _crandn(2, 3, 6, 6, seed=27, dtype=torch.complex64), _mask(2, 6, 6)
    op = SenseOperator(maps64, mask)
    assert op.dtype == torch.float32 and op.maps.dtype == torch.complex64
    op = op.to(dtype=torch.float64)
    assert op.dtype == torch.float64 and op.maps.dtype == torch.complex128
    torch.testing.assert_close(op.maps, maps64.to(torch.complex128), rtol=0, atol=0)
    x = _crandn(2, 6, 6, seed=28)
    ref = _reference_forward(maps64.to(torch.complex128), mask, x)
    torch.testing.assert_close(op.forward_complex(x), ref, rtol=0, atol=1e-12)
    op = op.float()
    assert op.maps.dtype == torch.complex64
    out = op(torch.randn(2, 2, 6, 6))
    assert out.dtype == torch.float32
    # Data in another dtype than the operator's: computed in the data's dtype (maps cast per call).
    assert op.forward_complex(x).dtype == torch.complex128
    with pytest.raises(TypeError):
        op.half()
    assert op.dtype == torch.float32 and op.maps.dtype == torch.complex64  # unchanged by the refusal


def test_chunking_does_not_change_results_or_gradients():
    maps, mask = _crandn(2, 5, 7, 6, seed=29), _mask(2, 7, 6)
    x = torch.randn(4, 2, 7, 6, generator=_gen(30), dtype=torch.float64)
    y = torch.randn(4, 5, 7, 6, 2, generator=_gen(31), dtype=torch.float64)
    results = []
    for chunk in (None, 1, 2, 5):
        op = SenseOperator(maps, mask, coil_chunk=chunk)
        xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        fwd, adj, nrm = op(xg), op.adjoint(yg), op.normal(xg)
        (fwd.square().sum() + adj.square().sum() + nrm.sum()).backward()
        with torch.no_grad():  # the allocation-free paths used without autograd
            assert conformance._rel(op(x), fwd.detach()) < 1e-14
            assert conformance._rel(op.adjoint(y), adj.detach()) < 1e-14
            assert conformance._rel(op.normal(x), nrm.detach()) < 1e-14
        results.append((fwd.detach(), adj.detach(), nrm.detach(), xg.grad, yg.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_forward_complex_accepts_leading_dimensions():
    maps, mask = _crandn(2, 3, 5, 5, seed=32), _mask(2, 5, 5)
    op = SenseOperator(maps, mask)
    x = _crandn(3, 2, 5, 5, seed=33)
    k = op.forward_complex(x)
    assert k.shape == (3, 2, 3, 5, 5)
    torch.testing.assert_close(k.reshape(6, 3, 5, 5), op.forward_complex(x.reshape(6, 5, 5)))
    assert op.adjoint_complex(k).shape == (3, 2, 5, 5)
    with pytest.raises(TypeError):
        op.forward_complex(x.real)


# ============================================================================ GPU
@pytest.mark.gpu
def test_gpu_matches_cpu_and_stays_within_its_memory_budget():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from inversa.models.physics import mri

    s, c, h, w, b = 1, 15, 320, 320, 8
    maps = _normalised_maps(s, c, h, w, seed=34, dtype=torch.complex64)
    mask = _mask(s, h, w, p=0.25)
    cpu = SenseOperator(maps, mask)
    gpu = SenseOperator(maps, mask).to("cuda")
    assert gpu.maps.is_cuda and gpu.maps.dtype == torch.complex64
    x = torch.randn(b, 2, h, w, generator=_gen(35))
    y = cpu(x)
    assert conformance._rel(gpu(x.cuda()).cpu(), y) < 1e-5
    assert conformance._rel(gpu.adjoint(y.cuda()).cpu(), cpu.adjoint(y)) < 1e-5
    assert conformance._rel(gpu.normal(x.cuda()).cpu(), cpu.normal(x)) < 1e-5
    # Memory: beyond the input and the output, a few coil chunks of temporaries.
    xg, yg = x.cuda(), y.cuda()
    chunk_bytes = mri.DEFAULT_CHUNK_ELEMENTS * 8
    out_bytes = b * c * h * w * 8
    with torch.no_grad():
        for name, fn, output in (("forward", lambda: gpu(xg), out_bytes), ("adjoint", lambda: gpu.adjoint(yg), 0),
                                 ("normal", lambda: gpu.normal(xg), 0)):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            extra = torch.cuda.max_memory_allocated() - base
            assert extra <= output + 5 * chunk_bytes + 16 * h * w * b, f"{name}: {extra / 2**20:.0f} MiB"
