"""The sampler interface shared by classical reconstructions and posterior samplers.

Every method, a point estimate or a sampler, answers the same call so that a recipe can swap
one for another without the pipeline knowing which it got (see docs/conventions.md).

What a call cost (operator or denoiser calls, inner-solver iterations and residual) comes back
with its samples in a ``SampleResult`` instead of being left on the sampler: the pipeline runs
one sampler instance in several region threads at once, and diagnostics kept on ``self`` were
overwritten by whichever call finished last. Nothing of a call is stored on the instance, so
one sampler may serve any number of threads. Progress within a call (a diffusion chain runs for
minutes) is reported through an optional ``callback(step, total)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class SampleResult:
    """What one ``Sampler.sample`` call returns: the draws and what they cost."""

    samples: torch.Tensor  # (n, B, H, W); a deterministic method returns n = 1
    # Forward plus adjoint operator applications for classical methods (a call on the whole
    # batch counts once), denoiser calls for diffusion samplers: cost comparable across methods.
    nfe: int
    iterations: int = 0  # most inner-solver (CG/CGLS) iterations any item needed; 0 without one
    residual: float = 0.0  # largest final relative residual of an inner solver; 0.0 when not measured
    steps: int = 0  # outer steps taken (diffusion steps, primal-dual or CGLS iterations; 1 for FBP)


class Tally:
    """The cost and progress of one ``sample`` call, a local of that call (never of the sampler).

    ``step()`` counts an outer step and reports it as ``callback(step, total)``; ``result``
    packs the samples with the counts and, for a method that stopped before ``total`` steps,
    reports ``(total, total)`` once more so a progress bar completes.
    """

    __slots__ = ("callback", "total", "nfe", "iterations", "residual", "steps")

    def __init__(self, callback: StepCallback | None = None, total: int = 1, nfe: int = 0):
        self.callback = callback
        self.total = int(total)
        self.nfe = nfe
        self.iterations = 0
        self.residual = 0.0
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.callback is not None:
            self.callback(self.steps, self.total)

    def solver(self, iterations: int, residual: float = 0.0) -> None:
        """Fold in one inner solve: the slowest and the least converged count."""
        self.iterations = max(self.iterations, int(iterations))
        self.residual = max(self.residual, float(residual))

    def result(self, samples: torch.Tensor) -> SampleResult:
        if self.callback is not None and self.steps < self.total:
            self.callback(self.total, self.total)
        return SampleResult(samples=samples, nfe=self.nfe, iterations=self.iterations, residual=self.residual,
                            steps=self.steps)


class Sampler:
    """Base class: subclasses set ``name`` and ``deterministic`` and implement ``sample``.

    ``sample(y, operator, noise_sigma, n, generator, callback)`` returns a ``SampleResult`` whose
    ``samples`` are ``(n, B, H, W)``; a deterministic method returns ``n = 1`` whatever ``n`` asks
    for, since repeating a point estimate carries no information. ``callback(step, total)``, if
    given, is called after every outer step with ``total`` fixed at the start of the call; the
    last call has ``step == total`` even when the method stops early.
    """

    name: str = ""
    deterministic: bool = True
    # False for analytic inverses (FBP) that never apply the operator's system matrix; planning
    # then leaves the matrix out of the memory estimate.
    uses_system_matrix: bool = True
    # Callers run ``sample`` under ``torch.no_grad()`` when True; False for samplers that
    # differentiate through their network (DPS), which need autograd enabled.
    no_grad: bool = True
    # A sampler built on a trained prior names the constructor keyword that takes it (``denoiser``,
    # ``vae``, ``flow``) and the prior families it works with (models/priors/families.py); a recipe
    # then names a checkpoint in ``method.params.prior`` and the pipeline loads and passes it.
    prior_param: str | None = None
    prior_families: tuple[str, ...] = ()

    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator: Generators = None,
               callback: StepCallback | None = None) -> SampleResult:
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


def flat_draws(y, operator, noise_sigma, n: int, method: str):
    """The checks and the ``(n, B) -> n * B`` flattening shared by samplers that draw whole images.

    Returns ``(y_flat, noise_flat, shape, n, batch)``: item ``s * B + b`` of the flat batch is
    sample ``s`` of slice ``b``; ``shape`` is the operator's image shape, ``(H, W)`` or
    ``(channels, H, W)`` (a complex image as real and imaginary channels).
    """
    y = check_measurement(y, operator, method)
    if int(n) < 1:
        raise ValueError(f"{method}: n must be >= 1, got {n}")
    shape = tuple(operator.in_shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"{method}: the operator's in_shape is {shape}; expected an image (H, W) or "
                         "(channels, H, W) (a complex image as real and imaginary channels)")
    n, batch = int(n), y.shape[0]
    noise = per_slice_sigma(noise_sigma, batch, y, method)
    y_flat = y.unsqueeze(0).expand(n, *y.shape).reshape(n * batch, *y.shape[1:])
    return y_flat, noise.repeat(n), shape, n, batch


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
