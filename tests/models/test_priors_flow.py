"""The flow-matching prior: the velocity network's shapes and preconditioning, its loss, a checkpoint
round trip, the physical-units convention, and the exact Gaussian velocity field the samplers are
tested against (checked against the Gaussian denoiser it must equal, and by transporting noise to
the Gaussian it describes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inversa.models.priors.flow import (FlowPrior, FlowVelocity, build_velocity, flow_matching_loss,
                                        flow_prior_from_arrays, flow_times, unconditional_flow_samples)
from inversa.models.priors.gaussian_denoiser import GaussianDenoiser
from inversa.models.priors.gaussian_flow import GaussianFlow
from inversa.models.priors.prior import build_denoiser
from inversa.models.priors.training import step_generator
from inversa.models.priors.unet import UNet, UNetConfig

TINY = UNetConfig(image_size=8, channels=(8, 16), attention_levels=(), embedding=16)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make the zero-initialised output layers non-zero, so the network term is really there."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.abs().sum():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return module


def _smooth_covariance(h: int, w: int, variance: float, length: float = 2.0) -> torch.Tensor:
    idx = torch.stack(torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij"), -1).reshape(-1, 2)
    d2 = ((idx[:, None] - idx[None]) ** 2).sum(-1).double()
    return variance * torch.exp(-d2 / length**2) + 0.05 * variance * torch.eye(h * w, dtype=torch.float64)


@pytest.mark.parametrize("in_channels, batch", [(1, 3), (2, 2)])
def test_velocity_network_keeps_the_image_shape_and_depends_on_t(in_channels, batch):
    config = UNetConfig(**{**TINY.to_dict(), "in_channels": in_channels})
    module = _randomise(FlowVelocity(UNet(config)))
    shape = (batch, 8, 8) if in_channels == 1 else (batch, in_channels, 8, 8)
    z = torch.randn(shape)
    t = torch.linspace(0.0, 1.0, batch)
    out = module(z, t)
    assert out.shape == z.shape and torch.isfinite(out).all()
    torch.testing.assert_close(module(z, 0.3), module(z, torch.full((batch,), 0.3)))  # a scalar t is every item's
    assert not torch.allclose(module(z, 0.2), module(z, 0.7))


def test_preconditioning_matches_its_formula_and_a_fresh_network_is_the_white_gaussian_velocity():
    sd = 0.5
    net = _randomise(UNet(TINY), seed=1)
    module = FlowVelocity(net, sigma_data=sd)
    z = torch.randn(3, 8, 8)
    t = torch.tensor([0.05, 0.5, 0.95])
    d = t**2 + sd**2 * (1 - t) ** 2
    c_in, c_skip, c_out = d.rsqrt(), (t - sd**2 * (1 - t)) / d, sd * d.rsqrt()
    f = net((c_in[:, None, None] * z).unsqueeze(1), torch.log(t / (1 - t)) / 4).squeeze(1)
    assert f.abs().mean() > 0.01  # the network term is really there
    torch.testing.assert_close(module(z, t), c_skip[:, None, None] * z + c_out[:, None, None] * f, rtol=1e-5, atol=1e-6)
    # Zero output layer: v = c_skip z_t, the exact velocity of N(0, sd^2 I) data (for N(0, I) noise).
    fresh = FlowVelocity(UNet(TINY), sigma_data=sd)
    exact = GaussianFlow(0.0, sd**2 * torch.eye(64, dtype=torch.float64), (8, 8))
    z, t = z.double(), t.double()
    torch.testing.assert_close(fresh(z, t), exact.velocity(z, t), rtol=1e-6, atol=1e-6)


def test_prior_in_physical_units_splits_x_t_into_its_two_ends():
    """``x_t = offset + scale z_t``: a fresh prior is the exact field of ``N(offset, (sd scale)^2)`` data and
    ``N(offset, scale^2)`` noise, and ``x_t = (1 - t) x0_hat + t n_hat`` whatever the network says."""
    offset, scale, sd = 0.02, 0.01, 0.5
    fresh = FlowPrior(FlowVelocity(UNet(TINY), sigma_data=sd), offset, scale, pixel_size_mm=0.5)
    white = (sd * scale) ** 2 * torch.eye(64, dtype=torch.float64)
    exact = GaussianFlow(offset, white, (8, 8), offset=offset, scale=scale)
    assert fresh.data_variance == pytest.approx(exact.data_variance)
    g = torch.Generator().manual_seed(0)
    x_t = offset + scale * torch.randn(4, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.6, 1.0], dtype=torch.float64)
    for got, want in zip(fresh.split(x_t, t), exact.split(x_t, t)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    trained = FlowPrior(_randomise(FlowVelocity(UNet(TINY))), offset, scale, pixel_size_mm=None)
    x0, n = trained.split(x_t.float(), t.float())
    assert not torch.allclose(x0, exact.split(x_t, t)[0].float())  # the network term is there
    torch.testing.assert_close((1 - t[:, None, None].float()) * x0 + t[:, None, None].float() * n, x_t.float())
    torch.testing.assert_close(trained.velocity(x_t.float(), t.float()), n - x0, rtol=1e-5, atol=1e-7)


def test_other_image_sizes_are_padded_and_channels_kept():
    prior = FlowPrior(_randomise(FlowVelocity(UNet(TINY))), 0.0, 1.0, pixel_size_mm=None)
    x = torch.randn(2, 7, 9)
    x0, n = prior.split(x, 0.4)
    assert x0.shape == n.shape == x.shape
    torch.testing.assert_close(0.6 * x0 + 0.4 * n, x)
    two = FlowPrior(FlowVelocity(UNet(UNetConfig(**{**TINY.to_dict(), "in_channels": 2}))), 0.0, 1.0, None)
    assert two.shape == (2, 8, 8) and prior.shape == (8, 8)
    assert two.velocity(torch.randn(3, 2, 6, 10), 0.5).shape == (3, 2, 6, 10)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        two.velocity(torch.randn(3, 6, 10), 0.5)


def test_loss_is_a_function_of_its_generator_and_falls_under_adam():
    torch.manual_seed(0)
    module = FlowVelocity(UNet(TINY))
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centres = torch.rand(16, 2) * 4 + 2
    data = 0.8 * (((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) < 5).float() - 0.3

    def loss(seed):
        with torch.no_grad():
            return flow_matching_loss(module, data, torch.Generator().manual_seed(seed))

    first = loss(123)
    assert torch.equal(first, loss(123)) and not torch.equal(first, loss(124))
    with pytest.raises(TypeError):
        flow_matching_loss(module, data, None, -1.2, 1.2)  # edm_loss's positional p_mean/p_std do not fit here
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    for step in range(40):
        optimiser.zero_grad()
        flow_matching_loss(module, data, step_generator(0, step)).backward()
        optimiser.step()
    assert float(loss(123)) < 0.7 * float(first)


def _arrays(module: torch.nn.Module, prefixes=("ema.", "model.")) -> dict[str, np.ndarray]:
    return {p + k: v.detach().numpy().copy() for p in prefixes for k, v in module.state_dict().items()}


def test_round_trip_through_checkpoint_arrays():
    config = {"architecture": TINY.to_dict(), "sigma_data": 0.4, "normalisation": {"offset": 0.01, "scale": 0.02},
              "data": {"pixel_size_mm": 0.25}}
    ema = _randomise(build_velocity(config), seed=2)
    model = _randomise(build_velocity(config), seed=3)
    arrays = {**_arrays(ema, ("ema.",)), **_arrays(model, ("model.",))}
    prior = flow_prior_from_arrays(arrays, config, source="flow.safetensors")
    assert (prior.offset, prior.scale, prior.pixel_size_mm) == (0.01, 0.02, 0.25)
    assert (prior.image_size, prior.channels, prior.shape) == (8, 1, (8, 8))
    assert prior.data_variance == pytest.approx((0.4 * 0.02) ** 2) and prior.config == config
    assert repr(prior) == "FlowPrior(flow.safetensors, 8x8)" and prior.to("cpu") is prior
    x_t = 0.01 + 0.02 * torch.randn(2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(prior.velocity(x_t, 0.3), 0.02 * ema((x_t - 0.01) / 0.02, 0.3))
        other = flow_prior_from_arrays(arrays, config, weights="model")
        torch.testing.assert_close(other.velocity(x_t, 0.3), 0.02 * model((x_t - 0.01) / 0.02, 0.3))
    assert unconditional_flow_samples(prior, 3, seed=1, n_steps=4).shape == (3, 8, 8)
    torch.testing.assert_close(unconditional_flow_samples(prior, 3, seed=1, n_steps=4),
                               unconditional_flow_samples(prior, 3, seed=1, n_steps=4), rtol=0, atol=0)


def test_checkpoints_that_do_not_fit_are_refused_by_name():
    config = {"architecture": TINY.to_dict()}
    with pytest.raises(ValueError, match=r"no 'ema' weights \(has prefixes \['model'\]\)"):
        flow_prior_from_arrays(_arrays(build_velocity(config), ("model.",)), config)
    diffusion = build_denoiser(config)  # the same U-Net parameter names
    with pytest.raises(ValueError, match="a diffusion checkpoint"):
        flow_prior_from_arrays(_arrays(diffusion), config, source="dds.safetensors")
    wider = {"architecture": {**TINY.to_dict(), "channels": [16, 16]}}
    with pytest.raises(ValueError, match=r"do not fit the flow architecture in its config \(size mismatch for net\."):
        flow_prior_from_arrays(_arrays(build_velocity(wider)), config)
    with pytest.raises(ValueError, match="lacks 'architecture'"):
        build_velocity({})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        FlowVelocity(UNet(TINY), sigma_data=0.0)
    module = FlowVelocity(UNet(TINY))
    with pytest.raises(ValueError, match=r"images must be \(B, H, W\), got shape \(2, 1, 8, 8\)"):
        module(torch.zeros(2, 1, 8, 8), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        module(torch.zeros(2, 8, 8), 1.5)
    with pytest.raises(ValueError, match="t has 3 values for a batch of 2"):
        module(torch.zeros(2, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="scale must be > 0"):
        FlowPrior(module, 0.0, 0.0, None)
    with pytest.raises(TypeError, match="must be a FlowVelocity"):
        FlowPrior(build_denoiser({"architecture": TINY.to_dict()}), 0.0, 1.0, None)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianFlow(0.0, torch.zeros(4, 4, dtype=torch.float64), (2, 2))
    with pytest.raises(ValueError, match=r"shift must be"):
        flow_times(4, shift=0.0)
    times = flow_times(4, shift=3.0)
    assert times[0] == 1.0 and times[-1] == 0.0 and bool(torch.all(times[1:] < times[:-1]))


def test_gaussian_flow_is_the_gaussian_denoiser_in_variance_exploding_form():
    """``x_t / (1 - t) = x0 + s eps`` with ``s = t / (1 - t)``: the clean ends must agree; the noise end
    then follows from ``x_t = (1 - t) x0_hat + t n_hat``."""
    g = torch.Generator().manual_seed(0)
    cov = _smooth_covariance(4, 5, 0.3)
    mu = torch.rand(4, 5, generator=g, dtype=torch.float64)
    flow, den = GaussianFlow(mu, cov, (4, 5)), GaussianDenoiser(mu, cov, (4, 5))
    x_t = torch.randn(4, 4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.7, 0.95], dtype=torch.float64)
    x0, n = flow.split(x_t, t)
    s = t / (1 - t)
    torch.testing.assert_close(x0, den(x_t / (1 - t)[:, None, None], s), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((1 - t[:, None, None]) * x0 + t[:, None, None] * n, x_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flow.velocity(x_t, t), n - x0)
    # The ends of the path: at t = 0 x_t is the image itself, at t = 1 it is pure noise.
    assert torch.allclose(flow.split(x_t, 0.0)[0], x_t) and torch.allclose(flow.split(x_t, 1.0)[0], mu.expand_as(x_t))


def test_gaussian_flow_transports_standard_noise_to_its_gaussian():
    """Euler steps of ``dx/dt = v`` from ``N(0, I)`` at ``t = 1`` end at ``N(mu, C)``.

    ``N_DRAWS = 4000``: a mean's Monte Carlo standard error is ``sqrt(C_ii / N)``, a covariance
    entry's ``sqrt((C_ii C_jj + C_ij^2) / N)``; over 9 means and 45 entries the largest |error| in those
    units stays under 4.5 by chance with probability > 0.99 (union bound). 200 Euler steps add an
    O(1/200) bias well inside that: the same draws with 400 steps move a mean by < 0.01 units and a
    covariance entry by < 0.35. Measured over seeds 0-7: largest |error| 2.1 (means), 3.1 (entries).
    A velocity of the wrong sign misses by hundreds of units, one with the path's ends swapped
    (``v(x, 1 - t)``) by 30 on the mean.
    """
    n_draws = 4000
    cov = _smooth_covariance(3, 3, 0.2, length=1.5)
    mu = torch.tensor([[0.5, 0.2, -0.1], [0.3, 0.0, 0.4], [1.0, -0.5, 0.2]], dtype=torch.float64)
    flow = GaussianFlow(mu, cov, (3, 3))
    x = unconditional_flow_samples(flow, n_draws, seed=7, n_steps=200, dtype=torch.float64).reshape(n_draws, 9)
    mean_err = (x.mean(0) - mu.reshape(-1)) / torch.sqrt(torch.diagonal(cov) / n_draws)
    d = torch.diagonal(cov)
    cov_err = (torch.cov(x.T) - cov) / torch.sqrt((d[:, None] * d[None] + cov**2) / n_draws)
    assert float(mean_err.abs().max()) < 4.5
    assert float(cov_err.abs().max()) < 4.5
