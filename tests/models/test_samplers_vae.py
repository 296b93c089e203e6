"""VAE samplers against a linear-Gaussian "VAE" whose posterior is known, and on a tiny trained HVAE.

Linear model (``LinearVAEPrior``): ``x = W z + b``, ``z ~ N(0, I_6)`` on 4 x 4 images, operator
``A = 0.8 R`` (``R`` orthogonal, so ``A^T A = 0.64 I``), noise 0.2 and 0.4 for the two slices.
The latent posterior is ``N(m, P^-1)``, ``P = I + W^T A^T A W / sigma^2``; the mean-field
Gaussian closest to it in KL (VBLE's optimum) has mean ``m`` and variances ``1 / P_ii``, the exact
marginals when ``W`` has orthogonal columns (``P`` diagonal). Errors are in mean-field posterior
stds. VBLE at 600 steps of 8 draws: mean within 1e-5 std and log-std within 0.05 (worst of 5
problems x 2 slices, both W kinds), so the tolerances below (0.02, 0.1) are loose for VBLE and
tight against the wrong objectives, whose optima lie 0.3-0.6 std away in the mean or 0.45 in the
log-std (checked in the test). Langevin draws are compared by Monte Carlo (1000 independent chains per slice:
mean error 0.032 std per coordinate, variance ratio 0.045, plus ULA's ~5 % excess at ``h = 0.1``).

The network tests run a tiny HVAE (16 x 16, two latent scales) trained for a few steps, in float64
so a slice alone and in a batch agree to rounding.
"""

from __future__ import annotations

import pytest
import torch

from inversa.models.physics.base import MatrixOperator
from torch.nn import functional as F

from inversa.models.priors.vae import (LinearVAEPrior, VAEConfig, VAEPrior, build_vae, unconditional_vae_samples,
                                       vae_loss)
from inversa.models.samplers.vae import VBLE, LatentLangevin, PnPHVAE, VAESampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = W = 4
N_PIX, K = H * W, 6
BIAS = 0.3
NOISE = torch.tensor([0.2, 0.4], dtype=torch.float64)
N_SAMPLES = 1000


def gens(seed: int, count: int = 2):
    return [torch.Generator().manual_seed(seed + b) for b in range(count)]


