"""VAE priors: config, shapes of both kinds, the loss, the physical wrapper and its checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from inversa.models.priors.vae import (ConvVAE, HierarchicalVAE, VAEConfig, VAEPrior, build_vae, gaussian_kl, tempered,
                                       unconditional_vae_samples, vae_loss, vae_prior_from_arrays, vae_training_loss)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = VAEConfig(kind="vae", image_size=16, channels=(8, 16, 16), latent_channels=(4,))
TINY_H = VAEConfig(kind="hvae", image_size=16, channels=(8, 16, 16), latent_channels=(4, 2))


def smooth_images(n: int, size: int = 16, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """Blurred noise in about [-0.5, 0.5]: images with structure a tiny VAE can start to learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g)
    kernel = torch.ones(channels, 1, 5, 5) / 25
    x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="circular"), kernel, groups=channels)
    x = 0.5 * x / x.abs().amax(dim=(1, 2, 3), keepdim=True)
    return x.squeeze(1) if channels == 1 else x


def randomised(config: VAEConfig, seed: int = 0):
    """A network whose zero-initialised layers are not zero, so every path carries signal."""
    torch.manual_seed(seed)
    module = build_vae({"architecture": config.to_dict()})
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim and not p.abs().sum():
                p.normal_(0, 0.1)
    return module


def test_config_round_trips_and_builds_the_kind_it_names():
    for config, cls in ((TINY, ConvVAE), (TINY_H, HierarchicalVAE)):
        d = config.to_dict()
        assert d["channels"] == [8, 16, 16] and VAEConfig.from_dict(d) == config
        assert type(build_vae({"architecture": d})) is cls
    assert TINY_H.latent_levels == (2, 1)
    with pytest.raises(ValueError, match="lacks 'architecture'"):
        build_vae({})
    with pytest.raises(ValueError, match="config.kind must be 'vae'"):
        ConvVAE(TINY_H)


@pytest.mark.parametrize("fields, message", [
    ({"kind": "gan"}, "kind must be one of"),
    ({"image_size": 18}, "divisible by 2\\*\\*\\(levels-1\\) = 4"),
    ({"channels": (8, 12, 16)}, "divisible by groups=8"),
    ({"latent_channels": (4, 2)}, "kind 'vae' has one latent scale"),
    ({"kind": "hvae", "latent_channels": (4,)}, "needs 2 to len\\(channels\\) = 3 latent scales"),
    ({"kind": "hvae", "latent_channels": (4, 2, 2, 2)}, "needs 2 to len\\(channels\\) = 3"),
    ({"decoder_sigma": 0.0}, "decoder_sigma must be > 0"),
    ({"latent_channels": (0,)}, "latent_channels must be positive"),
])
def test_config_rejects_what_cannot_be_built(fields, message):
    with pytest.raises(ValueError, match=message):
        VAEConfig(**{**TINY.to_dict(), **fields})
    with pytest.raises(ValueError, match="unknown keys \\['width'\\]"):
        VAEConfig.from_dict({"width": 3})


