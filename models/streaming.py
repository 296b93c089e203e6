"""Drawing a posterior in chunks and keeping only its running summary.

A region's posterior is ``n_samples`` draws per slice; holding them all would cost
``n_samples`` images per slice, and on a GPU the number of draws that fit in one sampler call
depends on free memory. So samples stream: each call's block is folded into a running mean and
variance (Welford) and handed to a callback (which may store it), then dropped.

Randomness is seeded per slice and per posterior sample (``SeedSequence([seed, slice, sample])``)
and every sampler call treats each (slice, sample) pair as its own item with its own generator,
so the result is the same whatever the region size, the number of samples drawn per call, the
order of regions, or which of them were resumed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from inversa.models.uq import Welford

SAMPLE_CHUNK = 8  # CPU: posterior samples per sampler call (each times the region's slices); fixed
GPU_ITEM_LIMIT = 4096  # at most this many (slice, sample) items per call, however much memory is free


def slice_generators(seed: int, slices: range, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per slice, for point estimates (a single draw per slice)."""
    return [_generator([int(seed), int(index)], device) for index in slices]


def sample_generators(seed: int | tuple[int, ...], slices: range, samples: range,
                      device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per (sample, slice) item, sample-major: item ``s * len(slices) + b``.

    Generators live on the device the samplers draw on (torch cannot draw CUDA tensors from a
    CPU generator); a store made on a GPU therefore differs from a CPU one by its random draws.
    """
    prefix = [int(v) for v in (seed if isinstance(seed, tuple) else (seed,))]
    return [_generator([*prefix, int(index), int(s)], device) for s in samples for index in slices]


def _generator(entropy: list[int], device: torch.device | str = "cpu") -> torch.Generator:
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] % (2**63)))


def choose_batch(free_bytes: float, bytes_per_item: float, limit: int, headroom: float = 0.8) -> int:
    """How many items one call may take: ``headroom`` of the free memory over the cost of one.

    At least 1 (one item is the least a call can do, and it has been seen to fit when it was
    measured) and at most ``limit`` (the items left, or a cap).
    """
    if limit < 1:
        raise ValueError(f"choose_batch: limit must be >= 1, got {limit}")
    if not bytes_per_item > 0:
        raise ValueError(f"choose_batch: bytes_per_item must be > 0, got {bytes_per_item}")
    if not 0 < headroom <= 1:
        raise ValueError(f"choose_batch: headroom must be in (0, 1], got {headroom}")
    fits = int(max(float(free_bytes), 0.0) * headroom // float(bytes_per_item))
    return int(min(max(fits, 1), int(limit)))


# Measured cost of one (slice, sample) item per sampler call on a GPU, by what decides it.
_item_bytes: dict[tuple, float] = {}
_item_lock = threading.Lock()


def _cost_key(sampler, operator, device) -> tuple:
    return (type(sampler).__name__, repr(sorted(sampler.params().items())), tuple(operator.in_shape),
            tuple(operator.out_shape), str(device))


@dataclass
class Posterior:
    """What a streamed posterior leaves: summaries on the output grid and the cost of getting them.

    ``solver_iterations`` and ``solver_residual`` are the most iterations and the largest final
    relative residual any inner solve needed (0 for methods without one): a user can see
    unconverged samples in the store.
    """

    mean: np.ndarray
    std: np.ndarray | None
    count: int
    nfe: int = 0
    chunks: list[int] = field(default_factory=list)
    solver_iterations: int = 0
    solver_residual: float = 0.0
    raw_mean: np.ndarray | None = None  # the mean in the sampler's own image space, when asked for

    def add_cost(self, result) -> None:
        """Fold one ``SampleResult``'s diagnostics in."""
        self.nfe += int(result.nfe)
        self.solver_iterations = max(self.solver_iterations, int(result.iterations))
        self.solver_residual = max(self.solver_residual, float(result.residual))


Progress = Callable[[float], None]
"""``progress(fraction)``: the fraction (0..1) of a posterior's sampler steps done so far."""


def stream_posterior(
    sampler,
    operator,
    y: torch.Tensor,
    sigma: torch.Tensor,
    seed: int | tuple[int, ...],
    slices: range,
    n_samples: int,
    to_output: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
    progress: Progress | None = None,
    keep_raw_mean: bool = False,
) -> Posterior:
    """Draw ``n_samples`` per slice in chunks; fold each into Welford; hand each to ``on_chunk``.

    ``to_output`` maps the sampler's draws ``(k, B, *in_shape)`` to the output images
    ``(k, B, H, W)`` whose mean and std are kept: a resampling to the output grid (CT, a prior's
    working grid), or the magnitude of a complex image (MRI). ``on_chunk(first_sample, block)``
    gets each block of output images. On the CPU a chunk is ``SAMPLE_CHUNK`` samples; on a GPU
    the first chunk is one sample per slice, whose peak memory sets the size of the rest
    (``choose_batch``), remembered for later regions. ``progress`` moves with every sampler
    step, so a long diffusion chain shows progress within one call. ``keep_raw_mean`` also keeps
    the mean of the draws themselves (a complex MR image's mean, not only its magnitude's).
    """
    batch = y.shape[0]
    if sampler.deterministic:
        with _grad_mode(sampler):
            result = sampler.sample(y, operator, sigma, 1, slice_generators(int(seed), slices, device),
                                    callback=_step_progress(progress, 0, 1, 1))
        block = to_output(result.samples[:1]).detach().to("cpu", torch.float32).numpy()
        if on_chunk is not None:
            on_chunk(0, block)
        raw = result.samples[0].detach().to("cpu", torch.float32).numpy() if keep_raw_mean else None
        post = Posterior(mean=block[0], std=None, count=1, chunks=[1], raw_mean=raw)
        post.add_cost(result)
        return post
    welford = Welford()
    raw_sum = None
    post = Posterior(mean=np.empty(0), std=None, count=0)
    cuda = torch.device(device).type == "cuda"
    key = _cost_key(sampler, operator, device) if cuda else None
    drawn = 0
    while drawn < n_samples:
        left = n_samples - drawn
        per_item = None
        if not cuda:
            k = min(SAMPLE_CHUNK, left)
        else:
            with _item_lock:
                per_item = _item_bytes.get(key)
            if per_item is None:
                k = 1
            else:
                free, _ = torch.cuda.mem_get_info(device)
                k = max(1, choose_batch(free, per_item, min(left * batch, GPU_ITEM_LIMIT)) // batch)
        items = sample_generators(seed, slices, range(drawn, drawn + k), device)
        if cuda and per_item is None:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        with _grad_mode(sampler):
            result = sampler.sample(y.repeat(k, *([1] * (y.ndim - 1))), operator, sigma.repeat(k), 1, items,
                                    callback=_step_progress(progress, drawn, k, n_samples))
        if cuda and per_item is None:
            peak = torch.cuda.max_memory_allocated(device) - base
            with _item_lock:
                _item_bytes[key] = max(float(peak) / (k * batch), 1.0)
        post.add_cost(result)
        out = result.samples
        del result  # the draws on the device go as soon as they are on the output grid
        out = out.reshape(k, batch, *out.shape[2:])
        if keep_raw_mean:
            part = out.detach().to(torch.float64).sum(0).cpu()
            raw_sum = part if raw_sum is None else raw_sum + part
        block = to_output(out)
        del out
        block = block.detach().to("cpu", torch.float32).numpy()
        welford.update(block)
        if on_chunk is not None:
            on_chunk(drawn, block)
        post.chunks.append(k)
        drawn += k
    post.mean = welford.mean.astype(np.float32)
    post.std = np.sqrt(welford.variance).astype(np.float32)
    post.count = drawn
    if raw_sum is not None:
        post.raw_mean = (raw_sum / drawn).to(torch.float32).numpy()
    return post


def _step_progress(progress: Progress | None, drawn: int, k: int, n_samples: int):
    """A sampler step callback that reports the whole posterior's fraction done."""
    if progress is None:
        return None

    def callback(step: int, total: int) -> None:
        progress((drawn + k * step / max(total, 1)) / n_samples)

    return callback


def _grad_mode(sampler):
    """No autograd graph unless the sampler differentiates through its network (DPS says so)."""
    return torch.no_grad() if sampler.no_grad else torch.enable_grad()
