"""The Gaussian posterior sampler against the closed-form posterior of a tiny linear problem.

Tolerances are set from the Monte Carlo error of the sample mean and covariance, so a sampler
off by a factor (sigma for sigma^2, a missing prior perturbation) fails by many standard errors.
"""

import numpy as np
import pytest
import torch

from inversa.models.physics.base import Gradient2D, MatrixOperator
from inversa.models.samplers import REGISTRY
from inversa.models.samplers.gaussian import GaussianPosterior, gmrf_marginal_variance_factor

H = W = 6
N_PIX = H * W
N_MEAS = 24  # fewer measurements than pixels: the prior decides part of the answer
LAM_GRAD, LAM_0, PRIOR_MEAN = 2.0, 0.5, 0.3
SIGMAS = torch.tensor([0.5, 0.2], dtype=torch.float64)


def problem():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(N_MEAS, N_PIX, generator=g, dtype=torch.float64) / np.sqrt(N_PIX)
    op = MatrixOperator(a, in_shape=(H, W), out_shape=(N_MEAS,))
    x_true = torch.rand(2, H, W, generator=g, dtype=torch.float64)
    y = op(x_true) + SIGMAS[:, None] * torch.randn(2, N_MEAS, generator=g, dtype=torch.float64)
    return a, op, y


def closed_form(a, y, sigma):
    grad = Gradient2D((H, W)).double()
    gmat = grad(torch.eye(N_PIX, dtype=torch.float64).reshape(N_PIX, H, W)).reshape(N_PIX, -1).T
    q = LAM_GRAD * gmat.T @ gmat + LAM_0 * torch.eye(N_PIX, dtype=torch.float64)
    prec = a.T @ a / sigma**2 + q
    cov = torch.linalg.inv(prec)
    mean = cov @ (a.T @ y / sigma**2 + q @ torch.full((N_PIX,), PRIOR_MEAN, dtype=torch.float64))
    return mean, cov


def sampler():
    return GaussianPosterior(prior_mean=PRIOR_MEAN, lam_grad=LAM_GRAD, lam_0=LAM_0, tol=1e-10, max_iter=300)


def test_samples_have_the_posterior_mean_and_covariance():
    a, op, y = problem()
    s = sampler()
    n = 12000
    gens = [torch.Generator().manual_seed(100 + b) for b in range(2)]
    result = s.sample(y, op, SIGMAS, n=n, generator=gens)
    samples = result.samples
    assert samples.shape == (n, 2, H, W)
    assert result.nfe > 0 and not s.deterministic
    used_mean = s.posterior_mean(y, op, SIGMAS)  # the cached mean the samples were drawn around
    for b in range(2):
        mean, cov = closed_form(a, y[b], SIGMAS[b])
        # The CG mean is exact to the solver tolerance.
        torch.testing.assert_close(used_mean[b].reshape(-1), mean, rtol=0, atol=1e-6)
        x = samples[:, b].reshape(n, -1)
        # Sample mean: each coordinate within 4.5 Monte Carlo standard errors.
        z_mean = (x.mean(0) - mean) / torch.sqrt(torch.diag(cov) / n)
        assert z_mean.abs().max() < 4.5
        # Sample covariance: each entry within 5 standard errors, Var(C_ij) = (C_ii C_jj + C_ij^2) / n.
        emp = torch.cov(x.T, correction=1)
        d = torch.diag(cov)
        se = torch.sqrt((d[:, None] * d[None, :] + cov**2) / n)
        assert ((emp - cov) / se).abs().max() < 5.0
        # And the variances overall within 3 % (a wrong factor is off by far more).
        ratio = torch.diag(emp) / d
        assert abs(float(ratio.mean()) - 1) < 0.03


def test_wrong_noise_level_is_detected_by_the_same_check():
    # The check above would catch a sampler built with the wrong sigma: here the "truth" is
    # computed with sigma^2 replaced by sigma, and the samples disagree by many errors.
    a, op, y = problem()
    n = 4000
    samples = sampler().sample(y[:1], op, SIGMAS[:1], n=n, generator=torch.Generator().manual_seed(3)).samples
    _, wrong_cov = closed_form(a, y[0], torch.sqrt(SIGMAS[0]))
    emp = torch.cov(samples[:, 0].reshape(n, -1).T)
    ratio = torch.diag(emp) / torch.diag(wrong_cov)
    assert abs(float(ratio.mean()) - 1) > 0.1


def test_results_do_not_depend_on_batching():
    _, op, y = problem()
    both = sampler().sample(y, op, SIGMAS, n=5, generator=[torch.Generator().manual_seed(s) for s in (1, 2)]).samples
    alone = sampler().sample(y[1:], op, SIGMAS[1:], n=5, generator=[torch.Generator().manual_seed(2)]).samples
    torch.testing.assert_close(both[:, 1], alone[:, 0], rtol=0, atol=1e-8)


def test_mean_is_cached_across_sample_chunks():
    _, op, y = problem()
    s = sampler()
    first = s.sample(y, op, SIGMAS, n=2, generator=torch.Generator().manual_seed(0))
    second = s.sample(y, op, SIGMAS, n=2, generator=torch.Generator().manual_seed(1))
    assert second.nfe < first.nfe  # no second mean solve
    # The mean both chunks were drawn around is the one posterior_mean returns, and a fresh solve's.
    cached = s.posterior_mean(y, op, SIGMAS)
    torch.testing.assert_close(cached, sampler().posterior_mean(y, op, SIGMAS))
    # Each chunk is that mean plus its own perturbation: drawn again around a fresh solve, it is the same.
    again = sampler().sample(y, op, SIGMAS, n=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(second.samples, again.samples)


def test_prior_std_and_correlation_length_set_the_marginal_std():
    # Centre pixel of a 40 x 40 image, exact inverse of the prior precision.
    ell, std = 3.0, 0.04
    s = GaussianPosterior(prior_std=std, correlation_length=ell)
    assert s.lam_grad == pytest.approx(ell**2 * s.lam_0)
    size = 40
    grad = Gradient2D((size, size)).double()
    eye = torch.eye(size * size, dtype=torch.float64).reshape(-1, size, size)
    gmat = grad(eye).reshape(size * size, -1).T
    q = s.lam_grad * gmat.T @ gmat + s.lam_0 * torch.eye(size * size, dtype=torch.float64)
    centre = (size // 2) * size + size // 2
    var = torch.linalg.inv(q)[centre, centre]
    assert float(torch.sqrt(var)) == pytest.approx(std, rel=0.02)
    assert gmrf_marginal_variance_factor(0.0) == pytest.approx(1.0)


def test_bad_parameters_and_inputs_are_refused():
    _, op, y = problem()
    with pytest.raises(ValueError, match="lam_0"):
        GaussianPosterior(lam_grad=1.0)
    with pytest.raises(ValueError, match="prior_std"):
        GaussianPosterior(prior_std=0.0)
    with pytest.raises(ValueError, match="noise_sigma"):
        sampler().sample(y, op, None, n=1)
    with pytest.raises(ValueError, match="noise_sigma"):
        sampler().sample(y, op, torch.tensor([1.0, 2.0, 3.0]), n=1)
    with pytest.raises(ValueError, match="shape"):
        sampler().sample(y[:, :5], op, 0.1, n=1)
    with pytest.raises(ValueError, match="generators"):
        sampler().sample(y, op, 0.1, n=1, generator=[torch.Generator()])
    assert REGISTRY["gaussian"] is GaussianPosterior
