"""A noise-conditioned U-Net and the EDM preconditioning that turns it into a denoiser.

The network alone predicts a residual; ``EDMDenoiser`` wraps it with Karras et al.'s
preconditioning (EDM: ``D(x, s) = c_skip x + c_out F(c_in x, c_noise)``), which keeps the
network's inputs and targets at unit variance at every noise level. That is what lets a network
of a few hundred thousand parameters train in CPU-minutes, and the same code scale to tens of
millions of parameters on a GPU by changing ``UNetConfig`` only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    """Architecture, stored in every checkpoint so loading rebuilds the same network.

    ``channels``: width per resolution level (each level halves the image); ``blocks``: residual
    blocks per level; ``attention_levels``: level indices with self-attention (cheap only at the
    coarse ones); ``image_size`` must be divisible by ``2 ** (len(channels) - 1)``.
    """

    image_size: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 128)
    blocks: int = 1
    attention_levels: tuple[int, ...] = (3,)
    embedding: int = 128
    dropout: float = 0.0
    groups: int = 8
    in_channels: int = 1

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"UNetConfig: channels must be a non-empty list of positive widths, got {self.channels}")
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size < factor or self.image_size % factor:
            raise ValueError(f"UNetConfig: image_size {self.image_size} must be divisible by 2**(levels-1) = {factor}")
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"UNetConfig: every width in {self.channels} must be divisible by groups={self.groups}")
        if any(not 0 <= a < len(self.channels) for a in self.attention_levels):
            raise ValueError(f"UNetConfig: attention_levels {self.attention_levels} must index channels {self.channels}")
        if self.blocks < 1:
            raise ValueError(f"UNetConfig: blocks must be >= 1, got {self.blocks}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"UNetConfig: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` followed by an MLP (the usual timestep embedding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.freqs = dim // 2
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        k = torch.arange(self.freqs, device=c_noise.device, dtype=torch.float32)
        freqs = torch.exp(-math.log(10000.0) * k / self.freqs)
        angles = c_noise.float()[:, None] * 1000.0 * freqs[None, :] / 250.0
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)).to(c_noise.dtype)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the noise embedding as a per-channel scale and shift."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2.0)


class Attention(nn.Module):
    """Single-head self-attention over pixels, used only at coarse levels."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return (x + self.out(a.transpose(1, 2).reshape(b, c, h, w))) / math.sqrt(2.0)


class UNet(nn.Module):
    """``F(x, c_noise)``: image ``(B, C, H, W)`` and per-item noise feature ``(B,)`` -> ``(B, C, H, W)``."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch, emb, g, p = config.channels, config.embedding, config.groups, config.dropout
        self.embed = NoiseEmbedding(emb)
        self.stem = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        skips = [ch[0]]
        width = ch[0]
        for level, c in enumerate(ch):
            for _ in range(config.blocks):
                self.down.append(ResBlock(width, c, emb, g, p))
                self.down_attn.append(Attention(c, g) if level in config.attention_levels else nn.Identity())
                width = c
                skips.append(width)
            if level < len(ch) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                self.down_attn.append(nn.Identity())
                skips.append(width)
        self.mid1 = ResBlock(width, width, emb, g, p)
        self.mid_attn = Attention(width, g)
        self.mid2 = ResBlock(width, width, emb, g, p)
        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        for level in reversed(range(len(ch))):
            c = ch[level]
            for _ in range(config.blocks + 1):
                self.up.append(ResBlock(width + skips.pop(), c, emb, g, p))
                self.up_attn.append(Attention(c, g) if level in config.attention_levels else nn.Identity())
                width = c
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up_attn.append(nn.Identity())
        self.head = nn.Sequential(nn.GroupNorm(g, width), nn.SiLU(), nn.Conv2d(width, config.in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)
        h = self.stem(x)
        stack = [h]
        for block, attn in zip(self.down, self.down_attn):
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            h = attn(h)
            stack.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block, attn in zip(self.up, self.up_attn):
            if isinstance(block, ResBlock):
                h = attn(block(torch.cat([h, stack.pop()], dim=1), emb))
            else:
                h = block(h)
        return self.head(h)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class EDMDenoiser(nn.Module):
    """``D(x, sigma)`` on normalised images with EDM preconditioning around ``UNet``.

    Images are ``(B, H, W)`` for a one-channel network and ``(B, C, H, W)`` for ``C`` channels (a
    complex MR image as its real and imaginary parts). The network is convolutional: ``H`` and ``W``
    only need to be divisible by ``2 ** (levels - 1)`` (``DiffusionPrior`` pads other sizes).
    """

    def __init__(self, net: UNet, sigma_data: float = 0.5):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"EDMDenoiser: sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    @property
    def channels(self) -> int:
        return self.net.config.in_channels

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        one = self.channels == 1
        if not ((one and x.ndim == 3) or (not one and x.ndim == 4 and x.shape[1] == self.channels)):
            expected = "(B, H, W)" if one else f"(B, {self.channels}, H, W)"
            raise ValueError(f"EDMDenoiser: x must be {expected}, got shape {tuple(x.shape)}")
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(x.shape[0])
        sd2 = self.sigma_data ** 2
        per_item = (-1, *([1] * (x.ndim - 1)))
        c_skip = (sd2 / (s**2 + sd2)).reshape(per_item)
        c_out = (s * self.sigma_data / torch.sqrt(s**2 + sd2)).reshape(per_item)
        c_in = (1.0 / torch.sqrt(s**2 + sd2)).reshape(per_item)
        c_noise = torch.log(s.clamp_min(1e-20)) / 4.0
        dtype = next(self.net.parameters()).dtype
        h = (c_in * x).to(dtype)
        f = self.net(h.unsqueeze(1) if one else h, c_noise.to(dtype))
        f = (f.squeeze(1) if one else f).to(x.dtype)
        return c_skip * x + c_out * f
