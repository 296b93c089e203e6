"""FlowDPS against a Gaussian prior whose posterior is known in closed form, and its sampler contract.

With the exact velocity field of ``x0 ~ N(mu, v I)`` (``GaussianFlow``, noise end ``N(0.2, 0.4^2 I)``
so the physical-units convention is exercised), a random matrix ``A`` and Gaussian noise, the
posterior is ``N(m, S)`` exactly. Errors are measured per pixel in posterior standard deviations
(``z = (sample mean - m) / sqrt(S_ii)``) and as variance ratios. With ``N_SAMPLES = 1000`` the Monte
Carlo error of ``z`` is 0.032 per pixel (max over 72 pixels about 0.11) and that of a variance ratio
0.045 per pixel (max about 0.16). The prior is white because that is where the ``posterior`` data
step (``x0 | x_t`` taken as ``N(x0_hat, r^2 I)``) is exact; what remains is the method's own
approximation, the measured numbers in each test. The prior mean lies 2.7 posterior standard
deviations or more from ``m``, far outside every mean tolerance, so a data step that is missing,
reversed or pulls toward other data fails.
"""

import math

import pytest
import torch

from inversa.models.physics.base import MatrixOperator
from inversa.models.priors.flow import FlowPrior, FlowVelocity
from inversa.models.priors.gaussian_flow import GaussianFlow
from inversa.models.priors.unet import UNet, UNetConfig
from inversa.models.samplers.flow import FlowDPS
from tests.models.white_gaussian import (H, N_PIX, N_SAMPLES, NOISE, PRIOR_MEAN, PRIOR_VAR, W,
                                        linear_problem, posterior_errors)

OFFSET, SCALE = 0.2, 0.4


def problem():
    a, op, y = linear_problem()
    white = PRIOR_VAR * torch.eye(N_PIX, dtype=torch.float64)
    flow = GaussianFlow(PRIOR_MEAN, white, (H, W), offset=OFFSET, scale=SCALE)
    return a, op, y, flow


def gens(seed: int, count: int = 2):
    return [torch.Generator().manual_seed(seed + b) for b in range(count)]


def errors(sampler, y=None):
    """Max |z| of the sample mean and the range of variance ratios over both slices, the prior mean's
    smallest max |z|, and the call's ``SampleResult``."""
    a, op, y0, _ = problem()
    y = y0 if y is None else y
    result = sampler.sample(y, op, NOISE, n=N_SAMPLES, generator=gens(10))
    return (*posterior_errors(result.samples, a, y0), result)


def test_flowdps_recovers_the_posterior_mean():
    """The paper's algorithm (default): 28 steps, ``a = sqrt(t')`` mixing.

    Measured: |z| <= 0.14 (Monte Carlo alone reaches 0.11), so 0.3 leaves room for the CG
    truncation (5 steps of a 36-pixel solve) and the step count. Its spread is too narrow by design
    of the mixing (variance ratio 0.63-0.79 measured here, 0.57-0.69 with noise of scale 1, and about
    the same with no data: see ``test_prior_alone``), so the band checks that documented
    under-dispersion, not calibration.
    """
    _, _, _, flow = problem()
    s = FlowDPS(flow)
    z, lo, hi, prior_z, result = errors(s)
    assert (s.n_steps, s.cg_steps, s.noise_mixing, s.consistency) == (28, 5, "flowdps", "posterior")
    assert result.nfe == result.steps == 28 and result.iterations == 5 and result.residual == 0.0
    assert z < 0.3 < prior_z
    assert 0.45 < lo and hi < 0.9


def test_ancestral_mixing_matches_the_posterior_mean_and_spread():
    """The DDPM-bridge mixing samples the posterior as steps grow: measured (100 steps) |z| <= 0.09
    and variance ratio 0.86-1.06 (0.74-0.94 at 28 steps); the tolerances add the Monte Carlo maxima
    (0.11, 0.16) to that."""
    _, _, _, flow = problem()
    z, lo, hi, prior_z, result = errors(FlowDPS(flow, n_steps=100, noise_mixing="ancestral"))
    assert result.nfe == 100
    assert z < 0.25 < prior_z
    assert 0.7 < lo and hi < 1.2


