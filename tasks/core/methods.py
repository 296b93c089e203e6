"""A kind's reconstruction methods as recipes name them: a catalogue of samplers by name.

Each imaging kind offers some of the samplers in ``models.samplers.REGISTRY`` (CT: FBP, TV,
the Gaussian posterior, the diffusion samplers; MRI: zero-filled, CG-SENSE, compressed sensing,
the diffusion samplers) and checks a recipe's method against its own list. The samplers'
constructors are the single source of truth for what a method accepts, its defaults and its
types (``ParameterSchema``), so a recipe is checked against the very signature that will be
called, and ``"300"`` and ``300`` are the same parameter.

Diffusion samplers take a network (``denoiser=``) that a recipe cannot spell; it names a prior
checkpoint instead (``method.params.prior``, tasks/core/priors.py). Validation checks the
parameters without loading the network (a recipe can be checked on a machine that lacks the
checkpoint, and is not slowed by it); the network is loaded once per process, path, file
version and device, when a sampler is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from inversa.models.priors.families import family_of
from inversa.models.samplers import REGISTRY, Sampler
from inversa.tasks.core.params import ParameterSchema
from inversa.tasks.core.priors import load_prior_cached

PRIOR_PARAM = "prior"


def uses_prior(name: str) -> bool:
    """Methods whose network comes from a prior checkpoint named in the recipe."""
    return REGISTRY[name].prior_param is not None


def prior_of(sampler: Sampler):
    """The trained prior (loaded from a checkpoint) a sampler works with, if any.

    A test may hand a sampler an exact, analytic prior instead; having no grid of its own
    (``pixel_size_mm``), it is not a trained prior and the reconstruction keeps the recipe's grid."""
    param = type(sampler).prior_param
    prior = getattr(sampler, param, None) if param else None
    return prior if hasattr(prior, "pixel_size_mm") and hasattr(prior, "config") else None


def check_family(name: str, prior, path) -> None:
    """Refuse a checkpoint of a family the method cannot use, naming both."""
    wanted = REGISTRY[name].prior_families
    got = family_of(prior.config).name
    if got not in wanted:
        raise ValueError(f"method {name!r} needs a {' or '.join(wanted)} prior; {path} is a {got} prior "
                         f"(method.params.{PRIOR_PARAM})")


@dataclass(frozen=True)
class MethodCatalogue:
    """The methods one kind offers (names in ``models.samplers.REGISTRY``), checked and built."""

    names: tuple[str, ...]
    example_prior: str = "priors/..."  # named in the message when a diffusion method lacks its prior
    _schemas: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        missing = [n for n in self.names if n not in REGISTRY]
        if missing:
            raise ValueError(f"MethodCatalogue: {missing} are not registered samplers ({sorted(REGISTRY)})")

    @cached_property
    def sorted_names(self) -> list[str]:
        return sorted(self.names)

    def schema(self, name: str) -> ParameterSchema:
        """The method's recipe parameters: its constructor's, with ``prior`` (a required path) in
        place of the network for the diffusion samplers."""
        if name not in self.names:
            raise ValueError(f"unknown method {name!r}; expected one of {', '.join(self.sorted_names)}")
        if name not in self._schemas:
            extra = {PRIOR_PARAM: (str | Path, ...)} if uses_prior(name) else {}
            skip = (REGISTRY[name].prior_param,) if uses_prior(name) else ()
            self._schemas[name] = ParameterSchema.of(name, REGISTRY[name].__init__, skip=skip, extra=extra)
        return self._schemas[name]

    def defaults(self, name: str) -> dict[str, Any]:
        return self.schema(name).defaults()

    def coerce(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The recipe's parameters converted to their declared types, then checked by the sampler
        itself (its constructor's value checks). Raises ``ValueError`` naming the parameter at fault.

        A prior-based method is built without its network; a noise range the recipe leaves half
        open (only ``sigma_min`` or only ``sigma_max``) is completed with a compatible value for
        the check, since the prior supplies the other end at run time.
        """
        coerced = self.schema(name).coerce(params)
        rest = {k: v for k, v in coerced.items() if k != PRIOR_PARAM}
        if uses_prior(name):
            if not str(coerced[PRIOR_PARAM]).strip():
                raise ValueError(f"method {name!r}: parameter {PRIOR_PARAM!r} is empty; expected the path of a "
                                 f"prior checkpoint (e.g. {self.example_prior})")
            if "sigma_min" in rest and "sigma_max" not in rest:
                rest["sigma_max"] = float(rest["sigma_min"]) * 1e3
            if "sigma_max" in rest and "sigma_min" not in rest:
                rest["sigma_min"] = float(rest["sigma_max"]) * 1e-3
        try:
            REGISTRY[name](**rest)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(f"method {name!r}") else f"method {name!r}: {message}") from None
        return coerced

    def build(self, name: str, params: dict[str, Any], device: torch.device | str = "cpu") -> Sampler:
        """The sampler a recipe describes; a prior-based one gets its network on ``device``.

        The sampler's noise range defaults to the prior's (``prior.sigma_min``/``sigma_max``, in
        the image's physical units) unless the recipe sets it.
        """
        params = dict(params)
        if not uses_prior(name):
            return REGISTRY[name](**params)
        path = params.pop(PRIOR_PARAM)
        prior = load_prior_cached(path, device)
        check_family(name, prior, path)
        for key, value in family_of(prior.config).sampler_defaults(prior).items():
            params.setdefault(key, value)
        return REGISTRY[name](**{REGISTRY[name].prior_param: prior}, **params)

    def provenance_params(self, sampler: Sampler, recipe_params: dict[str, Any]) -> dict[str, Any]:
        """The parameters a run used, for provenance: defaults, the recipe's, and the prior's noise range."""
        out = {**self.defaults(type(sampler).name), **recipe_params}
        prior = prior_of(sampler)
        if prior is not None:
            for key in family_of(prior.config).sampler_defaults(prior):
                out[key] = float(getattr(sampler, key))
        return out
