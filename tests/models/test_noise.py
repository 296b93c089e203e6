import torch

from inversa.models.noise import estimate_noise_sigma


def test_noise_estimate_recovers_white_noise_on_a_smooth_sinogram():
    g = torch.Generator().manual_seed(0)
    angles = torch.linspace(0, torch.pi, 90)[:, None]
    s = torch.linspace(-1, 1, 200)[None, :]
    clean = (1 - s**2).clamp(min=0).sqrt() * (2 + torch.cos(angles))  # smooth, with kinks at |s|=1
    sigmas = torch.tensor([0.01, 0.05])
    noisy = clean[None] + sigmas[:, None, None] * torch.randn(2, 90, 200, generator=g)
    est = estimate_noise_sigma(noisy)
    assert torch.allclose(est, sigmas, rtol=0.05)


def test_noise_estimate_is_small_without_noise():
    s = torch.linspace(-1, 1, 64)
    clean = torch.exp(-(s**2) * 4).expand(1, 10, 64)
    assert estimate_noise_sigma(clean).item() < 2e-3  # curvature alone, on a signal of height 1