class Recording:
    """The flow, recording every ``(x_t, t)`` the sampler splits."""

    def __init__(self, flow):
        self.flow, self.seen = flow, []
        self.offset, self.scale, self.data_variance = flow.offset, flow.scale, flow.data_variance

    def split(self, x, t):
        self.seen.append((x.clone(), t))
        return self.flow.split(x, t)


def test_converged_data_step_is_the_exact_conditional_mean():
    """For a white prior the ``posterior`` step, solved to convergence, is ``E[x0 | x_t, y]`` exactly:
    ``(x_t - t offset) / (1 - t) = x0 + s eps`` with ``s = scale t / (1 - t)`` is one more Gaussian
    observation of ``x0``. The last step returns that mean for the last ``x_t``, deterministically, so
    a wrong noise level (``scale`` left out of ``s``), a wrong sign or a skipped final step shows here
    at 1e-8 where the Monte Carlo tests above cannot see it."""
    a, op, y, flow = problem()
    rec = Recording(flow)
    out = FlowDPS(rec, n_steps=3, cg_steps=60).sample(y, op, NOISE, n=3, generator=gens(4)).samples
    x_t, t = rec.seen[-1]
    assert t == pytest.approx(1 / 3)
    s2 = (SCALE * t / (1 - t)) ** 2
    for item in range(6):
        sample, b = divmod(item, 2)
        precision = a.T @ a / NOISE[b] ** 2 + torch.eye(N_PIX, dtype=torch.float64) * (1 / PRIOR_VAR + 1 / s2)
        seen = (x_t[item].reshape(-1) - t * OFFSET) / (1 - t)
        want = torch.linalg.solve(precision, a.T @ y[b] / NOISE[b] ** 2 + PRIOR_MEAN / PRIOR_VAR + seen / s2)
        torch.testing.assert_close(out[sample, b].reshape(-1), want, rtol=1e-8, atol=1e-8)


def test_data_step_pulls_toward_these_data():
    _, _, y, flow = problem()
    # Toward the mirrored data (the sign of A^T y flipped): far from the posterior mean.
    z, _, _, _, _ = errors(FlowDPS(flow), y=-y)
    assert 2.0 < z < 1e3
    # No data step at all: the prior's draws, about the prior mean's distance away.
    z, _, _, prior_z, result = errors(FlowDPS(flow, cg_steps=0))
    assert z > 2.0 and result.iterations == 0
    # The paper's unweighted step (Krylov, blended by t) ignores the noise level: a biased mean
    # (measured |z| 0.20 here, 0.77 with noise of scale 1), still far closer than the prior mean.
    z, _, _, prior_z, _ = errors(FlowDPS(flow, consistency="krylov"))
    assert z < 0.5 * prior_z


def test_prior_alone():
    """With no data step the chain samples the prior: the ancestral mixing nearly right (variance ratio
    0.90-1.00 measured at 100 steps), the paper's mixing too narrow (0.69-0.77 at 28 steps, 0.66-0.82
    at 100: more steps do not fix it). Means within 4.5 Monte Carlo standard errors (measured <= 2.8)."""
    _, op, y, flow = problem()

    def variance_ratio(sampler):
        x = sampler.sample(y, op, NOISE, n=N_SAMPLES, generator=gens(3)).samples.reshape(-1, N_PIX)
        mean_z = (x.mean(0) - PRIOR_MEAN) / math.sqrt(PRIOR_VAR / x.shape[0])
        assert float(mean_z.abs().max()) < 4.5
        var = x.var(0) / PRIOR_VAR
        return float(var.min()), float(var.max())

    lo, hi = variance_ratio(FlowDPS(flow, n_steps=100, cg_steps=0, noise_mixing="ancestral"))
    assert 0.8 < lo and hi < 1.15
    lo, hi = variance_ratio(FlowDPS(flow, n_steps=28, cg_steps=0))
    assert 0.5 < lo and hi < 0.85


