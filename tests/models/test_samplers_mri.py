"""The MRI samplers (zero-filled, CG-SENSE, L1-wavelet CS) on small multi-coil SENSE problems.

The operator is a reference real-view SENSE model written here with explicit ``torch.fft``
(docs/conventions.md, "MRI"), independent of ``models.physics.mri``; where that module exists,
its ``SenseOperator`` is checked against the reference and the samplers run on it too. Maps are
smooth synthetic coil profiles normalised to ``sum_c |S_c|^2 = 1`` everywhere; masks are
equispaced phase-encode lines (rows) with a fully sampled centre band.
"""

from __future__ import annotations

import math

import pytest
import torch
from inversa.models.physics.base import Identity, LinearOperator
from inversa.models.samplers import REGISTRY, CGSense, L1WaveletCS, ZeroFilled
from inversa.models.samplers.mri import OrthoWavelet2D, default_level


# ---------------------------------------------------------------------------------------------- reference model
def fft2c(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


class ReferenceSense(LinearOperator):
    """Real view of ``k_c = M fft2c(S_c x)``: ``(B, 2, H, W) -> (B, C, H, W, 2)``; one set of maps for the batch."""

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        c, h, w = maps.shape
        real = torch.float64 if maps.dtype == torch.complex128 else torch.float32
        super().__init__((2, h, w), (c, h, w, 2), dtype=real)
        self.maps = maps
        self.mask = mask.to(real)

    def _forward(self, x):
        image = torch.complex(x[:, 0], x[:, 1])
        return torch.view_as_real(self.mask * fft2c(self.maps[None] * image[:, None])).contiguous()

    def _adjoint(self, y):
        image = (self.maps.conj()[None] * ifft2c(self.mask * torch.view_as_complex(y.contiguous()))).sum(1)
        return torch.stack([image.real, image.imag], 1)


def grid(h, w):
    return torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64), torch.linspace(-1, 1, w, dtype=torch.float64),
                          indexing="ij")


def coil_maps(n_coils: int, h: int, w: int, width: float = 0.3, dtype=torch.complex128) -> torch.Tensor:
    """Gaussian coil profiles around the object with linear phase, normalised to ``sum_c |S_c|^2 = 1``."""
    yy, xx = grid(h, w)
    maps = []
    for c in range(n_coils):
        a = 2 * math.pi * c / n_coils
        cy, cx = 1.2 * math.sin(a), 1.2 * math.cos(a)
        magnitude = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / width)
        maps.append(magnitude * torch.exp(1j * (a + 0.5 * (yy * math.cos(a) - xx * math.sin(a)))))
    maps = torch.stack(maps)
    return (maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))).to(dtype)