def linear_problem(diagonal: bool = True, gamma: float = 0.05, seed: int = 0):
    """``(prior, operator, y, W, A)``; ``diagonal``: ``W`` with orthogonal columns, so ``P`` is diagonal."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N_PIX, N_PIX, generator=g, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(N_PIX, N_PIX, generator=g, dtype=torch.float64))
    if diagonal:
        w = q[:, :K] * torch.linspace(0.1, 1.0, K, dtype=torch.float64)
    else:
        w = torch.randn(N_PIX, K, generator=g, dtype=torch.float64) / 2
    a = 0.8 * r
    z = torch.randn(2, K, generator=g, dtype=torch.float64)
    y = (z @ w.T + BIAS) @ a.T + NOISE[:, None] * torch.randn(2, N_PIX, generator=g, dtype=torch.float64)
    return LinearVAEPrior(w, BIAS, (H, W), gamma=gamma), MatrixOperator(a, (H, W), (N_PIX,)), y, w, a


def latent_posterior(w, a, y, sigma):
    """Mean and precision of ``p(z | y)``, and the maximum-likelihood ``z`` (the optimum without a KL term)."""
    m = a @ w
    p = torch.eye(K, dtype=torch.float64) + m.T @ m / sigma**2
    r = y - a @ torch.full((N_PIX,), BIAS, dtype=torch.float64)
    return torch.linalg.solve(p, m.T @ r / sigma**2), p, torch.linalg.solve(m.T @ m, m.T @ r)


@pytest.mark.parametrize("diagonal", [True, False])
def test_vble_finds_the_mean_field_optimum(diagonal):
    prior, op, y, w, a = linear_problem(diagonal)
    fit = VBLE(prior, n_iter=600, mc_samples=8).fit(y, op, NOISE, generator=gens(10))
    (mean, log_std), = fit
    assert mean.shape == log_std.shape == (2, K)
    for b in range(2):
        m, p, ml = latent_posterior(w, a, y[b], NOISE[b])
        sd = torch.diag(p).rsqrt()  # mean-field std; the exact marginal std when diagonal
        if diagonal:
            torch.testing.assert_close(sd, torch.diag(torch.linalg.inv(p)).sqrt())
        assert float(((mean[b] - m) / sd).abs().max()) < 0.02
        assert float((log_std[b] - sd.log()).abs().max()) < 0.1
        # What a wrong objective would converge to lies outside these tolerances: no KL term gives
        # the least-squares latents (and zero spread); a noise variance off by 4 (sigma for sigma^2
        # at sigma = 0.5, or a lost factor 2 in the std) moves both mean and spread.
        assert float(((ml - m) / sd).abs().max()) > 0.1
        m2, p2, _ = latent_posterior(w, a, y[b], 2 * NOISE[b])
        assert float(((m2 - m) / sd).abs().max()) > 0.3
        assert float((0.5 * torch.log(torch.diag(p) / torch.diag(p2))).abs().max()) > 0.4


def test_vble_draws_come_from_the_fitted_q():
    prior, op, y, w, _ = linear_problem()
    s = VBLE(prior, n_iter=100)
    (mean, log_std), = s.fit(y, op, NOISE, generator=gens(3))
    result = s.sample(y, op, NOISE, n=N_SAMPLES, generator=gens(3))
    assert result.samples.shape == (N_SAMPLES, 2, H, W) and result.nfe == 100 + 2 and result.steps == 100
    z = (result.samples.reshape(N_SAMPLES, 2, N_PIX) - BIAS) @ torch.linalg.pinv(w).T
    sd = log_std.exp()
    assert float(((z.mean(0) - mean) / sd).abs().max()) < 0.15  # 1000 draws: 0.032 std per coordinate
    ratio = z.var(0) / sd**2
    assert 0.8 < float(ratio.min()) and float(ratio.max()) < 1.2


def test_langevin_matches_the_posterior():
    prior, op, y, w, a = linear_problem()
    result = LatentLangevin(prior).sample(y, op, NOISE, n=N_SAMPLES, generator=gens(20))
    assert result.samples.shape == (N_SAMPLES, 2, H, W)
    assert result.steps == 200 + 300 and result.nfe == 1 + 200 + 1 + 301
    z = (result.samples.reshape(N_SAMPLES, 2, N_PIX) - BIAS) @ torch.linalg.pinv(w).T
    for b in range(2):
        m, p, _ = latent_posterior(w, a, y[b], NOISE[b])
        cov = torch.linalg.inv(p)
        sd = torch.diag(cov).sqrt()
        assert float(((z[:, b].mean(0) - m) / sd).abs().max()) < 0.15
        assert float((m / sd).abs().max()) > 1.0  # the prior mean 0 is far outside that
        ratio = z[:, b].var(0) / torch.diag(cov)
        assert 0.8 < float(ratio.min()) and float(ratio.max()) < 1.3  # measured 1.00-1.09


@pytest.mark.parametrize("stochastic", [True, False])
def test_pnp_hvae_finds_the_posterior_mean_of_a_linear_model(stochastic):
    """With an exact encoder and tau = 1 the stochastic version is a Gibbs sampler of ``p(x, z | y)``
    and the deterministic one converges to its mode; both means are ``E[x | y]`` under
    ``x = W z + b + gamma e`` (measured: |z| <= 0.05 stochastic, 1e-9 deterministic)."""
    gamma = 0.3
    prior, op, y, w, a = linear_problem(gamma=gamma)
    n = 500 if stochastic else 2
    result = PnPHVAE(prior, stochastic=stochastic).sample(y, op, NOISE, n=n, generator=gens(30))
    assert result.samples.shape == (n, 2, H, W) and result.nfe == 50 and result.iterations == 1
    eye = torch.eye(N_PIX, dtype=torch.float64)
    cx = w @ w.T + gamma**2 * eye
    prior_mean = torch.full((N_PIX,), BIAS, dtype=torch.float64)
    for b in range(2):
        gain = cx @ a.T @ torch.linalg.inv(a @ cx @ a.T + NOISE[b] ** 2 * eye)
        mean, cov = prior_mean + gain @ (y[b] - a @ prior_mean), cx - gain @ a @ cx
        sd = torch.diag(cov).sqrt()
        err = float(((result.samples[:, b].reshape(n, -1).mean(0) - mean) / sd).abs().max())
        assert err < (0.2 if stochastic else 1e-6)
        assert float(((prior_mean - mean) / sd).abs().max()) > 1.0
    spread = result.samples.std(0)
    assert bool((spread > 0).all()) if stochastic else float(spread.max()) == 0.0


# -- a tiny trained HVAE --------------------------------------------------------------------
def smooth_images(n: int, seed: int) -> torch.Tensor:
    """Blurred noise in about [-0.5, 0.5] (normalised units), 16 x 16."""
    g = torch.Generator().manual_seed(seed)
    x = F.conv2d(F.pad(torch.randn(n, 1, 16, 16, generator=g), (2, 2, 2, 2), mode="circular"), torch.ones(1, 1, 5, 5) / 25)
    return (0.5 * x / x.abs().amax(dim=(1, 2, 3), keepdim=True)).squeeze(1)


HVAE = VAEConfig(kind="hvae", image_size=16, channels=(8, 16, 16), latent_channels=(4, 2))
OFFSET, SCALE, SIGMA = 0.02, 0.04, 2e-3


@pytest.fixture(scope="module")
def hvae():
    torch.manual_seed(0)
    module = build_vae({"architecture": HVAE.to_dict()})
    x = smooth_images(16, seed=1)
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    for step in range(40):
        loss = vae_loss(module, x, torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return VAEPrior(module.double(), offset=OFFSET, scale=SCALE)


@pytest.fixture(scope="module")
def ct_like(hvae):
    """An underdetermined random operator (96 measurements of 256 pixels) and data of two held-out images."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(96, 256, generator=g, dtype=torch.float64) / 16
    op = MatrixOperator(a, (16, 16), (96,))
    x = OFFSET + SCALE * smooth_images(2, seed=9).double()
    y = op(x) + SIGMA * torch.randn(2, 96, generator=g, dtype=torch.float64)
    return op, y


