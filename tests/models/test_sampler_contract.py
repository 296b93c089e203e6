"""The contract every registered sampler keeps: a ``SampleResult`` back, progress by callback, no per-call state.

The pipeline runs one sampler instance in several region threads and reads what a call cost from
its result, so a sampler that left counts on ``self`` (or let two calls share them) would store
one region's cost under another's. Each method runs on a 16 x 16 parallel-beam problem with a few
steps; the diffusion samplers get the exact denoiser of a white Gaussian prior. The MRI methods
(``MRI_METHODS``) run instead on a real-view complex problem, images ``(2, 16, 16)`` (real and
imaginary channels) and four-coil data ``(4, 16, 16, 2)``, through a dense matrix with half its
rows zero (undersampled): they only use the operator interface, so any such operator will do.
"""

import math
import threading
import time
from dataclasses import fields

import numpy as np
import pytest
import torch
from inversa.models.physics.base import MatrixOperator
from inversa.models.physics.tomography import CTGeometry, ct_operator
from inversa.models.priors import GaussianDenoiser
from inversa.models.priors.gaussian_flow import GaussianFlow
from inversa.models.priors.vae import LinearVAEPrior
from inversa.models.samplers import (
    DDS,
    DPS,
    FBP,
    REGISTRY,
    VBLE,
    FlowDPS,
    LatentLangevin,
    PnPHVAE,
    TV,
    CGSense,
    GaussianPosterior,
    L1WaveletCS,
    REDDiff,
    Sampler,
    Tikhonov,
    ZeroFilled,
)
from inversa.models.samplers.base import SampleResult

