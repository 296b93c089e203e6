"""CT reconstruction methods: the samplers a CT recipe may name (tasks/core/methods.py does the work)."""

from __future__ import annotations

from typing import Any

import torch

from inversa.models.samplers import Sampler
from inversa.tasks.core.methods import PRIOR_PARAM, MethodCatalogue, prior_of, uses_prior

CT_METHODS = MethodCatalogue(("fbp", "tikhonov", "tv", "gaussian", "dps", "dds", "reddiff", "flowdps", "vble", "pnp-hvae",
                              "vae-langevin"),
                             example_prior="priors/htc-discs-64")

__all__ = ["CT_METHODS", "PRIOR_PARAM", "build_sampler", "coerce_method_params", "method_defaults", "method_names",
           "prior_of", "sampler_params", "uses_prior"]


def method_names() -> list[str]:
    return CT_METHODS.sorted_names


def method_defaults(name: str) -> dict[str, Any]:
    return CT_METHODS.defaults(name)


def coerce_method_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return CT_METHODS.coerce(name, params)


def build_sampler(name: str, params: dict[str, Any], device: torch.device | str = "cpu") -> Sampler:
    return CT_METHODS.build(name, params, device)


def sampler_params(sampler: Sampler, recipe_params: dict[str, Any]) -> dict[str, Any]:
    return CT_METHODS.provenance_params(sampler, recipe_params)