MAKERS = {
    "vble": lambda vae: VBLE(vae, n_iter=12),
    "pnp-hvae": lambda vae: PnPHVAE(vae, n_iter=6, cg_steps=5),
    "vae-langevin": lambda vae: LatentLangevin(vae, map_steps=6, burn_in=4, thin=2, chains=2),
}
TOTALS = {"vble": 12, "pnp-hvae": 6, "vae-langevin": 6 + 4 + 2}  # langevin: 3 draws from 2 chains -> 2 rounds


def run(sampler, y, op, n=3, seed=5, callback=None):
    ctx = torch.no_grad() if sampler.no_grad else torch.enable_grad()
    with ctx:
        return sampler.sample(y, op, SIGMA, n, gens(seed, y.shape[0]), callback=callback)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_sampler_contract(name, hvae, ct_like):
    op, y = ct_like
    s = MAKERS[name](hvae)
    assert s.name == name and isinstance(s, VAESampler) and s.prior_param == "vae" and not s.deterministic
    assert s.params()["vae"] == repr(hvae)
    before = dict(vars(s))
    seen = []
    result = run(s, y, op, callback=lambda step, total: seen.append((step, total)))
    assert result.samples.shape == (3, 2, 16, 16) and result.samples.dtype == torch.float64
    assert bool(torch.isfinite(result.samples).all()) and result.nfe >= result.steps == TOTALS[name]
    assert seen == [(k, TOTALS[name]) for k in range(1, TOTALS[name] + 1)]
    assert dict(vars(s)).keys() == before.keys() and all(vars(s)[k] is before[k] for k in before)
    # Same seeds, same draws; other seeds, other draws; and draws differ from one another.
    again = run(MAKERS[name](hvae), y, op)
    assert torch.equal(again.samples, result.samples) and again.nfe == result.nfe
    assert not torch.equal(run(s, y, op, seed=50).samples, result.samples)
    with torch.no_grad():  # a caller that ignores no_grad = False changes nothing
        assert torch.equal(s.sample(y, op, SIGMA, 3, gens(5)).samples, result.samples)
    assert float(result.samples.std(0).max()) > 0
    # A slice reconstructed alone gets what it got in the batch.
    for b in range(2):
        alone = MAKERS[name](hvae).sample(y[b:b + 1], op, SIGMA, 3, gens(5 + b, 1)).samples
        torch.testing.assert_close(alone[:, 0], result.samples[:, b], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_draws_fit_the_data_better_than_the_prior_does(name, hvae, ct_like):
    op, y = ct_like
    s = {"vble": VBLE(hvae, n_iter=60), "pnp-hvae": PnPHVAE(hvae, n_iter=20),
         "vae-langevin": LatentLangevin(hvae, map_steps=60, burn_in=20, chains=4)}[name]
    draws = run(s, y, op, n=4).samples
    free = unconditional_vae_samples(hvae, 4, seed=0).double()[:, None].expand(4, 2, 16, 16)

    def misfit(x):  # (n, 2, 16, 16) -> mean squared residual against each slice's data
        return float((op(x.reshape(-1, 16, 16)).reshape(x.shape[0], 2, -1) - y).square().mean())

    # Measured ratios: vble 0.27, vae-langevin 0.17, pnp-hvae 0.02 (its x-step fits the data itself);
    # a 40-step HVAE is coarse: even its encoding of the true images leaves 0.36 of the prior's misfit.
    assert misfit(draws) < 0.4 * misfit(free)


def test_other_image_sizes_run_through_padding(hvae):
    g = torch.Generator().manual_seed(2)
    op = MatrixOperator(torch.randn(40, 14 * 18, generator=g, dtype=torch.float64) / 16, (14, 18), (40,))
    y = op(torch.full((1, 14, 18), OFFSET, dtype=torch.float64))
    for make in MAKERS.values():
        out = run(make(hvae), y, op, n=2, seed=1).samples
        assert out.shape == (2, 1, 14, 18) and bool(torch.isfinite(out).all())


def test_bad_settings_are_named(hvae, ct_like):
    op, y = ct_like
    with pytest.raises(ValueError, match="vble: no VAE prior set"):
        VBLE().sample(y, op, SIGMA)
    with pytest.raises(TypeError, match="vae-langevin: vae must be a VAE prior.*lacks"):
        LatentLangevin(vae=lambda x, s: x)
    with pytest.raises(ValueError, match="vble: antithetic draws come in pairs; mc_samples must be even"):
        VBLE(hvae, mc_samples=3)
    with pytest.raises(ValueError, match="vble: init must be one of"):
        VBLE(hvae, init="zeros")
    with pytest.raises(ValueError, match="vble: average must be a fraction"):
        VBLE(hvae, average=1.0)
    with pytest.raises(ValueError, match="pnp-hvae: temperature must be a finite number > 0"):
        PnPHVAE(hvae, temperature=0.0)
    with pytest.raises(ValueError, match="pnp-hvae: n_iter must be an integer >= 1"):
        PnPHVAE(hvae, n_iter=0)
    with pytest.raises(ValueError, match="vae-langevin: step_size must be < 2"):
        LatentLangevin(hvae, step_size=3.0)
    with pytest.raises(ValueError, match="noise_sigma"):
        VBLE(hvae).sample(y, op, None)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        PnPHVAE(hvae).sample(y, op, SIGMA, n=0)
    with pytest.raises(ValueError, match="vae-langevin: n must be an integer >= 1, got None"):
        LatentLangevin(hvae).sample(y, op, SIGMA, n=None)
    with pytest.raises(ValueError, match="measurement y has shape"):
        VBLE(hvae).sample(y[:, :10], op, SIGMA)
