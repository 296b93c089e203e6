"""Denoising score matching with EDM's loss, EMA weights and exactly resumable state.

Every source of randomness in step ``k`` (the noise levels and noise of the loss) is drawn from
a generator seeded by ``(seed, k)``, and the caller supplies step ``k``'s images the same way;
with the optimiser and EMA state saved in the checkpoint, a run resumed after a crash takes the
same steps as one that never stopped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .unet import EDMDenoiser

TRAINING_STATE_KEYS = ("model.", "ema.", "optim.")


@dataclass(frozen=True)
class TrainingConfig:
    """``steps`` of ``batch_size`` images; Adam with ``lr`` after ``warmup`` steps, falling
    linearly to ``lr * final_lr_fraction``; EMA half-life in images (EDM counts it that way, so
    it does not change with the batch size); log-normal noise levels (``p_mean``, ``p_std``)."""

    steps: int = 6000
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 200
    final_lr_fraction: float = 0.1
    ema_halflife_images: float = 5000.0
    p_mean: float = -1.2
    p_std: float = 1.2
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"TrainingConfig: steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not (self.lr > 0 and self.ema_halflife_images > 0 and self.p_std > 0):
            raise ValueError("TrainingConfig: lr, ema_halflife_images and p_std must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def step_generator(seed: int, step: int, device="cpu") -> torch.Generator:
    """The generator for step ``step``: a pure function of ``(seed, step)``."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 12345) % (2**63 - 1))
    return g


def edm_loss(denoiser: EDMDenoiser, x0: torch.Tensor, p_mean: float, p_std: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM's weighted denoising loss ``lambda(s) ||D(x0 + s n, s) - x0||^2`` with ``ln s ~ N(p_mean, p_std^2)``."""
    b = x0.shape[0]
    ln_sigma = torch.randn(b, generator=generator, device=x0.device, dtype=x0.dtype) * p_std + p_mean
    sigma = torch.exp(ln_sigma)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    sd2 = denoiser.sigma_data ** 2
    weight = (sigma**2 + sd2) / (sigma * denoiser.sigma_data) ** 2
    per_item = (-1, *([1] * (x0.ndim - 1)))  # images (B, H, W) or (B, C, H, W)
    out = denoiser(x0 + sigma.reshape(per_item) * noise, sigma)
    return (weight.reshape(per_item) * (out - x0) ** 2).mean()


class Trainer:
    """Holds the network, its EMA copy and the optimiser; ``step`` trains on one batch.

    ``loss(module, x0, generator) -> scalar`` is the family's training loss (see
    ``families.PriorFamily``); without one, EDM's denoising loss trains a diffusion denoiser.
    """

    def __init__(self, denoiser: nn.Module, config: TrainingConfig,
                 loss: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        self.config = config
        self.loss = loss or (lambda module, x0, generator: edm_loss(module, x0, config.p_mean, config.p_std, generator))
        self.denoiser = denoiser
        self.ema = copy.deepcopy(denoiser).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.optimiser = torch.optim.Adam(denoiser.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-8)
        self.completed = 0  # steps done

    def learning_rate(self, step: int) -> float:
        c = self.config
        warm = min(1.0, (step + 1) / max(c.warmup, 1))
        frac = step / max(c.steps - 1, 1)
        return c.lr * warm * (1.0 - (1.0 - c.final_lr_fraction) * frac)

    def ema_decay(self, step: int) -> float:
        decay = 0.5 ** (self.config.batch_size / self.config.ema_halflife_images)
        return min(decay, (1.0 + step) / (10.0 + step))

    def step(self, x0: torch.Tensor) -> float:
        """One optimiser step on images ``x0`` (normalised, ``(B, H, W)`` or ``(B, C, H, W)``); returns the loss."""
        k = self.completed
        device = next(self.denoiser.parameters()).device
        self.denoiser.train()
        loss = self.loss(self.denoiser, x0.to(device), step_generator(self.config.seed, k, device))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.denoiser.parameters(), self.config.grad_clip)
        for group in self.optimiser.param_groups:
            group["lr"] = self.learning_rate(k)
        self.optimiser.step()
        decay = self.ema_decay(k)
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.denoiser.parameters()):
                e.lerp_(p, 1.0 - decay)
        self.completed = k + 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {k}; lower lr (now {self.learning_rate(k):.3g})")
        return value

    # -- state for checkpoints -------------------------------------------------------------
    def state_tensors(self, include_training_state: bool = True) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors file: ``ema.*`` always, ``model.*``/``optim.*`` to resume."""
        out = {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        if include_training_state:
            out.update({f"model.{k}": v for k, v in self.denoiser.state_dict().items()})
            state = self.optimiser.state_dict()["state"]
            for idx, entry in state.items():
                for name, value in entry.items():
                    out[f"optim.{idx}.{name}"] = torch.as_tensor(value).reshape(-1) if name == "step" else value
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], completed: int) -> None:
        """Restore what ``state_tensors`` saved, after ``completed`` steps."""
        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        model, ema = part("model."), part("ema.")
        if not model or not ema:
            raise ValueError("checkpoint holds no training state (model./ema. tensors); cannot resume from it")
        self.denoiser.load_state_dict(model)
        self.ema.load_state_dict(ema)
        opt = self.optimiser.state_dict()
        params = list(self.denoiser.parameters())
        grouped: dict[int, dict] = {}
        for k, v in part("optim.").items():
            idx, name = k.split(".", 1)
            # A checkpoint stores 0-d tensors as shape (1,): each moment takes its parameter's shape
            # back (a VAE's learned decoder scale is a scalar), the step count a scalar.
            grouped.setdefault(int(idx), {})[name] = v.reshape(()) if name == "step" else v.reshape(params[int(idx)].shape)
        opt["state"] = grouped
        self.optimiser.load_state_dict(opt)
        self.completed = int(completed)
