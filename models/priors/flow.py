"""A flow-matching prior: the U-Net as a velocity field, its loss, and the trained field in physical units.

Convention (rectified flow, as in Stable Diffusion 3): in normalised units ``z = (x - offset) / scale``
the path from a data image ``z0`` to noise ``eps ~ N(0, I)`` is the straight line

    z_t = (1 - t) z0 + t eps,      t in [0, 1]: t = 0 data, t = 1 pure noise,

and the network learns its velocity ``v = dz_t/dt = eps - z0`` (conditional flow matching: the
regression target is the velocity of the line through each pair). ``E[v | z_t]`` splits ``z_t``
into its two ends, ``z0_hat = z_t - t v`` and ``eps_hat = z_t + (1 - t) v``, which is all a
posterior sampler needs (``FlowDPS`` in ``models.samplers.flow``).

Physical units: ``x_t = offset + scale * z_t``, so ``x_t = (1 - t) x0 + t n`` with the noise end
``n = offset + scale * eps ~ N(offset, scale^2 I)`` (noise of standard deviation ``scale`` around the
background ``offset``, where every chain starts). ``FlowPrior.split(x_t, t)`` returns
``(x0_hat, n_hat)`` with ``x_t = (1 - t) x0_hat + t n_hat`` exactly, and ``FlowPrior.velocity``
returns ``dx_t/dt = n_hat - x0_hat = scale * v``.

The network sees its input and target at unit scale at every ``t`` (the preconditioning of
``FlowVelocity``, EDM's rule carried over to the velocity target), and a fresh network (zero output
layer) is already the exact velocity of white Gaussian data of standard deviation ``sigma_data``.

Public interface (what the training flow, the registry and recipes build on):

- ``FlowVelocity(net: UNet, sigma_data=0.5)``; ``module(z_t, t) -> v`` in normalised units.
- ``build_velocity(config) -> FlowVelocity``: ``config["architecture"]`` a ``UNetConfig`` dict,
  ``config.get("sigma_data", 0.5)``.
- ``flow_matching_loss(module, x0, generator=None, *, p_mean=0.0, p_std=1.0) -> scalar``.
- ``FlowPrior(velocity, offset, scale, pixel_size_mm, config=None, source="")``.
- ``flow_prior_from_arrays(arrays, config, source="", device="cpu", weights="ema") -> FlowPrior``.
- ``flow_times(n_steps, shift=1.0) -> (n_steps + 1,)`` times from 1 down to 0.
- ``unconditional_flow_samples(prior, n, seed, n_steps=28, shift=1.0) -> (n, *prior.shape)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .unet import UNet, UNetConfig

# The embedding's time feature is logit(t) / 4 (EDM's ln(sigma) / 4 for the equivalent
# variance-exploding level sigma = t / (1 - t)); t is kept this far from 0 and 1 so it stays finite.
T_EPS = 1e-4


def _per_item(t, like: torch.Tensor, what: str) -> torch.Tensor:
    """Time as a ``(B,)`` tensor in [0, 1] (a scalar means every item's time)."""
    batch = like.shape[0]
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    elif t.numel() != batch:
        raise ValueError(f"{what}: t has {t.numel()} values for a batch of {batch}; expected a scalar or ({batch},)")
    t = t.reshape(batch)
    if not bool(torch.all((t >= 0) & (t <= 1))):
        raise ValueError(f"{what}: t must lie in [0, 1], got {t.tolist()}")
    return t


def _check_images(x: torch.Tensor, channels: int, what: str) -> None:
    one = channels == 1
    if not ((one and x.ndim == 3) or (not one and x.ndim == 4 and x.shape[1] == channels)):
        expected = "(B, H, W)" if one else f"(B, {channels}, H, W)"
        raise ValueError(f"{what}: images must be {expected}, got shape {tuple(x.shape)}")


class FlowVelocity(nn.Module):
    """``v(z_t, t)`` on normalised images: ``c_skip(t) z_t + c_out(t) F(c_in(t) z_t, logit(t) / 4)``.

    With ``D = t^2 + sigma_data^2 (1 - t)^2`` (the variance of ``z_t`` for data of variance
    ``sigma_data^2``): ``c_in = 1 / sqrt(D)`` gives the network a unit-variance input;
    ``c_skip = (t - sigma_data^2 (1 - t)) / D`` and ``c_out = sigma_data / sqrt(D)`` are the choice
    that makes the network's own target ``(v - c_skip z_t) / c_out`` unit-variance with the smallest
    ``c_out`` (Karras et al.'s derivation, done for the velocity instead of the clean image), so errors
    of ``F`` are not amplified at either end of the path. ``c_skip z_t`` alone is the exact velocity
    of ``N(0, sigma_data^2 I)`` data, which is what an untrained network (zero output layer) gives.

    Images are ``(B, H, W)`` for a one-channel network and ``(B, C, H, W)`` for ``C`` channels; ``t``
    a scalar or ``(B,)``. The buffer ``flow_matching`` marks the weights as a velocity field: a
    diffusion checkpoint has the same U-Net parameter names, and without it would load silently.
    """

    def __init__(self, net: UNet, sigma_data: float = 0.5):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"FlowVelocity: sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.register_buffer("flow_matching", torch.ones(1))

    @property
    def channels(self) -> int:
        return self.net.config.in_channels

    def forward(self, z_t: torch.Tensor, t) -> torch.Tensor:
        _check_images(z_t, self.channels, "FlowVelocity")
        t = _per_item(t, z_t, "FlowVelocity")
        sd2 = self.sigma_data ** 2
        d = t**2 + sd2 * (1 - t) ** 2
        per_item = (-1, *([1] * (z_t.ndim - 1)))
        c_in = torch.rsqrt(d).reshape(per_item)
        c_skip = ((t - sd2 * (1 - t)) / d).reshape(per_item)
        c_out = (self.sigma_data * torch.rsqrt(d)).reshape(per_item)
        tc = t.clamp(T_EPS, 1 - T_EPS)
        c_noise = torch.log(tc / (1 - tc)) / 4.0
        dtype = next(self.net.parameters()).dtype
        h = (c_in * z_t).to(dtype)
        one = self.channels == 1
        f = self.net(h.unsqueeze(1) if one else h, c_noise.to(dtype))
        f = (f.squeeze(1) if one else f).to(z_t.dtype)
        return c_skip * z_t + c_out * f


def build_velocity(config: dict) -> FlowVelocity:
    """The untrained velocity network a checkpoint config describes (the flow's ``build_denoiser``)."""
    if "architecture" not in config:
        raise ValueError("flow prior config lacks 'architecture' (a UNetConfig dict)")
    arch = UNetConfig.from_dict(dict(config["architecture"]))
    return FlowVelocity(UNet(arch), sigma_data=float(config.get("sigma_data", 0.5)))


def flow_matching_loss(module: FlowVelocity, x0: torch.Tensor, generator: torch.Generator | None = None, *,
                       p_mean: float = 0.0, p_std: float = 1.0) -> torch.Tensor:
    """Conditional flow matching: ``mean ||v(z_t, t) - (eps - x0)||^2`` with ``z_t = (1 - t) x0 + t eps``.

    ``x0``: normalised images, ``(B, H, W)`` or ``(B, C, H, W)``. ``t = sigmoid(u)``,
    ``u ~ N(p_mean, p_std^2)`` (SD3's logit-normal times, which spend the batch on the middle of
    the path where the velocity is hardest to predict). Randomness is drawn from ``generator`` only,
    ``t`` first, then ``eps``, so a training step is a pure function of its generator's seed
    (``training.step_generator``) and a resumed run repeats it. ``p_mean``/``p_std`` are
    keyword-only: ``edm_loss`` takes its own (different) ones positionally, and a call written for
    it must not run here with them silently in the wrong place.
    """
    if not p_std > 0:
        raise ValueError(f"flow_matching_loss: p_std must be > 0, got {p_std}")
    b = x0.shape[0]
    u = torch.randn(b, generator=generator, device=x0.device, dtype=x0.dtype) * p_std + p_mean
    t = torch.sigmoid(u)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    tt = t.reshape(-1, *([1] * (x0.ndim - 1)))
    z_t = (1 - tt) * x0 + tt * eps
    return (module(z_t, t) - (eps - x0)).square().mean()


class FlowPrior:
    """A trained velocity field in physical units: ``velocity(x_t, t)`` and ``split(x_t, t)``.

    ``x_t = offset + scale * z_t`` (see the module docstring): the path runs from the image ``x0``
    (``t = 0``) to the noise ``n = offset + scale * eps`` (``t = 1``). ``split`` returns
    ``(x0_hat, n_hat)``, ``E[x0 | x_t]`` and ``E[n | x_t]``, with ``x_t = (1 - t) x0_hat + t n_hat``;
    ``velocity`` returns ``n_hat - x0_hat``. ``x_t``: ``(B, H, W)`` for a one-channel prior,
    ``(B, C, H, W)`` for ``C`` channels; ``t`` a scalar or ``(B,)``.

    ``offset``/``scale``: normalisation; ``pixel_size_mm``: the grid the prior was trained on;
    ``data_variance``: the pixel variance the preconditioning assumes, ``(sigma_data * scale)^2``
    (samplers use it as the spread of ``x0`` given ``x_t`` near pure noise). Another image size is
    padded (centred, with the background, physical 0) to what the levels need and cropped back.
    """

    def __init__(self, velocity: FlowVelocity, offset: float, scale: float, pixel_size_mm: float | None,
                 config: dict | None = None, source: str = ""):
        if not scale > 0:
            raise ValueError(f"FlowPrior: scale must be > 0, got {scale}")
        if not isinstance(velocity, FlowVelocity):
            raise TypeError(f"FlowPrior: velocity must be a FlowVelocity, got {type(velocity).__name__}")
        self.module = velocity.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.offset = float(offset)
        self.scale = float(scale)
        self.pixel_size_mm = None if pixel_size_mm is None else float(pixel_size_mm)
        self.image_size = velocity.net.config.image_size
        self.channels = velocity.net.config.in_channels
        self.multiple = 2 ** (len(velocity.net.config.channels) - 1)
        self.config = dict(config or {})
        self.source = source
        self.data_variance = (velocity.sigma_data * self.scale) ** 2

    @property
    def shape(self) -> tuple[int, ...]:
        """The training images' shape: ``(S, S)``, or ``(C, S, S)`` with channels."""
        square = (self.image_size, self.image_size)
        return square if self.channels == 1 else (self.channels, *square)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device) -> "FlowPrior":
        self.module.to(device)
        return self

    def _normalised_velocity(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_t, t, v)`` in normalised units, at ``x_t``'s size (padded for the network and cropped back)."""
        image_dims = 2 if self.channels == 1 else 3
        if x_t.ndim != image_dims + 1 or (self.channels > 1 and x_t.shape[1] != self.channels):
            expected = "(B, H, W)" if self.channels == 1 else f"(B, {self.channels}, H, W)"
            raise ValueError(f"FlowPrior: x_t has shape {tuple(x_t.shape)}; this prior works on {expected} images")
        t = _per_item(t, x_t, "FlowPrior")
        z = (x_t - self.offset) / self.scale
        h, w = z.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        if pad_h or pad_w:  # centred, with the background (physical 0) around the image
            pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            padded = torch.nn.functional.pad(z, pads, value=-self.offset / self.scale)
            v = self.module(padded, t)[..., pads[2]:pads[2] + h, pads[0]:pads[0] + w]
        else:
            v = self.module(z, t)
        return z, t.reshape(-1, *([1] * (z.ndim - 1))), v

    def velocity(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """``dx_t/dt`` in physical units (``scale`` times the network's velocity)."""
        return self.scale * self._normalised_velocity(x_t, t)[2]

    def split(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0_hat, n_hat)``: the clean image and the noise end the velocity implies, physical units."""
        z, tt, v = self._normalised_velocity(x_t, t)
        return self.offset + self.scale * (z - tt * v), self.offset + self.scale * (z + (1 - tt) * v)

    def __repr__(self) -> str:
        kind = "" if self.channels == 1 else f", {self.channels} channels"
        return f"FlowPrior({self.source or 'in memory'}, {self.image_size}x{self.image_size}{kind})"


def flow_prior_from_arrays(arrays: dict[str, np.ndarray], config: dict, source: str = "",
                           device: str | torch.device = "cpu", weights: str = "ema") -> FlowPrior:
    """Rebuild a flow prior from a checkpoint's arrays and config (as ``prior_from_arrays`` does a diffusion one).

    ``weights``: ``"ema"`` (the averaged weights, what sampling should use) or ``"model"``; the
    arrays hold them under ``"{weights}."``. ``config["normalisation"]`` gives ``offset``/``scale``
    (default 0 and 1), ``config["data"]["pixel_size_mm"]`` the grid.
    """
    module = build_velocity(config)
    prefix = f"{weights}."
    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
    name = source or "checkpoint"
    if not state:
        raise ValueError(f"{name}: no '{weights}' weights (has prefixes {sorted({k.split('.')[0] for k in arrays})})")
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: another width or depth than the config says
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise ValueError(f"{name}: weights do not fit the flow architecture in its config ({first.strip()})") from None
    if missing or unexpected:
        hint = " (a diffusion checkpoint? it lacks the flow_matching marker)" if "flow_matching" in missing else ""
        raise ValueError(f"{name}: weights do not fit the flow architecture in its config{hint} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    norm = config.get("normalisation", {})
    return FlowPrior(module.float().to(device), offset=norm.get("offset", 0.0), scale=norm.get("scale", 1.0),
                     pixel_size_mm=config.get("data", {}).get("pixel_size_mm"), config=config, source=source)


def flow_times(n_steps: int, shift: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n_steps + 1`` times from 1 (noise) down to 0 (data), uniform in ``s`` and mapped by ``shift``.

    ``t = shift s / (1 + (shift - 1) s)`` (SD3's time shift): ``shift > 1`` spends more steps at
    high noise, where large images keep their coarse structure longest; ``shift = 1`` is uniform.
    """
    if int(n_steps) < 1:
        raise ValueError(f"flow_times: n_steps must be >= 1, got {n_steps}")
    if not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"flow_times: shift must be a finite number > 0, got {shift}")
    s = torch.linspace(1.0, 0.0, int(n_steps) + 1, dtype=dtype)
    return shift * s / (1 + (shift - 1) * s)


@torch.no_grad()
def unconditional_flow_samples(prior, n: int, seed: int, n_steps: int = 28, shift: float = 1.0,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` draws of the prior, ``(n, *prior.shape)`` in physical units: Euler steps of the ODE from noise.

    Training previews: the noise is drawn on the CPU from ``seed``, so a preview is the same
    on any device. ``prior``: anything with ``velocity``, ``shape``, ``offset`` and ``scale``
    (``FlowPrior``, ``GaussianFlow``).
    """
    if int(n) < 1:
        raise ValueError(f"unconditional_flow_samples: n must be >= 1, got {n}")
    times = flow_times(n_steps, shift).tolist()
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn((int(n), *prior.shape), generator=g, dtype=dtype)
    x = (prior.offset + prior.scale * eps).to(getattr(prior, "device", "cpu"))
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * prior.velocity(x, t)
    return x
