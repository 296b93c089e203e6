"""Variational autoencoders as image priors: a plain convolutional VAE and a small hierarchical one.

A VAE prior is ``x = D(z) + gamma * eps`` with latents ``z ~ p(z)`` and a Gaussian decoder of
learned scalar std ``gamma``. Two kinds share one ladder of convolutional levels (each halves the
image):

- ``"vae"`` (``ConvVAE``): one spatial latent at the coarsest level, ``p(z) = N(0, I)``.
- ``"hvae"`` (``HierarchicalVAE``): 2-3 latent scales on the coarsest levels, top (coarsest)
  first, as in VDVAE / NVAE / PnP-HVAE kept small. The top scale has ``p(z_0) = N(0, I)``; each
  lower scale a top-down conditional prior ``p(z_l | z_<l)``, and the posterior
  ``q(z_l | x, z_<l)`` combines the bottom-up encoder features with the same top-down state
  (NVAE's residual form: its mean and log-std are offsets from the prior's).

The networks work on normalised images ``(x - offset) / scale``; ``VAEPrior`` wraps a trained
one in physical units for the samplers of ``models.samplers.vae``. Everything a sampler uses is
this protocol (``LinearVAEPrior`` below implements it exactly, for tests with a known answer):

- ``offset``, ``scale``, ``channels``, ``shape``, ``decoder_sigma`` (physical), ``data_variance``
  (physical pixel variance of the data), ``hierarchical``;
- ``latent_shapes_for(image_shape) -> list[tuple]``: per-scale latent shapes, without batch;
- ``top_down(latents, image_shape) -> (x, prior_params)``: the decoded mean image (physical,
  ``(N, *image_shape)``) and, per scale, ``(mean, log_std)`` of ``p(z_l | z_<l)`` at these latents;
- ``encode(x, noises=None, temperature=None) -> Encoding``: a top-down pass through the
  posterior (``noises`` None: each ``z_l`` is its posterior mean, else ``mean + std * noise``);
  ``temperature`` tau tempers the prior inside it as PnP-HVAE does (see ``tempered``).

Sizes: the networks are convolutional, so a prior serves images of another size than it was
trained on; ``VAEPrior`` pads them (centred, with the physical background 0) to a multiple of
``2 ** (levels - 1)`` and crops decoded images back, and the latents then have the padded size.

Training (``vae_loss``) draws all its noise from the generator it is given, so a step is a pure
function of ``(weights, images, generator)`` and a resumed run repeats the same steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("vae", "hvae")
LOG_STD_BOUND = 5.0  # latent log-stds of the networks are soft-clamped to +-5 (NVAE): no exp overflow
MIN_DECODER_SIGMA = 1e-3  # normalised units; a decoder std collapsing to 0 would make the loss diverge


@dataclass(frozen=True)
class VAEConfig:
    """Architecture, stored in every checkpoint so loading rebuilds the same network.

    ``channels``: width per level (each level halves the image; ``image_size`` must be divisible
    by ``2 ** (len(channels) - 1)``); ``latent_channels``: one width per latent scale, top
    (coarsest) first; scale ``l`` lives at level ``len(channels) - 1 - l``. ``kind="vae"`` takes
    exactly one scale, ``"hvae"`` two or more. ``blocks``: residual blocks per level and path;
    ``decoder_sigma``: initial decoder std in normalised units (then learned).
    """

    kind: str = "vae"
    image_size: int = 64
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: tuple[int, ...] = (4,)
    blocks: int = 1
    groups: int = 8
    decoder_sigma: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "latent_channels", tuple(int(c) for c in self.latent_channels))
        if self.kind not in KINDS:
            raise ValueError(f"VAEConfig: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"VAEConfig: channels must be a non-empty list of positive widths, got {self.channels}")
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size < factor or self.image_size % factor:
            raise ValueError(f"VAEConfig: image_size {self.image_size} must be divisible by 2**(levels-1) = {factor}")
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"VAEConfig: every width in {self.channels} must be divisible by groups={self.groups}")
        if not self.latent_channels or min(self.latent_channels) < 1:
            raise ValueError(f"VAEConfig: latent_channels must be positive widths, got {self.latent_channels}")
        scales = len(self.latent_channels)
        if self.kind == "vae" and scales != 1:
            raise ValueError(f"VAEConfig: kind 'vae' has one latent scale; latent_channels {self.latent_channels} "
                             "has several (use kind 'hvae')")
        if self.kind == "hvae" and not 2 <= scales <= len(self.channels):
            raise ValueError(f"VAEConfig: kind 'hvae' needs 2 to len(channels) = {len(self.channels)} latent scales, "
                             f"got latent_channels {self.latent_channels}")
        if self.blocks < 1 or self.in_channels < 1:
            raise ValueError(f"VAEConfig: blocks and in_channels must be >= 1, got {self.blocks}, {self.in_channels}")
        if not self.decoder_sigma > 0:
            raise ValueError(f"VAEConfig: decoder_sigma must be > 0, got {self.decoder_sigma}")

    @property
    def latent_levels(self) -> tuple[int, ...]:
        """The level of each latent scale, top first."""
        top = len(self.channels) - 1
        return tuple(top - l for l in range(len(self.latent_channels)))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"VAEConfig: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class Encoding:
    """A pass through the posterior: the latents taken, the per-scale ``(mean, log_std)`` they were
    drawn from, and the image decoded from them (the same pass computes it, so it costs nothing)."""

    latents: list[torch.Tensor]
    params: list[tuple[torch.Tensor, torch.Tensor]]
    decoded: torch.Tensor


def soft_clamp(x: torch.Tensor, bound: float = LOG_STD_BOUND) -> torch.Tensor:
    return bound * torch.tanh(x / bound)


def gaussian_kl(mean_q, log_std_q, mean_p, log_std_p) -> torch.Tensor:
    """Elementwise ``KL(N(mean_q, std_q^2) || N(mean_p, std_p^2))``."""
    return (log_std_p - log_std_q + 0.5 * (torch.exp(2 * (log_std_q - log_std_p))
                                           + ((mean_q - mean_p) * torch.exp(-log_std_p)) ** 2) - 0.5)


def tempered(q_mean, q_log_std, p_mean, p_log_std, temperature: float):
    """``q * p_tau / p`` for Gaussians, ``p_tau = N(p_mean, (tau * p_std)^2)`` (PnP-HVAE's tempered encoder).

    ``q(z | x) ~ p(x | z) p(z)``, so swapping ``p`` for ``p_tau`` gives ``p(x | z) p_tau(z)``: at
    ``tau = 1`` this is ``q`` itself, below 1 the prior pulls harder. The precision is kept
    positive (a posterior wider than the prior would otherwise turn it negative for ``tau > 1``).
    """
    prec_q = torch.exp(-2 * q_log_std)
    prec_p = torch.exp(-2 * p_log_std)
    extra = prec_p * (1.0 / temperature**2 - 1.0)
    prec = (prec_q + extra).clamp_min(1e-3 * prec_q)
    mean = (prec_q * q_mean + extra * p_mean) / prec
    return mean, -0.5 * torch.log(prec)


class Block(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual: per-item normalisation, so items never mix."""

    def __init__(self, width: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class _LadderVAE(nn.Module):
    """The shared ladder: a bottom-up encoder and a top-down decoder with latents on the coarsest levels.

    Images are ``(B, H, W)`` for one channel and ``(B, C, H, W)`` otherwise, normalised; ``H`` and
    ``W`` must be divisible by ``2 ** (levels - 1)``. Latents are lists, top scale first, of
    ``(B, c_l, H / 2^j_l, W / 2^j_l)`` tensors.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        ch, g, levels = config.channels, config.groups, len(config.channels)
        self.multiple = 2 ** (levels - 1)
        self.scale_of_level = {j: l for l, j in enumerate(config.latent_levels)}
        self.stem = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.encoder = nn.ModuleList(nn.Sequential(*[Block(c, g) for _ in range(config.blocks)]) for c in ch)
        self.down = nn.ModuleList(nn.Conv2d(ch[j], ch[j + 1], 3, stride=2, padding=1) for j in range(levels - 1))
        self.h_top = nn.Parameter(torch.zeros(1, ch[-1], 1, 1))
        self.prior_heads = nn.ModuleList()
        self.posterior_heads = nn.ModuleList()
        self.projections = nn.ModuleList()
        for l, (j, c) in enumerate(zip(config.latent_levels, config.latent_channels)):
            head = nn.Conv2d(ch[j], 2 * c, 3, padding=1)
            nn.init.zeros_(head.weight)  # every prior starts as N(0, I); the top one stays so
            nn.init.zeros_(head.bias)
            self.prior_heads.append(head)
            self.posterior_heads.append(nn.Conv2d(ch[j] if l == 0 else 2 * ch[j], 2 * c, 3, padding=1))
            self.projections.append(nn.Conv2d(c, ch[j], 1))
        self.decoder = nn.ModuleList(nn.Sequential(*[Block(c, g) for _ in range(config.blocks)]) for c in ch)
        self.up = nn.ModuleList(nn.Conv2d(ch[j], ch[j - 1], 3, padding=1) for j in range(1, levels))
        self.head = nn.Sequential(nn.GroupNorm(g, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], config.in_channels, 3, padding=1))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(config.decoder_sigma)))

    # -- shapes ----------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.config.in_channels

    @property
    def hierarchical(self) -> bool:
        return len(self.config.latent_channels) > 1

    @property
    def decoder_sigma(self) -> torch.Tensor:
        """The decoder's std in normalised units (learned)."""
        return torch.exp(self.log_sigma).clamp_min(MIN_DECODER_SIGMA)

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        self._check_size(height, width)
        return [(c, height // 2**j, width // 2**j) for j, c in zip(self.config.latent_levels, self.config.latent_channels)]

    def _check_size(self, height: int, width: int) -> None:
        if height % self.multiple or width % self.multiple or min(height, width) < 1:
            raise ValueError(f"{type(self).__name__}: image size {height}x{width} must be divisible by "
                             f"2**(levels-1) = {self.multiple} (VAEPrior pads other sizes)")

    def _as_4d(self, x: torch.Tensor) -> torch.Tensor:
        one = self.channels == 1
        if not ((one and x.ndim == 3) or (not one and x.ndim == 4 and x.shape[1] == self.channels)):
            expected = "(B, H, W)" if one else f"(B, {self.channels}, H, W)"
            raise ValueError(f"{type(self).__name__}: images must be {expected}, got shape {tuple(x.shape)}")
        self._check_size(*x.shape[-2:])
        return x.unsqueeze(1) if one else x

    def _image(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(h)
        return out.squeeze(1) if self.channels == 1 else out

    # -- passes ----------------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features per level (finest first)."""
        h = self.stem(self._as_4d(x))
        features = []
        for j, block in enumerate(self.encoder):
            h = block(h)
            features.append(h)
            if j < len(self.down):
                h = self.down[j](h)
        return features

    def _prior(self, l: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config.latent_channels[l]
        if l == 0:
            zero = h.new_zeros(h.shape[0], c, *h.shape[2:])
            return zero, zero
        mean, log_std = self.prior_heads[l](h).chunk(2, dim=1)
        return mean, soft_clamp(log_std)

    def _posterior(self, l: int, h: torch.Tensor, feature: torch.Tensor, prior):
        if l == 0:
            mean, log_std = self.posterior_heads[0](feature).chunk(2, dim=1)
            return mean, soft_clamp(log_std)
        d_mean, d_log_std = self.posterior_heads[l](torch.cat([h, feature], dim=1)).chunk(2, dim=1)
        return prior[0] + d_mean, soft_clamp(prior[1] + d_log_std)

    def top_down(self, size: tuple[int, int], batch: int, choose):
        """Run the decoder; ``choose(l, h, prior) -> z_l`` picks each scale's latent from the top-down
        state ``h`` and the prior params there. Returns ``(image, latents, prior_params)``."""
        height, width = size
        levels = len(self.config.channels)
        h = self.h_top.expand(batch, -1, height // 2 ** (levels - 1), width // 2 ** (levels - 1))
        latents, priors = [], []
        for j in reversed(range(levels)):
            l = self.scale_of_level.get(j)
            if l is not None:
                prior = self._prior(l, h)
                z = choose(l, h, prior)
                h = h + self.projections[l](z)
                latents.append(z)
                priors.append(prior)
            h = self.decoder[j](h)
            if j > 0:
                h = self.up[j - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self._image(h), latents, priors

    def decode(self, latents: list[torch.Tensor]):
        """``(D(z), prior_params)``: the decoded mean and ``(mean, log_std)`` of ``p(z_l | z_<l)`` at ``z``."""
        if len(latents) != len(self.config.latent_channels):
            raise ValueError(f"{type(self).__name__}: got {len(latents)} latent scales, expected "
                             f"{len(self.config.latent_channels)}")
        j0 = self.config.latent_levels[0]
        size = (latents[0].shape[-2] * 2**j0, latents[0].shape[-1] * 2**j0)
        expected = self.latent_shapes(*size)
        got = [tuple(z.shape[1:]) for z in latents]
        if got != expected:
            raise ValueError(f"{type(self).__name__}: latent shapes {got} do not fit one image; expected {expected}")
        image, _, priors = self.top_down(size, latents[0].shape[0], lambda l, h, prior: latents[l])
        return image, priors

    def encode(self, x: torch.Tensor, noises: list[torch.Tensor] | None = None,
               temperature: float | None = None) -> Encoding:
        """A posterior pass: ``z_l = mean + std * noises[l]`` (the mean without noises) of
        ``q(z_l | x, z_<l)``, tempered by ``temperature`` (see ``tempered``) when given."""
        features = self.bottom_up(x)
        params = []

        def choose(l, h, prior):
            mean, log_std = self._posterior(l, h, features[self.config.latent_levels[l]], prior)
            if temperature is not None:
                mean, log_std = tempered(mean, log_std, prior[0], prior[1], temperature)
            params.append((mean, log_std))
            return mean if noises is None else mean + torch.exp(log_std) * noises[l]

        image, latents, _ = self.top_down(tuple(x.shape[-2:]), x.shape[0], choose)
        return Encoding(latents=latents, params=params, decoded=image)

    def sample_prior(self, n: int, generator: torch.Generator | None = None, size: tuple[int, int] | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Ancestral draws ``z ~ p(z)`` (each scale's std times ``temperature``), decoded (mean images)."""
        size = size or (self.config.image_size, self.config.image_size)
        shapes = self.latent_shapes(*size)
        ref = self.h_top

        def choose(l, h, prior):
            eps = torch.randn((n, *shapes[l]), generator=generator, dtype=ref.dtype, device=ref.device)
            return prior[0] + temperature * torch.exp(prior[1]) * eps

        return self.top_down(size, n, choose)[0]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised reconstruction and KL per scale: ``(mean image, [KL_l per item (B,)])``."""
        features = self.bottom_up(x)
        kls = []

        def choose(l, h, prior):
            mean, log_std = self._posterior(l, h, features[self.config.latent_levels[l]], prior)
            kls.append(gaussian_kl(mean, log_std, *prior).flatten(1).sum(1))
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            return mean + torch.exp(log_std) * eps

        image, _, _ = self.top_down(tuple(x.shape[-2:]), x.shape[0], choose)
        return image, kls

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ConvVAE(_LadderVAE):
    """Plain convolutional VAE: one spatial latent at the coarsest level with ``p(z) = N(0, I)``."""

    def __init__(self, config: VAEConfig):
        if config.kind != "vae":
            raise ValueError(f"ConvVAE: config.kind must be 'vae', got {config.kind!r}")
        super().__init__(config)


class HierarchicalVAE(_LadderVAE):
    """Ladder VAE with latent scales on the coarsest levels and conditional priors ``p(z_l | z_<l)``."""

    def __init__(self, config: VAEConfig):
        if config.kind != "hvae":
            raise ValueError(f"HierarchicalVAE: config.kind must be 'hvae', got {config.kind!r}")
        super().__init__(config)


def build_vae(config: dict) -> _LadderVAE:
    """The untrained network a checkpoint config describes (``config["architecture"]``: a VAEConfig dict)."""
    if "architecture" not in config:
        raise ValueError("VAE prior config lacks 'architecture'")
    arch = VAEConfig.from_dict(dict(config["architecture"]))
    return (ConvVAE if arch.kind == "vae" else HierarchicalVAE)(arch)


def vae_loss(module: _LadderVAE, x0: torch.Tensor, generator: torch.Generator | None = None,
             beta: float = 1.0) -> torch.Tensor:
    """Negative ELBO per pixel (and channel), averaged over the batch: a scalar.

    ``-log N(x0; D(z), sigma^2) + beta * sum_l KL(q(z_l | x0, z_<l) || p(z_l | z_<l))`` with one
    reparameterised ``z`` per image, divided by the number of pixel values; ``sigma`` is the
    decoder's learned scalar std. All randomness comes from ``generator``.
    """
    if not beta >= 0:
        raise ValueError(f"vae_loss: beta must be >= 0, got {beta}")
    image, kls = module(x0, generator)
    sigma = module.decoder_sigma.to(image.dtype)
    nll = 0.5 * ((x0 - image) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)
    pixels = x0[0].numel()
    per_item = nll.flatten(1).sum(1) + beta * torch.stack(kls).sum(0)
    return (per_item / pixels).mean()


def vae_training_loss(module: _LadderVAE, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """What a training step minimises: ``vae_loss`` with ``beta = 1`` (the ELBO itself)."""
    return vae_loss(module, x0, generator)


class VAEPrior:
    """A trained VAE in physical units: decode latents to images, encode images to latents.

    ``offset``/``scale``: the normalisation (physical ``= offset + scale * normalised``);
    ``pixel_size_mm``: the training grid; ``decoder_sigma``: the decoder std in physical units;
    ``data_variance``: the data's pixel variance, ``(sigma_data * scale)^2``, which samplers use to
    regularise their starting image. Images of another size are padded (centred, physical 0) to
    a multiple of ``2 ** (levels - 1)``; ``latent_shapes_for`` gives the latents of the padded
    size and decoded images are cropped back. Methods take and return the caller's dtype.
    """

    def __init__(self, module: _LadderVAE, offset: float, scale: float, pixel_size_mm: float | None = None,
                 config: dict | None = None, source: str = "", sigma_data: float = 0.5):
        if not scale > 0:
            raise ValueError(f"VAEPrior: scale must be > 0, got {scale}")
        if not isinstance(module, _LadderVAE):
            raise TypeError(f"VAEPrior: module must be a ConvVAE or HierarchicalVAE, got {type(module).__name__}")
        self.vae = module.eval()
        for p in self.vae.parameters():
            p.requires_grad_(False)
        self.offset = float(offset)
        self.scale = float(scale)
        self.pixel_size_mm = None if pixel_size_mm is None else float(pixel_size_mm)
        self.image_size = module.config.image_size
        self.channels = module.config.in_channels
        self.multiple = module.multiple
        self.hierarchical = module.hierarchical
        self.kind = module.config.kind
        self.config = dict(config or {})
        self.source = source
        self.decoder_sigma = float(module.decoder_sigma) * self.scale
        self.data_variance = (float(sigma_data) * self.scale) ** 2

    @property
    def shape(self) -> tuple[int, ...]:
        square = (self.image_size, self.image_size)
        return square if self.channels == 1 else (self.channels, *square)

    @property
    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Per-scale latent shapes (no batch) at the training size, top scale first."""
        return self.latent_shapes_for(self.shape)

    def to(self, device) -> "VAEPrior":
        self.vae.to(device)
        return self

    # -- sizes ----------------------------------------------------------------------------
    def _check_image_shape(self, image_shape) -> tuple[int, int]:
        image_shape = tuple(int(s) for s in image_shape)
        ok = len(image_shape) == 2 if self.channels == 1 else (len(image_shape) == 3 and image_shape[0] == self.channels)
        if not ok:
            expected = "(H, W)" if self.channels == 1 else f"({self.channels}, H, W)"
            raise ValueError(f"VAEPrior: image shape {image_shape}; this prior works on {expected} images")
        return image_shape[-2:]

    def padded_size(self, image_shape) -> tuple[int, int]:
        h, w = self._check_image_shape(image_shape)
        return h + (-h) % self.multiple, w + (-w) % self.multiple

    def latent_shapes_for(self, image_shape) -> list[tuple[int, ...]]:
        """Per-scale latent shapes (no batch) for images of ``image_shape``, top scale first."""
        return self.vae.latent_shapes(*self.padded_size(image_shape))

    def _crop(self, x: torch.Tensor, image_shape) -> torch.Tensor:
        h, w = self._check_image_shape(image_shape)
        ph, pw = x.shape[-2] - h, x.shape[-1] - w
        return x[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]

    def _dtype(self) -> torch.dtype:
        return self.vae.h_top.dtype

    # -- the protocol ----------------------------------------------------------------------
    def top_down(self, latents: list[torch.Tensor], image_shape=None):
        """``(x, prior_params)``: decoded mean images in physical units, cropped to ``image_shape``
        (default: the size the latents decode to), and per scale ``(mean, log_std)`` of
        ``p(z_l | z_<l)`` at these latents. Differentiable in the latents."""
        like = latents[0]
        image, priors = self.vae.decode([z.to(self._dtype()) for z in latents])
        x = self.offset + self.scale * image.to(like.dtype)
        if image_shape is not None:
            x = self._crop(x, image_shape)
        return x, [(m.to(like.dtype), s.to(like.dtype)) for m, s in priors]

    def decode(self, latents: list[torch.Tensor], image_shape=None) -> torch.Tensor:
        """Physical images ``D(z)``, cropped to ``image_shape`` when given."""
        return self.top_down(latents, image_shape)[0]

    def encode(self, x: torch.Tensor, noises: list[torch.Tensor] | None = None,
               temperature: float | None = None) -> Encoding:
        """Posterior pass from physical images ``x`` (padded as needed); ``decoded`` comes back
        physical and cropped to ``x``'s size."""
        image_shape = tuple(x.shape[1:])
        ph, pw = self.padded_size(image_shape)
        z = (x.to(self._dtype()) - self.offset) / self.scale
        h, w = image_shape[-2:]
        if (ph, pw) != (h, w):
            pads = ((pw - w) // 2, pw - w - (pw - w) // 2, (ph - h) // 2, ph - h - (ph - h) // 2)
            z = F.pad(z, pads, value=-self.offset / self.scale)
        noises = None if noises is None else [e.to(self._dtype()) for e in noises]
        enc = self.vae.encode(z, noises, temperature)
        decoded = self._crop(self.offset + self.scale * enc.decoded.to(x.dtype), image_shape)
        return Encoding(latents=[l.to(x.dtype) for l in enc.latents],
                        params=[(m.to(x.dtype), s.to(x.dtype)) for m, s in enc.params], decoded=decoded)

    def __repr__(self) -> str:
        kind = "" if self.channels == 1 else f", {self.channels} channels"
        return f"VAEPrior({self.source or 'in memory'}, {self.kind}, {self.image_size}x{self.image_size}{kind})"


def vae_prior_from_arrays(arrays: dict[str, np.ndarray], config: dict, source: str = "",
                          device: str | torch.device = "cpu", weights: str = "ema") -> VAEPrior:
    """Rebuild a VAE prior from a checkpoint's arrays and config (as ``prior_from_arrays`` does).

    ``weights``: ``"ema"`` (what sampling should use) or ``"model"``; the arrays hold each
    weight under ``"<weights>.<name>"``. ``config``: ``architecture`` (a VAEConfig dict),
    ``normalisation`` (``offset``, ``scale``), ``data.pixel_size_mm``, ``sigma_data``.
    """
    module = build_vae(config)
    prefix = f"{weights}."
    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{source or 'checkpoint'}: no '{weights}' weights (has prefixes {sorted({k.split('.')[0] for k in arrays})})")
    own = module.state_dict()
    # Checkpoint files hold a 0-d tensor (the learned decoder scale) as shape (1,): give it its shape back.
    state = {k: v.reshape(()) if k in own and own[k].ndim == 0 and v.shape == (1,) else v for k, v in state.items()}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    misshapen = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or misshapen:
        raise ValueError(f"{source or 'checkpoint'}: weights do not fit the VAE architecture in its config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {sorted(misshapen)[:3]})")
    module.load_state_dict(state)
    norm = config.get("normalisation", {})
    return VAEPrior(module.float().to(device), offset=norm.get("offset", 0.0), scale=norm.get("scale", 1.0),
                    pixel_size_mm=config.get("data", {}).get("pixel_size_mm"), config=config, source=source,
                    sigma_data=config.get("sigma_data", 0.5))


@torch.no_grad()
def unconditional_vae_samples(prior: VAEPrior, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """``n`` draws ``D(z)``, ``z ~ p(z)``, in physical units at the training size: a training preview."""
    if int(n) < 1:
        raise ValueError(f"unconditional_vae_samples: n must be >= 1, got {n}")
    device = prior.vae.h_top.device
    g = torch.Generator(device=device).manual_seed(int(seed))
    return prior.offset + prior.scale * prior.vae.sample_prior(int(n), g, temperature=temperature)


class LinearVAEPrior:
    """An exact linear-Gaussian "VAE" with the ``VAEPrior`` protocol: a prior with a known posterior.

    ``x = W z + b + gamma * eps`` on ``(H, W)`` images, ``z ~ N(0, I_k)`` (one flat latent scale of
    shape ``(k,)``); ``W``: ``(H*W, k)``. The encoder is the exact ``p(z | x)`` with covariance
    ``S = (I + W^T W / gamma^2)^-1``, reported by its diagonal: exact when ``W^T W`` is diagonal.
    With a linear operator and Gaussian noise every posterior is Gaussian and can be written down.
    """

    hierarchical = False
    channels = 1
    offset = 0.0
    scale = 1.0
    pixel_size_mm = None

    def __init__(self, weight: torch.Tensor, bias, shape: tuple[int, int], gamma: float = 0.1,
                 data_variance: float | None = None):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or weight.ndim != 2 or weight.shape[0] != shape[0] * shape[1]:
            raise ValueError(f"LinearVAEPrior: weight must be (H*W, k) for shape (H, W) = {shape}, got "
                             f"{tuple(weight.shape)}")
        if not gamma > 0:
            raise ValueError(f"LinearVAEPrior: gamma must be > 0, got {gamma}")
        self.weight = weight
        self.bias = torch.broadcast_to(torch.as_tensor(bias, dtype=weight.dtype), shape).reshape(-1).clone()
        self.shape = shape
        self.image_size = shape[0]
        self.decoder_sigma = float(gamma)
        k = weight.shape[1]
        self.posterior_cov = torch.linalg.inv(torch.eye(k, dtype=weight.dtype) + weight.T @ weight / gamma**2)
        self.data_variance = (float(data_variance) if data_variance is not None
                              else float((weight**2).sum(1).mean()) + gamma**2)
        self.config, self.source = {}, "linear"

    def to(self, device) -> "LinearVAEPrior":
        return self

    @property
    def latent_shapes(self) -> list[tuple[int, ...]]:
        return [(self.weight.shape[1],)]

    def latent_shapes_for(self, image_shape) -> list[tuple[int, ...]]:
        if tuple(image_shape) != self.shape:
            raise ValueError(f"LinearVAEPrior: serves {self.shape} images only, got {tuple(image_shape)}")
        return self.latent_shapes

    def top_down(self, latents, image_shape=None):
        z = latents[0]
        x = (z @ self.weight.to(z).T + self.bias.to(z)).reshape(z.shape[0], *self.shape)
        zero = torch.zeros_like(z)
        return x, [(zero, zero)]

    def decode(self, latents, image_shape=None) -> torch.Tensor:
        return self.top_down(latents, image_shape)[0]

    def encode(self, x: torch.Tensor, noises=None, temperature: float | None = None) -> Encoding:
        w = self.weight.to(x)
        s = self.posterior_cov.to(x)
        mean = (x.reshape(x.shape[0], -1) - self.bias.to(x)) @ w @ s.T / self.decoder_sigma**2
        log_std = (0.5 * torch.log(torch.diagonal(s))).expand_as(mean)
        if temperature is not None:
            zero = torch.zeros_like(mean)
            mean, log_std = tempered(mean, log_std, zero, zero, temperature)
        z = mean if noises is None else mean + torch.exp(log_std) * noises[0]
        return Encoding(latents=[z], params=[(mean, log_std)], decoded=self.decode([z]))

    def __repr__(self) -> str:
        return f"LinearVAEPrior({self.shape[0]}x{self.shape[1]}, k={self.weight.shape[1]})"
