"""The sampler interface shared by classical reconstructions and posterior samplers.

Every method, a point estimate or a sampler, answers the same call so that a recipe can swap
one for another without the pipeline knowing which it got (see docs/conventions.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


class Sampler:
    """Base class: subclasses set ``name`` and ``deterministic`` and implement ``sample``.

    ``sample(y, operator, noise_sigma, n, generator)`` returns ``(n, B, H, W)``; a deterministic
    method returns ``n = 1`` whatever ``n`` asks for, since repeating a point estimate carries
    no information. ``nfe`` counts forward plus adjoint operator calls of the last ``sample``
    (a call on a whole batch counts once), so cost is comparable across methods.
    """

    name: str = ""
    deterministic: bool = True
    # False for analytic inverses (FBP) that never apply the operator's system matrix; planning
    # then leaves the matrix out of the memory estimate.
    uses_system_matrix: bool = True

    def __init__(self) -> None:
        self.nfe = 0

    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator: Generators = None):
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict:
        """The constructor parameters, recorded as provenance in the result store."""
        return {}


def check_measurement(y: torch.Tensor, operator, method: str) -> torch.Tensor:
    """Reject a measurement whose shape does not fit the operator before any work is spent."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{method}: measurement y must be a torch.Tensor, got {type(y).__name__}")
    out_shape = tuple(operator.out_shape)
    if y.ndim != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape:
        raise ValueError(
            f"{method}: measurement y has shape {tuple(y.shape)}; expected (batch, {', '.join(map(str, out_shape))}) "
            f"to match the operator's out_shape"
        )
    return y


def per_slice_sigma(noise_sigma, batch: int, like: torch.Tensor, method: str) -> torch.Tensor:
    """Noise level as a ``(B,)`` tensor, so a scalar and per-slice levels are handled alike."""
    if noise_sigma is None:
        raise ValueError(f"{method}: noise_sigma is required (float or tensor of shape ({batch},))")
    sigma = torch.as_tensor(noise_sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    if sigma.shape != (batch,):
        raise ValueError(
            f"{method}: noise_sigma has shape {tuple(sigma.shape)}; expected a scalar or ({batch},)"
        )
    if not bool(torch.all(sigma > 0)):
        raise ValueError(f"{method}: noise_sigma must be > 0, got {sigma.tolist()}")
    return sigma.clone()


def standard_normal(shape: tuple, n: int, batch: int, generator: Generators, like: torch.Tensor) -> torch.Tensor:
    """Draw ``(n, B, *shape)`` standard normals.

    With a sequence of generators, slice ``b`` draws all its ``n`` samples from generator ``b``,
    so a slice gets the same noise whether it is reconstructed alone or in a batch.
    """
    kwargs = dict(dtype=like.dtype, device=like.device)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn((n, batch, *shape), generator=generator, **kwargs)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch} slices; expected one per slice")
    draws = [torch.randn((n, *shape), generator=g, **kwargs) for g in gens]
    return torch.stack(draws, dim=1)


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product per batch item (first dimension)."""
    return (a * b).flatten(1).sum(1)


def expand_to(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-item vector ``(N,)`` so it broadcasts against ``like`` of shape ``(N, ...)``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))