N, B, DRAWS, SIGMA = 16, 2, 3, 0.01
N_STEPS = 5
PER_CALL = ("nfe", "iterations", "cg_iterations", "cg_residual", "residual", "steps", "last_mean")
MRI_METHODS = ("zero-filled", "cg-sense", "cs")
# A linear decoder with a Gaussian latent: the VAE samplers' exact stand-in (8 latents, 16 x 16 images).
LINEAR_VAE = LinearVAEPrior(0.01 * torch.randn(N * N, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
                            0.02, (N, N), gamma=0.005)
COILS = 4


@pytest.fixture(scope="module")
def problem():
    geometry = CTGeometry.parallel(np.deg2rad(np.arange(0, 120, 6.0)), n_det=24, det_spacing=1.0,
                                   image_size=N, pixel_size=1.0)
    op = ct_operator(geometry).double()
    op.norm()  # cached once, so concurrent calls below only read it
    g = torch.Generator().manual_seed(0)
    x = 0.05 * torch.rand(2 * B, N, N, generator=g, dtype=torch.float64)
    y = op(x) + SIGMA * torch.randn((2 * B, *op.out_shape), generator=g, dtype=torch.float64)
    den = GaussianDenoiser(0.02, 1e-3 * torch.eye(N * N, dtype=torch.float64), (N, N))
    return op, y, den


@pytest.fixture(scope="module")
def mri_problem(problem):
    """A real-view complex problem: ``(2, N, N)`` images, ``(COILS, N, N, 2)`` data, every other k-space row zero."""
    g = torch.Generator().manual_seed(1)
    n_in, out_shape = 2 * N * N, (COILS, N, N, 2)
    matrix = torch.randn(COILS * N * N * 2, n_in, generator=g, dtype=torch.float64) / math.sqrt(n_in)
    rows = torch.zeros(out_shape, dtype=torch.bool)
    rows[:, ::2] = True  # "sampled" rows of k-space
    matrix[~rows.reshape(-1)] = 0.0
    op = MatrixOperator(matrix, in_shape=(2, N, N), out_shape=out_shape)
    op.norm()
    x = torch.rand(2 * B, 2, N, N, generator=g, dtype=torch.float64) - 0.5
    y = op(x) + SIGMA * torch.randn((2 * B, *out_shape), generator=g, dtype=torch.float64) * rows
    return op, y, problem[2]


@pytest.fixture
def case(request, problem, mri_problem):
    """The problem a method runs on: the MRI methods get the complex one."""
    return mri_problem if request.param in MRI_METHODS else problem


def build(name: str, den) -> Sampler:
    """A cheap instance of every registered method; a new method without one here fails the contract."""
    makers = {
        "fbp": lambda: FBP(),
        "tikhonov": lambda: Tikhonov(max_iter=20, tol=1e-10),
        "tv": lambda: TV(max_iter=30),
        "gaussian": lambda: GaussianPosterior(max_iter=40),
        "dps": lambda: DPS(den, n_steps=N_STEPS, sigma_max=1.0),
        "dds": lambda: DDS(den, n_steps=N_STEPS, sigma_max=1.0, cg_steps=3),
        "reddiff": lambda: REDDiff(den, n_steps=N_STEPS),
        "flowdps": lambda: FlowDPS(GaussianFlow(0.02, 1e-3 * torch.eye(N * N, dtype=torch.float64), (N, N),
                                                offset=0.02, scale=0.05), n_steps=N_STEPS, cg_steps=3),
        "vble": lambda: VBLE(LINEAR_VAE, n_iter=N_STEPS, mc_samples=2),
        "pnp-hvae": lambda: PnPHVAE(LINEAR_VAE, n_iter=N_STEPS, cg_steps=3),
        "vae-langevin": lambda: LatentLangevin(LINEAR_VAE, map_steps=2, burn_in=N_STEPS - 2, thin=1),
        "zero-filled": lambda: ZeroFilled(),
        "cg-sense": lambda: CGSense(max_iter=20, tol=1e-10),
        "cs": lambda: L1WaveletCS(lam=0.01, max_iter=30, tol=1e-3, level=2),
    }
    assert name in makers, f"sampler {name!r} is registered but the contract test does not build it"
    return makers[name]()


def gens(seed: int, count: int = B):
    return [torch.Generator().manual_seed(seed + b) for b in range(count)]


def call(sampler, op, y, seed=5, callback=None):
    ctx = torch.no_grad() if sampler.no_grad else torch.enable_grad()
    with ctx:
        return sampler.sample(y, op, SIGMA, DRAWS, gens(seed, y.shape[0]), callback=callback)


def assert_same(a: SampleResult, b: SampleResult):
    assert torch.equal(a.samples, b.samples)
    for f in fields(SampleResult):
        if f.name != "samples":
            assert getattr(a, f.name) == getattr(b, f.name), f.name


class Recorder:
    def __init__(self, pause: float = 0.0):
        self.calls, self.pause = [], pause

    def __call__(self, step, total):
        self.calls.append((step, total))
        if self.pause:
            time.sleep(self.pause)  # hands the GIL over so concurrent calls interleave step by step


@pytest.mark.parametrize("name, case", [(name, name) for name in sorted(REGISTRY)], indirect=["case"])
def test_sample_returns_a_result_and_reports_every_step(name, case):
    op, y, den = case
    s = build(name, den)
    assert REGISTRY[name] is type(s) and isinstance(s.no_grad, bool)
    plain = call(s, op, y[:B])
    assert isinstance(plain, SampleResult)
    assert plain.samples.shape == (1 if s.deterministic else DRAWS, B, *op.in_shape)
    assert bool(torch.isfinite(plain.samples).all())
    assert isinstance(plain.nfe, int) and plain.nfe >= 1
    assert isinstance(plain.iterations, int) and plain.iterations >= 0
    assert isinstance(plain.residual, float) and plain.residual >= 0.0
    assert isinstance(plain.steps, int) and plain.steps >= 1

    seen = Recorder()
    watched = call(build(name, den), op, y[:B], callback=seen)
    assert_same(watched, plain)  # watching changes nothing
    total = seen.calls[0][1]
    assert all(t == total for _, t in seen.calls)
    # Steps 1..steps in order, then (total, total) once more if the method stopped early.
    expected = list(range(1, plain.steps + 1)) + ([total] if plain.steps < total else [])
    assert [step for step, _ in seen.calls] == expected
    assert seen.calls[-1] == (total, total) and plain.steps <= total
    if name in ("tikhonov", "tv", "cg-sense", "cs"):
        assert total == s.max_iter
    else:
        assert total == {"fbp": 1, "gaussian": 2, "zero-filled": 1}.get(name, N_STEPS)  # diffusion: one step per noise level


@pytest.mark.parametrize("name, case", [(name, name) for name in sorted(REGISTRY)], indirect=["case"])
def test_a_call_leaves_nothing_on_the_sampler(name, case):
    op, y, den = case
    s = build(name, den)
    before = dict(vars(s))
    call(s, op, y[:B])
    for attr in PER_CALL:
        assert not hasattr(s, attr), f"{name} keeps per-call state {attr!r}"
    after = dict(vars(s))
    after.pop("_cache", None)  # the Gaussian posterior mean, reused by the next chunk on purpose
    before.pop("_cache", None)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), [k for k in before if after[k] is not before[k]]