def equispaced_mask(h: int, w: int, accel: int, centre: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[::accel] = True
    mask[h // 2 - centre // 2: h // 2 - centre // 2 + centre] = True
    return mask


def as_channels(image: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    return torch.stack([image.real, image.imag]).to(dtype)


def smooth_phantom(h, w, dtype=torch.float64):
    yy, xx = grid(h, w)
    magnitude = torch.exp(-(yy**2 / 0.35 + xx**2 / 0.25)) + 0.5 * torch.exp(-((yy - 0.3) ** 2 + (xx + 0.2) ** 2) / 0.05)
    return as_channels(magnitude * torch.exp(1j * (0.4 * xx + 0.3 * yy)), dtype)


def piecewise_phantom(h, w, dtype=torch.float64):
    """Nested ellipses with smooth shading and a smooth phase (brain-like contrast, sharp edges)."""
    yy, xx = grid(h, w)

    def ellipse(cy, cx, ay, ax, value):
        return value * ((((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2) <= 1).double()

    magnitude = (ellipse(0, 0, 0.85, 0.65, 1.0) + ellipse(0, 0, 0.78, 0.58, -0.6) + ellipse(-0.25, -0.2, 0.2, 0.12, 0.5)
                 + ellipse(0.3, 0.15, 0.15, 0.22, 0.3) + ellipse(0.1, -0.3, 0.08, 0.08, 0.6)
                 + ellipse(-0.5, 0.25, 0.1, 0.05, 0.4)) * (1 + 0.2 * xx)
    return as_channels(magnitude * torch.exp(1j * (0.5 * xx - 0.3 * yy)), dtype)


def noisy(op, x, sigma, seed=0):
    y = op(x)
    g = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(y.shape, generator=g, dtype=y.dtype)
    return y + noise * op.mask[None, None, :, :, None]  # unsampled k-space stays 0


def relative_error(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def psnr(estimate, truth):
    """PSNR of the magnitude images, peak = the truth's largest magnitude."""
    m_est, m_true = torch.sqrt((estimate**2).sum(-3)), torch.sqrt((truth**2).sum(-3))
    return float(20 * torch.log10(m_true.max() / torch.sqrt(((m_est - m_true) ** 2).mean())))


class Counting:
    """Counts ``A`` and ``A^H`` applications (``normal`` counts as both); the cached norm is free."""

    def __init__(self, op):
        self.op, self.calls = op, 0
        self.in_shape, self.out_shape = op.in_shape, op.out_shape

    def norm(self):
        return self.op.norm()

    def forward(self, x):
        self.calls += 1
        return self.op.forward(x)

    def adjoint(self, y):
        self.calls += 1
        return self.op.adjoint(y)

    def normal(self, x):
        self.calls += 2
        return self.op.normal(x)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Small FFTs: extra intra-op threads only spin."""


# ---------------------------------------------------------------------------------------------- zero-filled
def test_registered_under_their_recipe_names():
    assert REGISTRY["zero-filled"] is ZeroFilled and REGISTRY["cg-sense"] is CGSense and REGISTRY["cs"] is L1WaveletCS
    assert ZeroFilled.uses_system_matrix is False
    assert all(cls.deterministic for cls in (ZeroFilled, CGSense, L1WaveletCS))


def test_zero_filled_is_the_adjoint_and_the_image_when_fully_sampled():
    h, w = 24, 20
    x = piecewise_phantom(h, w)[None].repeat(2, 1, 1, 1)
    x[1] *= -0.5
    under = ReferenceSense(coil_maps(6, h, w), equispaced_mask(h, w, 3, 4))
    y = noisy(under, x, 0.01)
    result = ZeroFilled().sample(y, under)
    assert result.samples.shape == (1, 2, 2, h, w)
    assert torch.equal(result.samples[0], under.adjoint(y))
    assert (result.nfe, result.steps, result.iterations, result.residual) == (1, 1, 0, 0.0)

    full = ReferenceSense(coil_maps(6, h, w), torch.ones(h, w, dtype=torch.bool))
    assert relative_error(ZeroFilled().sample(full(x), full).samples[0], x) < 1e-12


# ---------------------------------------------------------------------------------------------- CG-SENSE
@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_cg_sense_is_exact_on_fully_sampled_noiseless_data(dtype, bound):
    h, w = 32, 28
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    op = ReferenceSense(coil_maps(8, h, w, dtype=complex_dtype), torch.ones(h, w, dtype=torch.bool))
    x = piecewise_phantom(h, w, dtype)[None]
    result = CGSense(tol=1e-7 if dtype == torch.float32 else 1e-12).sample(op(x), op)
    assert result.samples.dtype == dtype
    assert relative_error(result.samples[0], x) < bound
    assert 1 <= result.iterations <= 3 and result.steps == result.iterations


def test_cg_sense_beats_zero_filled_at_4x_on_a_smooth_phantom():
    h = w = 48
    op = ReferenceSense(coil_maps(8, h, w), equispaced_mask(h, w, 4, 6))
    x = smooth_phantom(h, w)[None]
    y = op(x)
    zero_filled = ZeroFilled().sample(y, op).samples[0]
    result = CGSense(max_iter=100, tol=1e-8).sample(y, op)
    assert psnr(result.samples[0], x) > psnr(zero_filled, x) + 30  # noiseless: ~124 dB against ~38 dB
    assert relative_error(result.samples[0], x) < 1e-4
    assert result.residual <= 1e-8 and result.iterations < 100


def dense_matrix(op) -> torch.Tensor:
    n = math.prod(op.in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *op.in_shape)
    return op.forward(basis).reshape(n, -1).T  # (m, n)


def test_cg_sense_with_lam_matches_the_closed_form():
    h, w = 8, 6
    op = ReferenceSense(coil_maps(3, h, w), equispaced_mask(h, w, 2, 2))
    x = piecewise_phantom(h, w)[None]
    y = noisy(op, x, 0.05)
    a = dense_matrix(op)
    lam = 0.05
    system = a.T @ a + lam * op.norm() ** 2 * torch.eye(a.shape[1], dtype=torch.float64)
    want = torch.linalg.solve(system, a.T @ y.reshape(-1)).reshape(1, *op.in_shape)
    got = CGSense(lam=lam, max_iter=200, tol=1e-13).sample(y, op)
    assert relative_error(got.samples[0], want) < 1e-9
    # lam = 0 on a rank-deficient problem: CG from zero gives the minimum-norm least-squares solution.
    least_squares = torch.linalg.pinv(a) @ y.reshape(-1)
    plain = CGSense(max_iter=200, tol=1e-13).sample(y, op)
    assert relative_error(plain.samples[0].reshape(-1), least_squares) < 1e-8


def test_cg_sense_reports_what_cg_did():
    h = w = 32
    op = ReferenceSense(coil_maps(8, h, w), equispaced_mask(h, w, 2, 4))
    y = noisy(op, piecewise_phantom(h, w)[None], 0.01)
    counted = Counting(op)
    seen = []
    short = CGSense(max_iter=5, tol=1e-12).sample(y, counted, callback=lambda s, t: seen.append((s, t)))
    assert short.iterations == short.steps == 5 and short.residual > 1e-12
    assert short.nfe == counted.calls == 1 + 2 * 5
    assert seen == [(k, 5) for k in range(1, 6)]

    counted.calls, seen = 0, []
    converged = CGSense(max_iter=500, tol=1e-6).sample(y, counted, callback=lambda s, t: seen.append((s, t)))
    assert converged.iterations < 500 and 0 < converged.residual <= 1e-6
    assert converged.nfe == counted.calls == 1 + 2 * converged.iterations
    assert seen[-1] == (500, 500) and seen[-2] == (converged.iterations, 500)
    # the reported residual is the true relative normal-equation residual
    b = op.adjoint(y)
    true = relative_error(op.normal(converged.samples[0]), b)
    assert true == pytest.approx(converged.residual, rel=1e-3, abs=1e-12)


# ---------------------------------------------------------------------------------------------- the wavelet
@pytest.mark.parametrize("boundary", ["periodization", "boundary"])
@pytest.mark.parametrize("shape, level, padded", [
    ((96, 96), 3, (96, 96)), ((230, 180), 4, (240, 192)), ((45, 37), 2, (48, 40)), ((16, 16), 1, (16, 16)),
])
def test_wavelet_is_orthonormal_on_a_padded_grid(shape, level, padded, boundary):
    wav = OrthoWavelet2D(shape, "db4", boundary=boundary)
    assert default_level(shape, "db4") == wav.level == level and wav.padded == padded
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, *shape, generator=g, dtype=torch.float64)
    z = wav.pad(x)
    assert z.shape[-2:] == padded and torch.equal(wav.crop(z), x)
    c = wav.forward(z)
    assert c.shape == z.shape
    assert torch.linalg.vector_norm(c) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-12)
    assert relative_error(wav.inverse(c), z) < 1e-12
    # inverse is the adjoint: <W z, d> = <z, W^T d>
    d = torch.randn(c.shape, generator=g, dtype=torch.float64)
    assert float((c * d).sum()) == pytest.approx(float((z * wav.inverse(d)).sum()), rel=1e-10)


def test_periodized_wavelet_is_pywavelets_and_keeps_constants_sparse():
    pywt = pytest.importorskip("pywt")
    shape = (64, 48)
    wav = OrthoWavelet2D(shape, "db4")  # level 2 = pywt.dwt_max_level(48, 8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    want, _ = pywt.coeffs_to_array(pywt.wavedec2(x.numpy(), "db4", mode="periodization", level=2))
    assert float((wav.forward(x) - torch.from_numpy(want)).abs().max()) < 1e-12
    # a constant is all approximation (vanishing moments hold at the edges too)
    flat = wav.forward(torch.ones(shape, dtype=torch.float64))
    assert float(flat[16:].abs().max()) < 1e-12 and float(flat[:, 12:].abs().max()) < 1e-12


# ---------------------------------------------------------------------------------------------- CS
def test_cs_is_wavelet_soft_thresholding_when_the_operator_is_the_identity():
    """With A = I and ||A|| = 1 the problem is denoising, solved exactly by one prox: W^T soft(W y, lam)."""
    shape = (32, 32)
    g = torch.Generator().manual_seed(3)
    y = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    s = L1WaveletCS(lam=0.5, reference="absolute", wavelet="haar", level=2, tol=1e-10)
    result = s.sample(y, Identity(shape).double())
    wav = OrthoWavelet2D(shape, "haar", 2)
    c = wav.forward(y)
    want = wav.inverse(torch.sign(c) * torch.clamp(c.abs() - 0.5, min=0))
    assert relative_error(result.samples[0], want) < 1e-12
    assert 10 < result.steps < s.max_iter  # the iterate stops moving, so the slice stops


def test_cs_objective_falls_well_below_the_start():
    h = w = 32  # a multiple of 2 ** level: no padding, so objective() is the objective FISTA minimises
    op = ReferenceSense(coil_maps(8, h, w), equispaced_mask(h, w, 4, 6))
    y = noisy(op, piecewise_phantom(h, w)[None], 0.01)
    s = L1WaveletCS(lam=0.005)
    start = float(s.objective(torch.zeros(1, *op.in_shape, dtype=torch.float64), y, op)[0])
    values = [float(s.objective(L1WaveletCS(lam=0.005, max_iter=k, tol=0).sample(y, op).samples[0], y, op)[0])
              for k in (1, 2, 5, 10, 20, 50, 100)]
    assert values[0] < start
    assert values[-1] < 0.2 * start
    # FISTA is not monotone, but nearly: no value exceeds an earlier one by more than 1 %
    assert all(b <= 1.01 * min(values[: i + 1]) for i, b in enumerate(values[1:]))
    assert values[-1] <= min(values) * 1.001
    # at the minimum: more iterations change the objective by less than 0.1 %
    more = float(s.objective(L1WaveletCS(lam=0.005, max_iter=300, tol=0).sample(y, op).samples[0], y, op)[0])
    assert abs(values[-1] - more) < 1e-3 * more


def test_cs_beats_cg_sense_at_4x_with_noise():
    h = w = 48
    op = ReferenceSense(coil_maps(8, h, w), equispaced_mask(h, w, 4, 6))
    x = piecewise_phantom(h, w)[None]
    y = noisy(op, x, 0.01)
    cg = CGSense().sample(y, op)
    cs = L1WaveletCS().sample(y, op)
    zero_filled = ZeroFilled().sample(y, op).samples[0]
    assert psnr(cs.samples[0], x) > psnr(cg.samples[0], x) + 3  # ~31 dB against ~25 dB
    assert psnr(cs.samples[0], x) > psnr(zero_filled, x) + 8
    assert cs.steps <= 100 and cs.iterations == 0 and cs.residual == 0.0
    assert cs.nfe == 1 + 2 * cs.steps + 2  # A^H y, one A^H A per step, the probe for unseen pixels


def test_cs_with_lam_zero_is_the_least_squares_solution():
    h = w = 32
    op = ReferenceSense(coil_maps(8, h, w), equispaced_mask(h, w, 2, 4))
    y = noisy(op, piecewise_phantom(h, w)[None], 0.01)
    cg = CGSense(max_iter=300, tol=1e-12).sample(y, op)
    cs = L1WaveletCS(lam=0, max_iter=300, tol=1e-12).sample(y, op)
    assert relative_error(cs.samples[0], cg.samples[0]) < 1e-6


def test_cs_lam_scales_with_the_data_and_not_with_the_operator():
    """reference='peak': scaling y scales the result; scaling A (and y with it) leaves it alone."""
    h = w = 32
    maps, mask = coil_maps(8, h, w), equispaced_mask(h, w, 4, 6)
    op = ReferenceSense(maps, mask)
    y = noisy(op, piecewise_phantom(h, w)[None], 0.01)
    s = L1WaveletCS(lam=0.01, max_iter=60, tol=0)
    base = s.sample(y, op).samples[0]
    assert relative_error(s.sample(1e4 * y, op).samples[0], 1e4 * base) < 1e-10
    scaled = ReferenceSense(3.0 * maps, mask)  # ||A|| = 3
    assert relative_error(s.sample(3.0 * y, scaled).samples[0], base) < 1e-8
    # the objective weight is SigPy's lamda: lam * peak |A^H y| / ||A||^2 * ||A||^2
    peak = float(torch.sqrt((op.adjoint(y) ** 2).sum(1)).max())
    assert float(s.weight(y, op)[0]) == pytest.approx(0.01 * peak / op.norm() ** 2 * op.norm() ** 2, rel=1e-12)
    absolute = L1WaveletCS(lam=0.01, reference="absolute")
    assert float(absolute.weight(y, op)[0]) == pytest.approx(0.01 * op.norm() ** 2, rel=1e-12)
    # reference='noise': lam in noise standard deviations, lam_img = lam * sigma / ||A|| (per slice)
    by_noise = L1WaveletCS(lam=2.0, reference="noise")
    assert float(by_noise.weight(y, op, 0.01)[0]) == pytest.approx(2.0 * 0.01 * op.norm(), rel=1e-12)
    pair = torch.cat([y, y])
    assert by_noise.weight(pair, op, torch.tensor([0.01, 0.03], dtype=torch.float64)).tolist() == pytest.approx(
        [0.02 * op.norm(), 0.06 * op.norm()], rel=1e-12)
    with pytest.raises(ValueError, match="noise_sigma"):
        by_noise.sample(y, op)
    noisy_scale = ReferenceSense(3.0 * maps, mask)  # the noise of 3 y is 3 sigma, ||A|| = 3: the same threshold
    assert relative_error(L1WaveletCS(lam=2.0, reference="noise", max_iter=60, tol=0).sample(3.0 * y, noisy_scale, 0.03)
                          .samples[0], L1WaveletCS(lam=2.0, reference="noise", max_iter=60, tol=0).sample(y, op, 0.01)
                          .samples[0]) < 1e-8


def test_cs_zeroes_what_no_coil_sees():
    """Maps cropped to a disc (as ESPIRiT's crop does): outside it A has zero columns, and the result is 0 there."""
    h = w = 32
    yy, xx = grid(h, w)
    inside = (yy**2 + xx**2) <= 0.8
    maps = coil_maps(8, h, w) * inside
    op = ReferenceSense(maps, equispaced_mask(h, w, 2, 4))
    x = piecewise_phantom(h, w)[None] * inside
    y = noisy(op, x, 0.01)
    s = L1WaveletCS(lam=0.01)
    assert torch.equal(s.seen(op, y)[0, 0], inside)
    result = s.sample(y, op).samples[0]
    assert float(result[..., ~inside].abs().max()) == 0.0 and float(result[..., inside].abs().max()) > 0.5
    free = L1WaveletCS(lam=0.01, zero_unseen=False).sample(y, op).samples[0]
    assert float(free[..., ~inside].abs().max()) > 0.01  # the regulariser's extension of the object
    assert torch.equal(free * inside, result)
    # zero-filled and CG-SENSE never leave range(A^H)
    assert float(CGSense().sample(y, op).samples[0][..., ~inside].abs().max()) == 0.0


@pytest.mark.parametrize("shape", [(46, 36), (23, 17)])
def test_cs_pads_to_the_wavelet_grid_and_crops_back(shape):
    h, w = shape
    op = ReferenceSense(coil_maps(4, h, w), equispaced_mask(h, w, 2, 4))
    x = piecewise_phantom(h, w)[None]
    result = L1WaveletCS(lam=0.002, max_iter=150).sample(noisy(op, x, 0.005), op)
    assert result.samples.shape == (1, 1, 2, h, w) and bool(torch.isfinite(result.samples).all())
    assert psnr(result.samples[0], x) > 25


def test_cs_runs_on_a_230_by_180_image():
    h, w = 230, 180
    op = ReferenceSense(coil_maps(2, h, w, dtype=torch.complex64), equispaced_mask(h, w, 4, 16))
    x = smooth_phantom(h, w, torch.float32)[None]
    result = L1WaveletCS(max_iter=3).sample(op(x), op)
    assert result.samples.shape == (1, 1, 2, h, w) and result.samples.dtype == torch.float32
    assert result.steps == 3 and bool(torch.isfinite(result.samples).all())


def test_parameters_are_checked():
    for bad in ({"lam": -1.0}, {"lam": float("nan")}, {"max_iter": 0}, {"max_iter": 2.5}, {"tol": 0.0}):
        with pytest.raises(ValueError, match="cg-sense"):
            CGSense(**bad)
    for bad in ({"lam": -0.1}, {"wavelet": "nope"}, {"wavelet": "bior2.2"}, {"level": 0}, {"max_iter": 0},
                {"tol": -1.0}, {"reference": "mean"}, {"boundary": "zero"}):
        with pytest.raises(ValueError, match="cs"):
            L1WaveletCS(**bad)
    with pytest.raises(ValueError, match="too deep"):
        L1WaveletCS(level=6).sample(torch.zeros(1, 2, 16, 16, dtype=torch.float64), Identity((2, 16, 16)).double())
    with pytest.raises(ValueError, match="in_shape"):
        L1WaveletCS().sample(torch.zeros(1, 3, 8, 8), Identity((3, 8, 8)))
    with pytest.raises(ValueError, match="shape"):
        CGSense().sample(torch.zeros(1, 2, 8, 8), Identity((2, 8, 9)))
    # recipes coerce by the annotations
    import typing
    hints = typing.get_type_hints(L1WaveletCS.__init__)
    assert hints["lam"] is float and hints["max_iter"] is int and hints["wavelet"] is str
    assert L1WaveletCS().params() == {"lam": 0.001, "wavelet": "db4", "level": None, "boundary": "periodization",
                                      "max_iter": 100, "tol": 1e-4, "reference": "peak", "zero_unseen": True}
    assert CGSense().params() == {"lam": 0.0, "max_iter": 30, "tol": 1e-6}


@pytest.mark.parametrize("make", [ZeroFilled, lambda: CGSense(max_iter=40), lambda: L1WaveletCS(tol=1e-3)],
                         ids=["zero-filled", "cg-sense", "cs"])
def test_a_slice_does_not_depend_on_its_batch(make):
    h = w = 32
    op = ReferenceSense(coil_maps(6, h, w), equispaced_mask(h, w, 3, 4))
    x = torch.cat([piecewise_phantom(h, w)[None], 0.1 * smooth_phantom(h, w)[None], 5.0 * piecewise_phantom(h, w)[None]])
    y = noisy(op, x, 0.01)
    together = make().sample(y, op).samples[0]
    for b in range(3):
        alone = make().sample(y[b:b + 1], op).samples[0]
        assert relative_error(together[b:b + 1], alone) < 1e-10, b


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_gpu_agree():
    h, w = 40, 36
    maps, mask = coil_maps(8, h, w, dtype=torch.complex64), equispaced_mask(h, w, 4, 6)
    x = piecewise_phantom(h, w, torch.float32)[None]
    cpu = ReferenceSense(maps, mask)
    y = noisy(cpu, x, 0.01)
    gpu = ReferenceSense(maps.cuda(), mask.cuda()).to("cuda")
    gpu.mask = gpu.mask.cuda()
    for make in (ZeroFilled, lambda: CGSense(max_iter=20), lambda: L1WaveletCS(max_iter=50, tol=0)):
        a = make().sample(y, cpu)
        b = make().sample(y.cuda(), gpu)
        assert b.samples.is_cuda and a.steps == b.steps
        assert relative_error(b.samples.cpu(), a.samples) < 1e-4


# ---------------------------------------------------------------------------------------------- SenseOperator
def test_sense_operator_matches_the_reference_and_serves_the_samplers():
    mri = pytest.importorskip("inversa.models.physics.mri", reason="models/physics/mri.py is not written yet")
    h, w = 32, 28
    maps, mask = coil_maps(6, h, w, dtype=torch.complex64), equispaced_mask(h, w, 3, 4)
    ref = ReferenceSense(maps, mask)
    op = mri.SenseOperator(maps[None], mask)
    assert tuple(op.in_shape) == (2, h, w) and tuple(op.out_shape) == (6, h, w, 2)
    x = piecewise_phantom(h, w, torch.float32)[None]
    y = noisy(ref, x, 0.01)
    assert relative_error(op.forward(x), ref.forward(x)) < 1e-5
    assert relative_error(op.adjoint(y), ref.adjoint(y)) < 1e-5
    assert op.norm() == pytest.approx(ref.norm(), rel=1e-3)
    for make in (ZeroFilled, CGSense, L1WaveletCS):
        a, b = make().sample(y, ref), make().sample(y, op)
        assert relative_error(b.samples, a.samples) < 1e-3, make