@pytest.mark.parametrize("config, latent_shapes", [
    (TINY, [(4, 4, 4)]),
    (TINY_H, [(4, 4, 4), (2, 8, 8)]),
    (VAEConfig(kind="hvae", image_size=16, channels=(8, 16, 16), latent_channels=(4, 2, 2)), [(4, 4, 4), (2, 8, 8), (2, 16, 16)]),
])
def test_shapes_of_every_pass(config, latent_shapes):
    module = randomised(config)
    x = smooth_images(3)
    assert module.latent_shapes(16, 16) == latent_shapes
    assert module.latent_shapes(8, 24) == [(c, h // 2, w * 3 // 2) for c, h, w in latent_shapes]
    enc = module.encode(x)
    assert [tuple(z.shape) for z in enc.latents] == [(3, *s) for s in latent_shapes]
    assert [tuple(m.shape) for m, _ in enc.params] == [(3, *s) for s in latent_shapes]
    assert enc.decoded.shape == x.shape
    image, priors = module.decode(enc.latents)
    torch.testing.assert_close(image, enc.decoded)
    assert len(priors) == len(latent_shapes)
    recon, kls = module(x, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and [k.shape for k in kls] == [(3,)] * len(latent_shapes)
    assert all(bool((k >= 0).all()) for k in kls)
    assert module.sample_prior(2, torch.Generator().manual_seed(0)).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*\\(levels-1\\) = 4"):
        module.encode(torch.zeros(1, 18, 16))
    with pytest.raises(ValueError, match="latent shapes"):
        module.decode([z[:, :1] for z in enc.latents])


def test_several_channels_take_and_give_channel_images():
    module = randomised(VAEConfig(kind="hvae", image_size=16, in_channels=2, channels=(8, 16, 16), latent_channels=(4, 2)))
    x = smooth_images(2, channels=2)
    assert module.encode(x).decoded.shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match="images must be \\(B, 2, H, W\\)"):
        module.encode(x[:, 0])


def test_hierarchical_prior_is_conditional_on_the_scales_above():
    module = randomised(TINY_H)
    shapes = module.latent_shapes(16, 16)
    g = torch.Generator().manual_seed(1)
    z = [torch.randn(1, *s, generator=g) for s in shapes]
    _, priors = module.decode(z)
    assert float(priors[0][0].abs().max()) == 0.0 and float(priors[0][1].abs().max()) == 0.0  # p(z_0) = N(0, I)
    _, moved = module.decode([z[0] + 1.0, z[1]])
    assert not torch.allclose(priors[1][0], moved[1][0])  # p(z_1 | z_0) moves with z_0
    torch.testing.assert_close(list(priors[1]), list(module.decode([z[0], z[1] + 1.0])[1][1]))  # ... and not with z_1


def test_kl_and_tempering_formulas():
    g = torch.Generator().manual_seed(2)
    mq, sq, mp, sp = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(4))
    want = torch.distributions.kl_divergence(torch.distributions.Normal(mq, sq.exp()), torch.distributions.Normal(mp, sp.exp()))
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), want)
    # tau = 1: the posterior itself; the product q * p_tau / p by its formula for tau = 0.5.
    sq = -1.0 - sq.abs()  # posterior narrower than the prior, as for real data
    torch.testing.assert_close(tempered(mq, sq, mp, sp, 1.0), (mq, sq))
    mean, log_std = tempered(mq, sq, mp, sp, 0.5)
    prec = torch.exp(-2 * sq) + 3 * torch.exp(-2 * sp)
    torch.testing.assert_close(log_std, -0.5 * torch.log(prec))
    torch.testing.assert_close(mean, (torch.exp(-2 * sq) * mq + 3 * torch.exp(-2 * sp) * mp) / prec)


def test_loss_is_a_pure_function_of_the_generator():
    module = randomised(TINY_H)
    x = smooth_images(4)
    a = vae_loss(module, x, torch.Generator().manual_seed(5))
    b = vae_loss(module, x, torch.Generator().manual_seed(5))
    c = vae_loss(module, x, torch.Generator().manual_seed(6))
    assert a.ndim == 0 and torch.isfinite(a) and torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(vae_training_loss(module, x, torch.Generator().manual_seed(5)), a)
    # Per pixel: with KL weight 0 it is the Gaussian NLL of the reconstruction, averaged over pixels.
    recon, _ = module(x, torch.Generator().manual_seed(5))
    s = float(module.decoder_sigma.detach())
    nll = (0.5 * ((x - recon) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)).mean()
    torch.testing.assert_close(vae_loss(module, x, torch.Generator().manual_seed(5), beta=0.0), nll)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        vae_loss(module, x, beta=-1.0)