@pytest.mark.parametrize("kwargs", [{}, {"noise_mixing": "ancestral"}, {"consistency": "krylov", "cg_steps": 2}])
def test_draws_depend_on_the_seed_only_not_on_the_batch_split(kwargs):
    _, op, y, flow = problem()

    def draw(yy, noise, seeds):
        return FlowDPS(flow, n_steps=8, **kwargs).sample(yy, op, noise, n=4, generator=seeds).samples

    together = draw(y, NOISE, gens(7))
    assert together.shape == (4, 2, H, W) and bool(torch.isfinite(together).all())
    assert torch.equal(together, draw(y, NOISE, gens(7)))
    assert not torch.allclose(together, draw(y, NOISE, gens(8)))
    for b in range(2):
        alone = draw(y[b:b + 1], NOISE[b], [torch.Generator().manual_seed(7 + b)])
        torch.testing.assert_close(alone[:, 0], together[:, b], rtol=1e-9, atol=1e-9)


def test_reports_every_step_counts_velocity_calls_and_keeps_nothing():
    _, op, y, flow = problem()

    class Counting:
        def __init__(self):
            self.calls, self.offset, self.scale, self.data_variance = 0, flow.offset, flow.scale, flow.data_variance

        def split(self, x, t):
            self.calls += 1
            return flow.split(x, t)

    counted = Counting()
    s = FlowDPS(counted, n_steps=6, cg_steps=3)
    before = dict(vars(s))
    seen = []
    result = s.sample(y, op, NOISE, n=3, generator=gens(1), callback=lambda step, total: seen.append((step, total)))
    assert seen == [(k, 6) for k in range(1, 7)]
    assert result.nfe == counted.calls == result.steps == 6 and result.iterations == 3 and result.residual == 0.0
    assert vars(s) == before and all(vars(s)[k] is before[k] for k in before)  # nothing of the call on the sampler
    assert s.params() == {"flow": repr(counted), "n_steps": 6, "cg_steps": 3, "consistency": "posterior",
                          "noise_mixing": "flowdps", "prior_variance": None, "shift": 1.0}
    assert FlowDPS.name == "flowdps" and FlowDPS.prior_param == "flow" and not FlowDPS.deterministic
    assert FlowDPS.no_grad and repr(FlowDPS(flow)).startswith("FlowDPS(flow='GaussianFlow(shape=(6, 6))', n_steps=28")


def test_runs_a_network_prior_on_two_channel_images():
    """A (fresh) ``FlowPrior`` on real-and-imaginary images ``(2, 8, 8)`` of a float64 operator."""
    config = UNetConfig(image_size=8, channels=(8, 16), attention_levels=(), embedding=16, in_channels=2)
    prior = FlowPrior(FlowVelocity(UNet(config)), offset=0.0, scale=0.5, pixel_size_mm=None)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 128, generator=g, dtype=torch.float64) / math.sqrt(128)
    op = MatrixOperator(a, (2, 8, 8), (64,))
    y = torch.randn(2, 64, generator=g, dtype=torch.float64)
    out = FlowDPS(prior, n_steps=4, cg_steps=2, shift=3.0).sample(y, op, 0.1, n=2, generator=gens(0))
    assert out.samples.shape == (2, 2, 2, 8, 8) and out.samples.dtype == torch.float64
    assert bool(torch.isfinite(out.samples).all()) and out.nfe == 4


def test_bad_input_is_named():
    _, op, y, flow = problem()
    with pytest.raises(ValueError, match="no flow prior"):
        FlowDPS().sample(y, op, NOISE)
    with pytest.raises(TypeError, match="flow must have split"):
        FlowDPS(lambda x, s: x)
    for kwargs, message in [({"n_steps": 0}, "n_steps must be >= 1"), ({"cg_steps": -1}, "cg_steps must be >= 0"),
                            ({"consistency": "dds"}, "consistency must be one of"),
                            ({"noise_mixing": "ddim"}, "noise_mixing must be one of"),
                            ({"prior_variance": 0.0}, "prior_variance must be"), ({"shift": 0.0}, "shift must be")]:
        with pytest.raises(ValueError, match=message):
            FlowDPS(flow, **kwargs)
    with pytest.raises(ValueError, match="noise_sigma"):
        FlowDPS(flow).sample(y, op, None)
    with pytest.raises(ValueError, match="n must be >= 1"):
        FlowDPS(flow).sample(y, op, NOISE, n=0)
    with pytest.raises(ValueError, match="measurement y has shape"):
        FlowDPS(flow).sample(y[:, :5], op, NOISE)
