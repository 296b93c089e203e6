"""Linear forward models as ``torch.nn.Module``s, with the adjoint next to the forward.

Every sampler and solver in inversa only needs ``A``, ``A^T`` and a bound on ``||A||``; keeping
those three behind one small interface lets a dense test matrix, a finite-difference gradient and
a CT projector be swapped freely, and lets one conformance suite (``conformance.py``) vouch for
all of them. The batch dimension always comes first: ``(B, *in_shape) -> (B, *out_shape)``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

Shape = tuple[int, ...]


def _as_shape(shape: Sequence[int] | int, what: str) -> Shape:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{what}: expected a non-empty tuple of positive sizes, got {shape}")
    return shape


class LinearOperator(torch.nn.Module):
    """A linear map ``A`` with ``forward`` (``A x``), ``adjoint`` (``A^T y``) and ``norm``.

    Subclasses implement ``_forward`` and ``_adjoint`` on batched tensors whose trailing shape
    has been checked; everything else (shape checks, ``normal``, the cached power-iteration
    norm, dtype/device bookkeeping) lives here so every operator behaves the same.
    """

    def __init__(self, in_shape: Sequence[int] | int, out_shape: Sequence[int] | int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__()
        self.in_shape: Shape = _as_shape(in_shape, f"{type(self).__name__}.in_shape")
        self.out_shape: Shape = _as_shape(out_shape, f"{type(self).__name__}.out_shape")
        self._dtype = dtype
        self._device = torch.device(device)
        self._norm_cache: dict[tuple[torch.dtype, torch.device], float] = {}

    # ------------------------------------------------------------------ dtype/device
    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def _apply(self, fn: Callable, *args, **kwargs):
        # nn.Module.to/cuda/double all funnel through _apply(fn); applying fn to an empty
        # probe tells us the new dtype and device whatever method the caller used.
        probe = fn(torch.empty(0, dtype=self._dtype, device=self._device))
        self._dtype, self._device = probe.dtype, probe.device
        self._on_move(self._dtype, self._device)
        return super()._apply(fn, *args, **kwargs)

    def _on_move(self, dtype: torch.dtype, device: torch.device) -> None:
        """Hook for subclasses holding non-buffer caches (e.g. sparse matrices)."""

    # ------------------------------------------------------------------ checks
    def _check(self, x: torch.Tensor, shape: Shape, role: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.{role}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"{type(self).__name__}.{role}: input has shape {tuple(x.shape)}; expected "
                f"(batch, {', '.join(map(str, shape))})"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}.{role}: expected a floating-point tensor, got {x.dtype}")

    # ------------------------------------------------------------------ the map
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.in_shape, "forward")
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, self.out_shape, "adjoint")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T A x``; subclasses may override with something cheaper."""
        return self.adjoint(self.forward(x))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ norm
    @torch.no_grad()
    def norm(self, n_iter: int = 100, generator: torch.Generator | None = None, tol: float = 1e-7) -> float:
        """Largest singular value by power iteration on ``normal``, cached per dtype and device.

        Step sizes of gradient methods need ``||A||^2``; an under-estimate makes them diverge, so
        the iteration runs until the Rayleigh quotient stops changing (``tol``, relative) or
        ``n_iter`` steps. The generator only seeds the start vector.
        """
        key = (self._dtype, self._device)
        if key in self._norm_cache:
            return self._norm_cache[key]
        return self._power_norm(n_iter, generator, tol)

    def _power_batch(self) -> int:
        """Rows of the power iteration's start vector: operators whose batch rows differ (per-slice
        maps or masks) iterate on all of them at once, so the estimate bounds every row."""
        return 1

    def _power_norm(self, n_iter: int, generator: torch.Generator | None, tol: float) -> float:
        key = (self._dtype, self._device)
        if n_iter < 1:
            raise ValueError(f"{type(self).__name__}.norm: n_iter must be >= 1, got {n_iter}")
        if generator is None:  # a fixed start: the estimate, and every step size built on it, must not
            # depend on the process's global RNG (a Dask worker process and a thread give the same store)
            generator = torch.Generator(device=self._device).manual_seed(0)
        gen_device = generator.device
        x = torch.randn((self._power_batch(), *self.in_shape), generator=generator, dtype=self._dtype,
                        device=gen_device)
        x = x.to(self._device)
        x = x / torch.linalg.vector_norm(x)
        estimate = 0.0
        for _ in range(n_iter):
            z = self.normal(x)
            new = float(torch.sqrt(torch.clamp(torch.sum(x * z), min=0.0)))
            size = torch.linalg.vector_norm(z)
            if float(size) == 0.0:
                estimate = 0.0
                break
            x = z / size
            if estimate > 0 and abs(new - estimate) <= tol * new:
                estimate = new
                break
            estimate = new
        self._norm_cache[key] = estimate
        return estimate

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class MatrixOperator(LinearOperator):
    """A dense matrix acting on flattened inputs: the exact reference operator for tests."""

    def __init__(self, matrix: torch.Tensor, in_shape: Sequence[int] | int | None = None,
                 out_shape: Sequence[int] | int | None = None):
        if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or not matrix.is_floating_point():
            raise ValueError(
                f"MatrixOperator: expected a 2-D floating-point torch.Tensor, got "
                f"{type(matrix).__name__} {tuple(getattr(matrix, 'shape', ()))}"
            )
        m, n = matrix.shape
        in_shape = _as_shape(in_shape if in_shape is not None else n, "MatrixOperator.in_shape")
        out_shape = _as_shape(out_shape if out_shape is not None else m, "MatrixOperator.out_shape")
        if math.prod(in_shape) != n or math.prod(out_shape) != m:
            raise ValueError(
                f"MatrixOperator: matrix is {m} x {n}; in_shape {in_shape} and out_shape {out_shape} "
                f"must have {n} and {m} elements"
            )
        super().__init__(in_shape, out_shape, dtype=matrix.dtype, device=matrix.device)
        self.register_buffer("matrix", matrix.detach().clone())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.matrix.to(dtype=x.dtype, device=x.device)
        return (x.reshape(x.shape[0], -1) @ a.T).reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        a = self.matrix.to(dtype=y.dtype, device=y.device)
        return (y.reshape(y.shape[0], -1) @ a).reshape(y.shape[0], *self.in_shape)


