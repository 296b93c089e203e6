"""A trained diffusion prior as samplers see it: a denoiser in physical units, with its grid.

The network works on normalised images ``(x - offset) / scale`` (the training data's range
mapped to about [-0.5, 0.5]); samplers and operators work in the measurement's units (1/mm for
CT). ``DiffusionPrior`` converts both the image and the noise level, so a sampler's schedule,
data term and output are all physical and the network's normalisation stays an internal detail
recorded in the checkpoint.
"""

from __future__ import annotations

import torch

from .unet import EDMDenoiser, UNet, UNetConfig


class DiffusionPrior:
    """``prior(x_t, sigma) -> x0_hat`` in physical units.

    ``x_t``: ``(B, H, W)`` for a one-channel prior, ``(B, C, H, W)`` for ``C`` channels (a complex MR
    image as real and imaginary parts). ``offset``/``scale``: normalisation; ``pixel_size_mm``: the
    grid the prior was trained on (a CT operator for it must use this grid); ``sigma_min``/
    ``sigma_max``: the physical range a sampler should run over by default. The network is
    convolutional, so an image of another size is padded (centred, with the background value 0)
    to the size its levels need and cropped back: an MR prior trained on 64 x 64 crops serves a
    96 x 96 or 230 x 180 acquisition at its own matrix.
    """

    def __init__(self, denoiser: EDMDenoiser, offset: float, scale: float, pixel_size_mm: float | None,
                 sigma_min: float, sigma_max: float, config: dict | None = None, source: str = ""):
        if not scale > 0:
            raise ValueError(f"DiffusionPrior: scale must be > 0, got {scale}")
        self.denoiser = denoiser.eval()
        for p in self.denoiser.parameters():
            p.requires_grad_(False)
        self.offset = float(offset)
        self.scale = float(scale)
        self.pixel_size_mm = None if pixel_size_mm is None else float(pixel_size_mm)
        self.image_size = denoiser.net.config.image_size
        self.channels = denoiser.net.config.in_channels
        self.multiple = 2 ** (len(denoiser.net.config.channels) - 1)
        self.sigma_min = float(sigma_min) * self.scale
        self.sigma_max = float(sigma_max) * self.scale
        self.config = dict(config or {})
        self.source = source
        # The pixel variance of the training data in physical units: samplers use it as the spread
        # of x0 given x_t at high noise (see DDS and DPS) and start their chains at ``offset``.
        self.data_variance = (denoiser.sigma_data * self.scale) ** 2

    @property
    def shape(self) -> tuple[int, ...]:
        """The training images' shape: ``(S, S)``, or ``(C, S, S)`` with channels."""
        square = (self.image_size, self.image_size)
        return square if self.channels == 1 else (self.channels, *square)

    def to(self, device) -> "DiffusionPrior":
        self.denoiser.to(device)
        return self

    def __call__(self, x_t: torch.Tensor, sigma) -> torch.Tensor:
        image_dims = 2 if self.channels == 1 else 3
        if x_t.ndim != image_dims + 1 or (self.channels > 1 and x_t.shape[1] != self.channels):
            expected = "(B, H, W)" if self.channels == 1 else f"(B, {self.channels}, H, W)"
            raise ValueError(f"DiffusionPrior: x_t has shape {tuple(x_t.shape)}; this prior works on {expected} images")
        s = torch.as_tensor(sigma, dtype=x_t.dtype, device=x_t.device) / self.scale
        z = (x_t - self.offset) / self.scale
        h, w = z.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        if pad_h or pad_w:  # centred, with the background (physical 0) around the image
            pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            z = torch.nn.functional.pad(z, pads, value=-self.offset / self.scale)
            x0 = self.denoiser(z, s)[..., pads[2]:pads[2] + h, pads[0]:pads[0] + w]
        else:
            x0 = self.denoiser(z, s)
        return self.offset + self.scale * x0

    def __repr__(self) -> str:
        kind = "" if self.channels == 1 else f", {self.channels} channels"
        return f"DiffusionPrior({self.source or 'in memory'}, {self.image_size}x{self.image_size}{kind})"


def build_denoiser(config: dict) -> EDMDenoiser:
    """The untrained network a checkpoint config describes."""
    if "architecture" not in config:
        raise ValueError("prior config lacks 'architecture'")
    arch = UNetConfig.from_dict(dict(config["architecture"]))
    return EDMDenoiser(UNet(arch), sigma_data=float(config.get("sigma_data", 0.5)))