@pytest.mark.parametrize("config", [TINY, TINY_H])
def test_loss_decreases_in_a_few_steps(config):
    torch.manual_seed(0)
    module = build_vae({"architecture": config.to_dict()})
    x = smooth_images(8)
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)

    def held_out():
        with torch.no_grad():
            return float(vae_loss(module, x, torch.Generator().manual_seed(123)))

    before = held_out()
    for step in range(25):
        loss = vae_loss(module, x, torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert before - held_out() > 1.0  # nats per pixel; measured: 5.0 -> -0.3 (vae), 4.1 -> -0.4 (hvae)


def arrays_of(module, prefix="ema."):
    return {f"{prefix}{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}


def test_prior_round_trips_through_arrays_in_physical_units():
    module = randomised(TINY_H)
    config = {"architecture": TINY_H.to_dict(), "normalisation": {"offset": 0.02, "scale": 0.04},
              "data": {"pixel_size_mm": 0.5}, "sigma_data": 0.5}
    prior = vae_prior_from_arrays(arrays_of(module), config, source="run/prior")
    assert isinstance(prior, VAEPrior) and repr(prior) == "VAEPrior(run/prior, hvae, 16x16)"
    assert prior.shape == (16, 16) and prior.channels == 1 and prior.pixel_size_mm == 0.5 and prior.hierarchical
    assert prior.latent_shapes == [(4, 4, 4), (2, 8, 8)] and prior.config is not config
    assert prior.decoder_sigma == pytest.approx(0.04 * TINY_H.decoder_sigma, rel=1e-6)
    assert prior.data_variance == pytest.approx((0.5 * 0.04) ** 2)
    assert not any(p.requires_grad for p in prior.vae.parameters())
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(2, *s, generator=g) for s in prior.latent_shapes]
    with torch.no_grad():
        torch.testing.assert_close(prior.decode(z), 0.02 + 0.04 * module.decode(z)[0])
        x = 0.02 + 0.04 * smooth_images(2)
        enc = prior.encode(x)
        want = module.encode((x - 0.02) / 0.04)
    for (m, s), (wm, ws) in zip(enc.params, want.params):
        torch.testing.assert_close(m, wm)
        torch.testing.assert_close(s, ws)
    # Doubles in, doubles out: the prior casts to its network and back.
    assert prior.decode([t.double() for t in z]).dtype == torch.float64
    assert prior.to("cpu") is prior


def test_prior_from_arrays_names_what_does_not_fit():
    module = randomised(TINY)
    config = {"architecture": TINY.to_dict()}
    with pytest.raises(ValueError, match="no 'ema' weights \\(has prefixes \\['model'\\]\\)"):
        vae_prior_from_arrays(arrays_of(module, "model."), config, source="x")
    other = {"architecture": {**TINY.to_dict(), "latent_channels": [8]}}
    with pytest.raises(ValueError, match="do not fit the VAE architecture.*wrong shape"):
        vae_prior_from_arrays(arrays_of(module), other)
    hier = {"architecture": TINY_H.to_dict()}
    with pytest.raises(ValueError, match="do not fit the VAE architecture.*missing"):
        vae_prior_from_arrays(arrays_of(module), hier)
    assert vae_prior_from_arrays(arrays_of(module, "model."), config, weights="model").kind == "vae"


def test_other_sizes_are_padded_with_the_background_and_cropped():
    module = randomised(TINY_H)
    prior = VAEPrior(module, offset=0.5, scale=2.0)
    assert prior.latent_shapes_for((14, 18)) == [(4, 4, 5), (2, 8, 10)]
    x = 0.5 + 2.0 * smooth_images(2)[:, 1:15, :]  # 14 x 16, padded to 16 x 16
    with torch.no_grad():
        enc = prior.encode(x)
        padded = F.pad(x, (0, 0, 1, 1), value=0.0)  # physical 0 around, centred
        want = prior.encode(padded)
    torch.testing.assert_close(enc.params[0][0], want.params[0][0])
    assert enc.decoded.shape == (2, 14, 16)
    torch.testing.assert_close(enc.decoded, want.decoded[:, 1:15])
    torch.testing.assert_close(prior.decode(enc.latents, (14, 16)), enc.decoded)
    with pytest.raises(ValueError, match="this prior works on \\(H, W\\) images"):
        prior.latent_shapes_for((2, 14, 16))


def test_unconditional_samples_are_seeded_and_physical():
    prior = VAEPrior(randomised(TINY), offset=1.0, scale=0.01)
    a = unconditional_vae_samples(prior, 3, seed=4)
    assert a.shape == (3, 16, 16) and torch.equal(a, unconditional_vae_samples(prior, 3, seed=4))
    assert not torch.equal(a, unconditional_vae_samples(prior, 3, seed=5))
    assert float((a - 1.0).abs().max()) < 1.0  # offset + scale * (an O(1) normalised image)
    with pytest.raises(ValueError, match="n must be >= 1"):
        unconditional_vae_samples(prior, 0, seed=0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        VAEPrior(randomised(TINY), offset=0.0, scale=0.0)

