"""Reconstruction methods as the pipeline sees them: a name, its parameters, a sampler.

Recipes name a method and give keyword parameters; the samplers' constructors are the single
source of truth for what is accepted, so a recipe is checked against the very signature that
will be called.
"""

from __future__ import annotations

import inspect
from typing import Any

from models.samplers import REGISTRY


def method_names() -> list[str]:
    return sorted(REGISTRY)


def _accepted_parameters(name: str) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(REGISTRY[name].__init__)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {k: p for k, p in signature.parameters.items() if k != "self" and p.kind in kinds}


def method_defaults(name: str) -> dict[str, Any]:
    return {
        k: p.default for k, p in _accepted_parameters(name).items() if p.default is not inspect.Parameter.empty
    }


def validate_method_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming an unknown parameter or a value the sampler rejects."""
    accepted = _accepted_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )
    try:
        REGISTRY[name](**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"method {name!r}: {exc}") from None


def build_sampler(name: str, params: dict[str, Any]):
    return REGISTRY[name](**params)
