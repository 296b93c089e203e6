"""Prior families: what training, loading and sampling need to know about each kind of prior.

A diffusion U-Net, a flow-matching velocity network and a (hierarchical) VAE are trained by the
same resumable loop, saved in the same checkpoint format (safetensors plus JSON, the JSON's
``kind`` naming the family) and loaded by the same code; they differ only in how the untrained
network is built from a checkpoint's ``architecture``, which loss trains it, how the trained
module becomes a prior in physical units, and how the prior draws unconditional samples for the
training previews. ``PriorFamily`` holds exactly those four things, so the generic code
(``tasks.core.training``, ``tasks.core.priors``) never branches on a family's name, and a sampler
says which families it can use (``Sampler.prior_families``) instead of the pipeline knowing.

The VAE and flow-matching families are imported when first asked for: a run with a diffusion
prior never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .training import TrainingConfig, edm_loss


@dataclass(frozen=True)
class PriorFamily:
    """One kind of prior. ``name`` is what prior recipes write (``family: vae``); ``kind`` what
    checkpoints record (``"vae-prior"``).

    - ``build(config) -> nn.Module``: the untrained network a checkpoint config describes;
    - ``loss(module, x0, generator, training) -> scalar``: the training loss on normalised images,
      every random draw taken from ``generator`` (training resumes exactly);
    - ``wrap(module, config, source) -> prior``: the trained module as samplers use it, in physical units;
    - ``from_arrays(arrays, config, source, device, weights) -> prior``: a checkpoint's prior, loaded
      by the family's own loader (it knows what a mismatch of its network looks like);
    - ``unconditional(prior, n, seed) -> (n, *prior.shape)``: draws from the prior alone (previews);
    - ``sampler_defaults(prior) -> dict``: sampler parameters the prior supplies unless a recipe sets
      them (a diffusion prior's noise range).
    """

    name: str
    kind: str
    build: Callable[[dict], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor, torch.Generator | None, TrainingConfig], torch.Tensor]
    wrap: Callable[[nn.Module, dict, str], Any]
    from_arrays: Callable[..., Any]
    unconditional: Callable[[Any, int, int], torch.Tensor]
    architecture: Any  # what reads ``config["architecture"]``: ``.from_dict`` (UNetConfig, VAEConfig)
    sampler_defaults: Callable[[Any], dict] = lambda prior: {}


def _diffusion() -> PriorFamily:
    from .prior import DiffusionPrior, build_denoiser
    from .sampling import ancestral_samples
    from .unet import UNetConfig

    def wrap(module, config, source):
        norm, sampling = config.get("normalisation", {}), config.get("sampling", {})
        return DiffusionPrior(module, offset=norm.get("offset", 0.0), scale=norm.get("scale", 1.0),
                              pixel_size_mm=config.get("data", {}).get("pixel_size_mm"),
                              sigma_min=sampling.get("sigma_min", 0.002), sigma_max=sampling.get("sigma_max", 80.0),
                              config=config, source=source)

    def from_arrays(arrays, config, source="", device="cpu", weights="ema"):
        module = build_denoiser(config)
        prefix = f"{weights}."
        state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{source or 'checkpoint'}: no '{weights}' weights "
                             f"(has prefixes {sorted({k.split('.')[0] for k in arrays})})")
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{source or 'checkpoint'}: weights do not fit the architecture in its config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return wrap(module.float().to(device), config, source)

    return PriorFamily(
        name="diffusion", kind="diffusion-prior", build=build_denoiser,
        loss=lambda module, x0, generator, training: edm_loss(module, x0, training.p_mean, training.p_std, generator),
        wrap=wrap, from_arrays=from_arrays, unconditional=ancestral_samples, architecture=UNetConfig,
        sampler_defaults=lambda prior: {"sigma_min": prior.sigma_min, "sigma_max": prior.sigma_max})


def _flow() -> PriorFamily:
    from .flow import FlowPrior, build_velocity, flow_matching_loss, flow_prior_from_arrays, unconditional_flow_samples
    from .unet import UNetConfig

    def wrap(module, config, source):
        norm = config.get("normalisation", {})
        return FlowPrior(module, offset=norm.get("offset", 0.0), scale=norm.get("scale", 1.0),
                         pixel_size_mm=config.get("data", {}).get("pixel_size_mm"), config=config, source=source)

    return PriorFamily(
        name="flow-matching", kind="flow-prior", build=build_velocity,
        loss=lambda module, x0, generator, training: flow_matching_loss(module, x0, generator),
        wrap=wrap, from_arrays=flow_prior_from_arrays,
        unconditional=lambda prior, n, seed: unconditional_flow_samples(prior, n, seed),
        architecture=UNetConfig)


class _ArchitectureOf:
    """A config class with one field fixed by the family (a VAE's ``kind``: ``vae`` or ``hvae``),
    so a prior recipe's ``family`` and its architecture cannot disagree."""

    def __init__(self, cls: type, **fixed: Any):
        self.cls, self.fixed = cls, fixed

    def from_dict(self, d: dict):
        clash = {k: d[k] for k, v in self.fixed.items() if k in d and d[k] != v}
        if clash:
            raise ValueError(f"{', '.join(f'{k}: {v!r}' for k, v in clash.items())} contradicts the recipe's family "
                             f"({', '.join(f'{k} {v!r}' for k, v in self.fixed.items())}); leave it out")
        return self.cls.from_dict({**d, **self.fixed})


def _vae(name: str) -> Callable[[], PriorFamily]:
    def make() -> PriorFamily:
        from .vae import VAEConfig, VAEPrior, build_vae, unconditional_vae_samples, vae_loss, vae_prior_from_arrays

        def wrap(module, config, source):
            norm = config.get("normalisation", {})
            return VAEPrior(module, offset=norm.get("offset", 0.0), scale=norm.get("scale", 1.0),
                            pixel_size_mm=config.get("data", {}).get("pixel_size_mm"), config=config, source=source,
                            sigma_data=float(config.get("sigma_data", 0.5)))

        return PriorFamily(
            name=name, kind=f"{name}-prior", build=build_vae,
            loss=lambda module, x0, generator, training: vae_loss(module, x0, generator),
            wrap=wrap, from_arrays=vae_prior_from_arrays, unconditional=unconditional_vae_samples,
            architecture=_ArchitectureOf(VAEConfig, kind=name))
    return make


_MAKERS: dict[str, Callable[[], PriorFamily]] = {
    "diffusion": _diffusion,
    "flow-matching": _flow,
    "vae": _vae("vae"),
    "hvae": _vae("hvae"),
}
_BUILT: dict[str, PriorFamily] = {}
FAMILY_NAMES = tuple(_MAKERS)
_KINDS = {"diffusion-prior": "diffusion", "flow-prior": "flow-matching", "vae-prior": "vae", "hvae-prior": "hvae"}


def family(name: str) -> PriorFamily:
    """The family a prior recipe names (``diffusion``, ``flow-matching``, ``vae``, ``hvae``)."""
    if name not in _MAKERS:
        raise ValueError(f"unknown prior family {name!r}; expected one of {', '.join(FAMILY_NAMES)}")
    if name not in _BUILT:
        _BUILT[name] = _MAKERS[name]()
    return _BUILT[name]


def family_of(config: dict) -> PriorFamily:
    """The family of a checkpoint, from the ``kind`` its JSON records."""
    kind = config.get("kind", "diffusion-prior")
    if kind not in _KINDS:
        raise ValueError(f"checkpoint kind {kind!r} is not a prior this version knows ({', '.join(_KINDS)})")
    return family(_KINDS[kind])


def prior_from_checkpoint(arrays: dict[str, np.ndarray], config: dict, source: str = "",
                          device: str | torch.device = "cpu", weights: str = "ema"):
    """Rebuild any family's prior from a checkpoint's arrays and config (read by ``data.checkpoints``),
    with the loader of the family its ``kind`` names.

    ``weights``: ``"ema"`` (the averaged weights, what sampling should use) or ``"model"``; a shipped
    prior holds only its EMA weights.
    """
    fam = family_of(config)
    if "architecture" not in config:
        raise ValueError(f"{source or 'checkpoint'}: config lacks 'architecture'")
    return fam.from_arrays(arrays, config, source=source, device=device, weights=weights)