class Identity(LinearOperator):
    """``A = I``: turns a reconstruction method into a denoiser, and anchors the test registry."""

    def __init__(self, shape: Sequence[int] | int):
        shape = _as_shape(shape, "Identity.shape")
        super().__init__(shape, shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def norm(self, n_iter: int = 100, generator: torch.Generator | None = None, tol: float = 1e-7) -> float:
        return 1.0


class Gradient2D(LinearOperator):
    """Forward differences of ``(B, H, W)`` images -> ``(B, 2, H, W)``, Neumann boundary.

    Channel 0 is the difference along ``y`` (rows, ``x[i+1, j] - x[i, j]``), channel 1 along
    ``x`` (columns); the last row/column difference is zero (the image is extended by copying
    its edge). The adjoint is the negative divergence with the matching boundary terms, so
    TV and Gaussian-Markov-random-field priors built on it have exact gradients. ``spacing``
    (mm) divides the differences so that the gradient is in image units per mm.
    """

    def __init__(self, shape: Sequence[int], spacing: float = 1.0):
        shape = _as_shape(shape, "Gradient2D.shape")
        if len(shape) != 2:
            raise ValueError(f"Gradient2D.shape: expected (H, W), got {shape}")
        if not (spacing > 0 and math.isfinite(spacing)):
            raise ValueError(f"Gradient2D.spacing: expected a positive finite number, got {spacing}")
        super().__init__(shape, (2, *shape))
        self.spacing = float(spacing)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((x.shape[0], 2, *self.in_shape))
        out[:, 0, :-1, :] = x[:, 1:, :] - x[:, :-1, :]
        out[:, 1, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
        return out / self.spacing

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        gy, gx = y[:, 0], y[:, 1]
        out = y.new_zeros((y.shape[0], *self.in_shape))
        # -div: each difference x[k+1] - x[k] sends +g to k+1 and -g to k.
        out[:, 1:, :] += gy[:, :-1, :]
        out[:, :-1, :] -= gy[:, :-1, :]
        out[:, :, 1:] += gx[:, :, :-1]
        out[:, :, :-1] -= gx[:, :, :-1]
        return out / self.spacing
