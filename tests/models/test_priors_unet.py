"""The prior's network: shapes, EDM preconditioning by its formula, config validation, size."""

from __future__ import annotations


import pytest
import torch

from inversa.models.priors.unet import EDMDenoiser, UNet, UNetConfig

TINY = UNetConfig(image_size=16, channels=(8, 16), attention_levels=(1,), embedding=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomised(config: UNetConfig, seed: int = 0) -> UNet:
    """A network whose zero-initialised output layers are not zero, so F(x) != 0."""
    torch.manual_seed(seed)
    net = UNet(config)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("config, batch", [
    (TINY, 3),
    (UNetConfig(image_size=32, channels=(8, 16, 16), blocks=2, attention_levels=(2,), embedding=16), 2),
])
def test_unet_keeps_the_image_shape(config, batch):
    net = _randomised(config)
    x = torch.randn(batch, 1, config.image_size, config.image_size)
    out = net(x, torch.linspace(-1, 1, batch))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # The noise level conditions the output: two levels give two different outputs.
    assert not torch.allclose(net(x, torch.zeros(batch)), net(x, torch.ones(batch)))


def test_fresh_network_outputs_zero_so_the_denoiser_is_c_skip_times_x():
    denoiser = EDMDenoiser(UNet(TINY), sigma_data=0.5)
    x = torch.randn(2, 16, 16)
    for sigma in (1e-3, 0.5, 2.0, 1e4):
        expected = 0.25 / (sigma**2 + 0.25) * x
        torch.testing.assert_close(denoiser(x, sigma), expected, rtol=1e-6, atol=0)
    # Tiny noise: D(x) is x itself; huge noise: D(x) is the data mean, 0 for normalised data.
    torch.testing.assert_close(denoiser(x, 1e-4), x, rtol=1e-7, atol=1e-7)
    assert denoiser(x, 1e4).abs().max() < 1e-8 * x.abs().max()


def test_preconditioning_matches_the_edm_formula():
    net = _randomised(TINY, seed=1)
    sd = 0.7
    denoiser = EDMDenoiser(net, sigma_data=sd)
    x = torch.randn(3, 16, 16)
    sigma = torch.tensor([0.05, 1.0, 20.0])
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
    c_in = 1 / torch.sqrt(sigma**2 + sd**2)
    f = net((c_in[:, None, None] * x).unsqueeze(1), torch.log(sigma) / 4).squeeze(1)
    assert f.abs().mean() > 0.01  # the network term is really there
    expected = c_skip[:, None, None] * x + c_out[:, None, None] * f
    torch.testing.assert_close(denoiser(x, sigma), expected, rtol=1e-5, atol=1e-6)
    # A scalar sigma means the same level for every image.
    torch.testing.assert_close(denoiser(x, 1.0), denoiser(x, torch.full((3,), 1.0)))


def test_denoiser_rejects_bad_input():
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        EDMDenoiser(UNet(TINY), sigma_data=0.0)
    with pytest.raises(ValueError, match=r"x must be \(B, H, W\), got shape \(2, 1, 16, 16\)"):
        EDMDenoiser(UNet(TINY))(torch.zeros(2, 1, 16, 16), 1.0)


@pytest.mark.parametrize("fields, message", [
    ({"image_size": 18, "channels": (8, 16, 32)}, "divisible by 2\\*\\*\\(levels-1\\) = 4"),
    ({"image_size": 2, "channels": (8, 16, 32)}, "image_size 2"),
    ({"channels": (8, 12)}, "divisible by groups=8"),
    ({"channels": ()}, "non-empty list of positive widths"),
    ({"channels": (8, 16), "attention_levels": (2,)}, "attention_levels \\(2,\\) must index channels"),
    ({"blocks": 0}, "blocks must be >= 1"),
])
def test_config_validation_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**{"image_size": 16, "channels": (8, 16), "attention_levels": (), **fields})


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    assert UNetConfig.from_dict(TINY.to_dict()) == TINY
    assert TINY.to_dict()["channels"] == [8, 16]  # JSON-friendly lists, not tuples
    with pytest.raises(ValueError, match=r"unknown keys \['chanels'\]"):
        UNetConfig.from_dict({"image_size": 16, "chanels": [8, 16]})


def _count(config: UNetConfig) -> int:
    with torch.device("meta"):  # no memory, no initialisation cost, even at tens of millions
        net = UNet(config)
    return net.parameter_count()


def test_parameter_count_is_set_by_the_config():
    small = UNetConfig(image_size=64, channels=(16, 32, 64), attention_levels=(2,), embedding=128)
    wide = UNetConfig(image_size=64, channels=(32, 64, 128), attention_levels=(2,), embedding=128)
    gpu = UNetConfig(image_size=256, channels=(128, 256, 256, 512), blocks=2, attention_levels=(3,), embedding=512)
    counts = [_count(c) for c in (small, wide, gpu)]
    assert counts[0] == sum(p.numel() for p in UNet(small).parameters())
    # The range: a few hundred thousand for CPU demos, tens of millions for GPU work.
    assert 1e5 < counts[0] < 1e6
    assert 1e7 < counts[2] < 1e8
    # Convolutions dominate, so doubling every width multiplies the count by nearly four.
    assert 3.0 < counts[1] / counts[0] < 4.0
    assert _count(UNetConfig(image_size=64, channels=(16, 32, 64), blocks=2, attention_levels=(2,))) > counts[0]
