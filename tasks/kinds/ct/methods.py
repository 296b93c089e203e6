"""Reconstruction methods as the pipeline sees them: a name, its parameters, a sampler.

Recipes name a method and give keyword parameters; the samplers' constructors are the single
source of truth for what is accepted, so a recipe is checked against the very signature that
will be called.

Diffusion samplers take a network (``denoiser=``) that a recipe cannot spell; it names a prior
checkpoint instead (``method.params.prior``). This module is where that path becomes a network:
``models`` never touches files. Validation checks the parameters without loading the network
(a recipe can be checked on a machine that lacks the checkpoint, and is not slowed by it); the
network is loaded once per process, path, file version and device, when a sampler is built.
"""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

import torch

from inversa.resources import priors_dir
from inversa.data.checkpoints import checkpoint_paths, read_config
from inversa.models.priors.prior import DiffusionPrior
from inversa.models.samplers import REGISTRY, DiffusionSampler

SHIPPED_ROOT = priors_dir().parent  # where the shipped `priors/NAME` paths of recipes resolve
PRIOR_PARAM = "prior"
PRIOR_CHECKPOINT = "prior"  # the EMA-only checkpoint a training directory holds (tasks.training.PRIOR)
# Parameters a prior-based method's constructor has that a recipe must not set: the prior sets them.
_FROM_PRIOR = ("denoiser",)

_prior_lock = threading.Lock()
_priors: dict[tuple, DiffusionPrior] = {}


class PriorNotFound(FileNotFoundError):
    """The checkpoint a recipe names is not there; the message names the field and the paths tried."""


def method_names() -> list[str]:
    return sorted(REGISTRY)


def uses_prior(name: str) -> bool:
    """Methods whose network comes from a prior checkpoint named in the recipe."""
    return issubclass(REGISTRY[name], DiffusionSampler)


def _accepted_parameters(name: str) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(REGISTRY[name].__init__)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    accepted = {k: p for k, p in signature.parameters.items() if k != "self" and p.kind in kinds}
    if uses_prior(name):
        for key in _FROM_PRIOR:
            accepted.pop(key, None)
        accepted[PRIOR_PARAM] = inspect.Parameter(PRIOR_PARAM, inspect.Parameter.KEYWORD_ONLY)
    return accepted


def method_defaults(name: str) -> dict[str, Any]:
    return {
        k: p.default for k, p in _accepted_parameters(name).items() if p.default is not inspect.Parameter.empty
    }


def resolve_prior_path(path: str | Path, field: str = f"method.params.{PRIOR_PARAM}") -> Path:
    """The checkpoint a recipe names: absolute, else under the repository root, else the cwd.

    ``path`` is a checkpoint (``NAME``, ``NAME.json``, ``NAME.safetensors``) or a training
    directory, whose ``prior`` checkpoint is meant.

    The repository root comes first so that shipped recipes (``prior: priors/htc-discs-64``) work
    from any directory; the cwd catches a user's own checkpoints.
    """
    raw = Path(str(path)).expanduser()
    bases = [raw] if raw.is_absolute() else [SHIPPED_ROOT / raw, priors_dir() / raw, Path.cwd() / raw]
    candidates = []
    for base in bases:
        # A training run's directory names its sampling checkpoint, ``<dir>/prior``.
        for candidate in ((base / PRIOR_CHECKPOINT, base) if base.is_dir() else (base,)):
            if candidate not in candidates:
                candidates.append(candidate)
    for candidate in candidates:
        if checkpoint_paths(candidate)[1].is_file():
            return checkpoint_paths(candidate)[1].with_suffix("")
    tried = ", ".join(dict.fromkeys(str(checkpoint_paths(c)[1]) for c in candidates))
    raise PriorNotFound(
        f"recipe field {field}: prior checkpoint {str(path)!r} not found (looked for {tried}); "
        "train one with `inversa train-prior` or give the path of an existing NAME.json"
    )