@pytest.mark.parametrize("name, case", [(name, name) for name in sorted(REGISTRY)], indirect=["case"])
def test_two_threads_on_one_sampler_get_what_two_sequential_calls_get(name, case):
    op, y, den = case
    inputs = [(y[:B], 5), (y[B:], 50)]
    sequential = build(name, den)
    expected = [call(sequential, op, yi, seed) for yi, seed in inputs]
    assert not torch.equal(expected[0].samples, expected[1].samples)

    shared = build(name, den)
    barrier = threading.Barrier(len(inputs))
    results, errors = [None] * len(inputs), []

    def work(i):
        try:
            barrier.wait()
            yi, seed = inputs[i]
            results[i] = call(shared, op, yi, seed, callback=Recorder(pause=1e-3))
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        assert_same(got, want)


class CountingOperator:
    """The CT operator, counting calls of ``A`` and ``A^T`` (its norm is cached, so not counted)."""

    def __init__(self, op):
        self.op, self.forward_calls, self.adjoint_calls = op, 0, 0
        self.in_shape, self.out_shape, self.geometry = op.in_shape, op.out_shape, getattr(op, "geometry", None)

    def norm(self, *args, **kwargs):
        return self.op.norm(*args, **kwargs)

    def forward(self, x):
        self.forward_calls += 1
        return self.op.forward(x)

    def adjoint(self, y):
        self.adjoint_calls += 1
        return self.op.adjoint(y)

    @property
    def calls(self):
        return self.forward_calls + self.adjoint_calls


class CountingDenoiser:
    def __init__(self, den):
        self.den, self.calls = den, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.den(x, sigma)


def normal_residual(op, x, y, alpha):
    """``||A^T (y - A x) - alpha x|| / ||A^T y||`` per slice."""
    s = op.adjoint(y - op(x)) - alpha * x
    return s.flatten(1).norm(dim=1) / op.adjoint(y).flatten(1).norm(dim=1)


@pytest.mark.parametrize("max_iter, tol", [(6, 1e-10), (200, 1e-6)])
def test_tikhonov_reports_what_cgls_did(max_iter, tol, problem):
    op, y, _ = problem
    counted = CountingOperator(op)
    s = Tikhonov(alpha=1e-2, max_iter=max_iter, tol=tol)
    seen = Recorder()
    result = s.sample(y[:B], counted, callback=seen)
    # One A per CGLS iteration; A^T once at the start and once per iteration.
    assert result.steps == result.iterations == counted.forward_calls == counted.adjoint_calls - 1
    assert result.nfe == counted.calls == 1 + 2 * result.iterations
    true = normal_residual(op, result.samples[0], y[:B], s.alpha * op.norm() ** 2)
    assert result.residual == pytest.approx(float(true.max()), rel=1e-6)
    if max_iter == 6:  # stopped by the iteration limit, short of the tolerance
        assert result.iterations == 6 and result.residual > tol
        assert [step for step, _ in seen.calls] == list(range(1, 7))
    else:  # converged early; the bar still completes
        assert result.iterations < max_iter and result.residual <= tol
        assert seen.calls[-1] == (max_iter, max_iter) and len(seen.calls) == result.steps + 1