def prior_record(path: str | Path) -> dict[str, Any]:
    """What identifies a prior in provenance and digests: where it is and what its weights are."""
    resolved = resolve_prior_path(path)
    config = read_config(resolved)
    data = config.get("data", {})
    return {
        "path": str(resolved),
        "weights_sha256": config.get("weights_sha256"),
        "name": config.get("name"),
        "completed_steps": config.get("completed_steps"),
        "kind": data.get("kind"),
        "image_size": data.get("image_size"),
        "pixel_size_mm": data.get("pixel_size_mm"),
    }


def load_prior_cached(path: str | Path, device: str | torch.device = "cpu") -> DiffusionPrior:
    """The prior at ``path`` on ``device``, loaded once per process while its files are unchanged.

    Regions running in threads share one network (inference only: no state changes).
    """
    from inversa.tasks.training import load_prior  # tasks.training imports tasks.plan, which imports this module

    resolved = resolve_prior_path(path)
    weights, meta = checkpoint_paths(resolved)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in (weights, meta))
    key = (str(resolved), stamp, str(torch.device(device)))
    with _prior_lock:
        prior = _priors.get(key)
        if prior is None:
            for old in [k for k in _priors if k[0] == key[0] and k[2] == key[2]]:
                del _priors[old]  # a retrained checkpoint replaces the old network
            prior = load_prior(resolved, device=device)
            _priors[key] = prior
        return prior


def _check_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    accepted = _accepted_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )
    params = dict(params)
    if uses_prior(name):
        prior = params.pop(PRIOR_PARAM, None)
        if not isinstance(prior, (str, Path)) or not str(prior).strip():
            raise ValueError(
                f"method {name!r}: parameter {PRIOR_PARAM!r} is required: the path of a prior checkpoint "
                f"(e.g. priors/htc-discs-64), got {prior!r}"
            )
    return params


def validate_method_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming an unknown parameter or a value the sampler rejects.

    A prior-based method is built without its network; a noise range the recipe leaves half open
    (only ``sigma_min`` or only ``sigma_max``) is completed with a compatible value for the check,
    since the prior supplies the other end at run time.
    """
    try:
        rest = _check_params(name, params)
        if uses_prior(name):
            if "sigma_min" in rest and "sigma_max" not in rest:
                rest["sigma_max"] = float(rest["sigma_min"]) * 1e3
            if "sigma_max" in rest and "sigma_min" not in rest:
                rest["sigma_min"] = float(rest["sigma_max"]) * 1e-3
        REGISTRY[name](**rest)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(f"method {name!r}"):
            raise ValueError(str(exc)) from None
        raise ValueError(f"method {name!r}: {exc}") from None


def build_sampler(name: str, params: dict[str, Any]):
    """The sampler a recipe describes; a prior-based one gets its network (on the CPU; see ``on_device``).

    The sampler's noise range defaults to the prior's (``prior.sigma_min``/``sigma_max``, in the
    image's physical units) unless the recipe sets it.
    """
    params = dict(params)
    if not uses_prior(name):
        return REGISTRY[name](**params)
    rest = _check_params(name, params)
    prior = load_prior_cached(params[PRIOR_PARAM])
    rest.setdefault("sigma_min", prior.sigma_min)
    rest.setdefault("sigma_max", prior.sigma_max)
    return REGISTRY[name](denoiser=prior, **rest)


def prior_of(sampler) -> DiffusionPrior | None:
    """The trained prior a sampler works with, if any: it fixes the working grid."""
    denoiser = getattr(sampler, "denoiser", None)
    return denoiser if isinstance(denoiser, DiffusionPrior) else None


def on_device(sampler, device: torch.device):
    """Move a sampler's network to ``device`` (the per-device copy is cached like the CPU one)."""
    prior = prior_of(sampler)
    if prior is not None and torch.device(device).type != "cpu":
        sampler.denoiser = load_prior_cached(prior.source, device)
    return sampler


def sampler_params(sampler, recipe_params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a run used, for provenance: the recipe's, with the prior's defaults filled in."""
    out = dict(recipe_params)
    if prior_of(sampler) is not None:
        out["sigma_min"] = float(sampler.sigma_min)
        out["sigma_max"] = float(sampler.sigma_max)
    return out