def test_tv_counts_its_operator_calls_and_can_stop_early(problem):
    op, y, _ = problem
    counted = CountingOperator(op)
    seen = Recorder()
    result = TV(max_iter=400, tol=1e-3).sample(y[:B], counted, SIGMA, callback=seen)
    assert result.nfe == counted.calls and result.iterations == 0 and result.residual == 0.0
    assert 10 < result.steps < 400  # stopped on its tolerance
    assert seen.calls[-1] == (400, 400) and seen.calls[-2] == (result.steps, 400)


def test_gaussian_reports_its_slowest_solve_and_its_residual(problem):
    op, y, _ = problem
    counted = CountingOperator(op)
    s = GaussianPosterior(tol=1e-6, max_iter=500)
    result = s.sample(y[:B], counted, SIGMA, DRAWS, gens(5))
    assert result.nfe == counted.calls
    assert 0.0 < result.residual <= s.tol and 0 < result.iterations < s.max_iter and result.steps == 2
    # The same draws with the mean cached: no mean solve, so fewer operator calls.
    again = s.sample(y[:B], counted, SIGMA, DRAWS, gens(5))
    assert torch.equal(again.samples, result.samples) and again.nfe < result.nfe
    # Cut short: the residual says so.
    short = GaussianPosterior(tol=1e-6, max_iter=3, preconditioner="none").sample(y[:B], op, SIGMA, DRAWS, gens(5))
    assert short.iterations == 3 and short.residual > 1e-6


def test_mri_methods_count_their_operator_calls_and_can_stop_early(mri_problem):
    op, y, _ = mri_problem
    counted = CountingOperator(op)  # no ``normal``: the samplers fall back to A^T (A x), two calls
    assert ZeroFilled().sample(y[:B], counted).nfe == counted.calls == 1

    counted.forward_calls = counted.adjoint_calls = 0
    seen = Recorder()
    cg = CGSense(max_iter=200, tol=1e-8).sample(y[:B], counted, callback=seen)
    assert cg.nfe == counted.calls == 1 + 2 * cg.iterations and cg.steps == cg.iterations < 200
    assert 0 < cg.residual <= 1e-8 and seen.calls[-1] == (200, 200) and seen.calls[-2] == (cg.steps, 200)

    counted.forward_calls = counted.adjoint_calls = 0
    seen = Recorder()
    cs = L1WaveletCS(lam=0.01, max_iter=400, tol=1e-4, level=2).sample(y[:B], counted, callback=seen)
    assert cs.nfe == counted.calls == 1 + 2 * cs.steps + 2 and cs.iterations == 0 and cs.residual == 0.0
    assert 10 < cs.steps < 400  # stopped on its tolerance
    assert seen.calls[-1] == (400, 400) and seen.calls[-2] == (cs.steps, 400)


@pytest.mark.parametrize("make, want_iterations", [
    (lambda den: DDS(den, n_steps=N_STEPS, sigma_max=1.0, cg_steps=3), 3),
    (lambda den: DDS(den, n_steps=N_STEPS, sigma_max=1.0, cg_steps=0), 0),
    (lambda den: DPS(den, n_steps=N_STEPS, sigma_max=1.0, cg_steps=4), 4),
    (lambda den: DPS(den, n_steps=N_STEPS, sigma_max=1.0, step_rule="gaussian"), 0),
    (lambda den: REDDiff(den, n_steps=N_STEPS), 0),
])
def test_diffusion_samplers_count_denoiser_calls_and_cg_iterations(make, want_iterations, problem):
    op, y, den = problem
    counted = CountingDenoiser(den)
    s = make(counted)
    result = call(s, op, y[:B])
    assert result.nfe == counted.calls == N_STEPS + (1 if isinstance(s, REDDiff) else 0)
    assert result.steps == N_STEPS
    # Few CG steps on a 256-pixel problem never reach the tolerance: every step uses them all.
    assert result.iterations == want_iterations <= getattr(s, "cg_steps", 0)
    assert result.residual == 0.0
