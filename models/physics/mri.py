"""2-D Cartesian MRI: the centred orthonormal FFT and the multi-coil SENSE operator.

Conventions are those of docs/conventions.md ("MRI"): k-space is centred (DC at index ``N // 2``
of an ``N``-point axis) and the transform is the orthonormal DFT with that centring on both
sides, ``k = fftshift(fft2(ifftshift(x), norm="ortho"))``.

``SenseOperator`` is the *real view* of SENSE, so that every sampler written for real tensors
(real inner products, ``forward``/``adjoint``/``normal``/``norm``) runs on it unchanged: images
are two real channels ``(2, H, W)`` (real, imaginary) and k-space is ``torch.view_as_real`` of
complex ``(C, H, W)``, i.e. ``(C, H, W, 2)``. Under the real inner product the adjoint of the
real view is the complex adjoint (``Re <A x, y> = Re <x, A^H y>``).

Implementation: the centring shifts are not done with ``fftshift``/``ifftshift`` (two extra
passes over every coil image), but with the identity

    fftshift(fft(ifftshift(x))) = g * a ⊙ fft(a ⊙ x),   a[n] = exp(2πi n c / N),  g = exp(-2πi c² / N)

with ``c = N // 2`` (for even ``N``, ``a`` is ``(-1)^n``). The input phase ``a`` is applied
once per *image* (not per coil) and the output phase ``g a`` is folded into the sampling mask,
so one coil costs one multiplication by its map, one FFT and one multiplication by the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from inversa.models.physics.base import LinearOperator

__all__ = ["fft2c", "ifft2c", "image_to_channels", "channels_to_image", "SenseOperator"]

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}
# Complex elements of one coil chunk's temporaries (32 MiB in complex64): bounds the peak memory
# of forward/adjoint/normal to the output (forward) plus a few chunks, whatever the coil count.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


# ============================================================================ FFT and views
def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D DFT over the last two axes (DC at index ``N // 2``)."""
    if not x.is_complex():
        raise TypeError(f"fft2c: expected a complex tensor, got {x.dtype}")
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (and its adjoint: the transform is unitary)."""
    if not k.is_complex():
        raise TypeError(f"ifft2c: expected a complex tensor, got {k.dtype}")
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)


def image_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(..., H, W)`` -> real ``(..., 2, H, W)`` (real and imaginary parts as dim -3)."""
    if not x.is_complex():
        raise TypeError(f"image_to_channels: expected a complex tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"image_to_channels: expected (..., H, W), got shape {tuple(x.shape)}")
    return torch.stack((x.real, x.imag), dim=-3)


def channels_to_image(x: torch.Tensor) -> torch.Tensor:
    """Real ``(..., 2, H, W)`` -> complex ``(..., H, W)``; inverse of :func:`image_to_channels`."""
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"channels_to_image: expected a real floating-point tensor, got {x.dtype}")
    if x.dim() < 3 or x.shape[-3] != 2:
        raise ValueError(f"channels_to_image: expected (..., 2, H, W), got shape {tuple(x.shape)}")
    return torch.complex(x[..., 0, :, :], x[..., 1, :, :])


# ============================================================================ centring phases
def _axis_phase(n: int) -> tuple[np.ndarray, complex]:
    """``a[m] = exp(2πi m c / n)`` and ``g = exp(-2πi c² / n)``, ``c = n // 2``, in float64.

    Angles are reduced with integer arithmetic and multiples of a quarter turn are exact, so
    for even ``n`` the phases are exactly ``±1`` and the fast path is the plain shifted FFT to
    the last bit.
    """
    c = n // 2
    steps = (np.arange(n, dtype=np.int64) * c) % n
    a = np.exp(2j * np.pi * steps / n)
    quarter = (4 * steps) % n == 0
    a[quarter] = np.array([1, 1j, -1, -1j])[(4 * steps[quarter]) // n]
    s = (-c * c) % n
    g = np.exp(2j * np.pi * s / n)
    if (4 * s) % n == 0:
        g = [1, 1j, -1, -1j][(4 * s) // n]
    return a, complex(g)


def _as_complex_tensor(value, what: str) -> torch.Tensor:
    t = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
    if not t.is_complex():
        raise TypeError(f"{what}: expected complex sensitivities, got {t.dtype}")
    if t.dtype not in _REAL:
        raise TypeError(f"{what}: expected complex64 or complex128, got {t.dtype}")
    return t.detach()


# ============================================================================ SENSE
class SenseOperator(LinearOperator):
    """Real view of multi-coil Cartesian SENSE: ``k_c = M * fft2c(S_c * x)``.

    Args:
        maps: complex sensitivities ``(S, C, H, W)`` (``S`` slices; a 3-D ``(C, H, W)`` is
            ``S = 1``), normalised as in docs/conventions.md (``sum_c |S_c|^2 = 1`` on the
            object) by the caller. The dtype of the operator follows them: complex64 ->
            float32, complex128 -> float64; ``.to(dtype=torch.float64)`` makes them complex128.
        mask: sampling mask, bool (True = sampled) or real weights, ``(S, H, W)``, ``(1, H, W)``
            or ``(H, W)``; ``None`` = fully sampled.
        stack_slices: ``False`` (default, the pipeline's layout): a batch item is one slice,
            ``in_shape = (2, H, W)``, ``out_shape = (C, H, W, 2)``, the batch ``N`` must be a
            multiple of ``S`` and item ``n`` uses ``maps[n % S]`` and ``mask[n % S]`` (a region's
            ``S`` slices repeated ``k`` times for ``k`` posterior samples, sample-major).
            ``True``: a batch item is a whole region, ``in_shape = (S, 2, H, W)``,
            ``out_shape = (S, C, H, W, 2)``; the same map (a reshape of the flat layout), useful
            where every item must be an independent copy of one operator.
        coil_chunk: coils processed at once; ``None`` picks as many as keep one chunk's
            temporaries under ``DEFAULT_CHUNK_ELEMENTS`` complex elements.

    ``forward``/``adjoint``/``normal`` are the real view; ``forward_complex``/``adjoint_complex``/
    ``normal_complex`` take and return complex tensors (the same batch rule). Inputs of another
    floating dtype than the operator's are accepted but cost a cast of the maps on every call.
    """

    def __init__(self, maps, mask=None, *, stack_slices: bool = False, coil_chunk: int | None = None):
        maps = _as_complex_tensor(maps, "SenseOperator.maps")
        if maps.dim() == 3:
            maps = maps.unsqueeze(0)
        if maps.dim() != 4:
            raise ValueError(f"SenseOperator.maps: expected (S, C, H, W) or (C, H, W), got shape {tuple(maps.shape)}")
        n_maps, n_coils, h, w = maps.shape
        if min(maps.shape) < 1:
            raise ValueError(f"SenseOperator.maps: empty shape {tuple(maps.shape)}")
        dtype, device = _REAL[maps.dtype], maps.device
        mask_t = None
        if mask is not None:
            mask_t = torch.as_tensor(mask) if not isinstance(mask, torch.Tensor) else mask.detach()
            if mask_t.is_complex():
                raise TypeError("SenseOperator.mask: expected a bool or real mask, got a complex one")
            if mask_t.dim() == 2:
                mask_t = mask_t.unsqueeze(0)
            if mask_t.dim() != 3 or tuple(mask_t.shape[1:]) != (h, w):
                raise ValueError(f"SenseOperator.mask: expected (S, {h}, {w}), (1, {h}, {w}) or ({h}, {w}), "
                                 f"got shape {tuple(mask_t.shape)}")
            mask_t = mask_t.to(dtype=dtype, device=device)
            if not bool(torch.isfinite(mask_t).all()):
                raise ValueError("SenseOperator.mask: non-finite values")
        n_mask = 1 if mask_t is None else mask_t.shape[0]
        n_slices = max(n_maps, n_mask)
        if n_maps not in (1, n_slices) or n_mask not in (1, n_slices):
            raise ValueError(f"SenseOperator: maps have {n_maps} slices and the mask {n_mask}; each must be 1 or S")
        if coil_chunk is not None and int(coil_chunk) < 1:
            raise ValueError(f"SenseOperator.coil_chunk: expected a positive int or None, got {coil_chunk}")
        self.n_slices, self.n_coils, self.image_shape = n_slices, n_coils, (h, w)
        self.stack_slices = bool(stack_slices)
        self.coil_chunk = None if coil_chunk is None else int(coil_chunk)
        if self.stack_slices:
            in_shape, out_shape = (n_slices, 2, h, w), (n_slices, n_coils, h, w, 2)
        else:
            in_shape, out_shape = (2, h, w), (n_coils, h, w, 2)
        super().__init__(in_shape, out_shape, dtype=dtype, device=device)
        # Complex data is kept as its real view: nn.Module.to(dtype=float64) would otherwise cast
        # complex buffers to real (dropping the imaginary part); a float buffer follows it exactly.
        self.register_buffer("maps_real", torch.view_as_real(maps.resolve_conj()).clone().contiguous())
        self.register_buffer("mask_weights", None if mask_t is None else mask_t.clone().contiguous())
        self._phase_cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def single_coil(cls, shape: Sequence[int], mask=None, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", stack_slices: bool = False) -> SenseOperator:
        """``k = M * fft2c(x)``: one coil of unit sensitivity (maps of ones, ``C = 1``)."""
        h, w = (int(s) for s in shape)
        if dtype not in _COMPLEX:
            raise TypeError(f"SenseOperator.single_coil: dtype must be float32 or float64, got {dtype}")
        maps = torch.ones((1, 1, h, w), dtype=_COMPLEX[dtype], device=device)
        return cls(maps, mask, stack_slices=stack_slices)

    # ------------------------------------------------------------------ accessors
    @property
    def maps(self) -> torch.Tensor:
        """Complex ``(S_maps, C, H, W)`` view of the stored sensitivities (no copy)."""
        return torch.view_as_complex(self.maps_real)

    @property
    def mask(self) -> torch.Tensor | None:
        """Real ``(S_mask, H, W)`` sampling weights, or ``None`` (fully sampled)."""
        return self.mask_weights

    @property
    def complex_dtype(self) -> torch.dtype:
        return _COMPLEX[self.dtype]

    def extra_repr(self) -> str:
        return (f"slices={self.n_slices}, coils={self.n_coils}, image={self.image_shape}, "
                f"mask={'full' if self.mask_weights is None else 'given'}, stack_slices={self.stack_slices}")

    def _apply(self, fn, *args, **kwargs):
        # Refuse dtypes the FFT path cannot use before any state changes (half, complex, ...).
        probe = fn(torch.empty(0, dtype=self._dtype, device=self._device))
        if probe.dtype not in _COMPLEX:
            raise TypeError(f"SenseOperator: dtype must be float32 or float64 (complex64/complex128 maps), "
                            f"got {probe.dtype}")
        return super()._apply(fn, *args, **kwargs)

    def _on_move(self, dtype: torch.dtype, device: torch.device) -> None:
        self._phase_cache = {}

    # ------------------------------------------------------------------ pieces per call
    def _phases(self, cdtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_in, a_out)`` ``(H, W)``: fft2c(x) = a_out ⊙ fft2(a_in ⊙ x, ortho); built in float64."""
        key = (cdtype, device)
        cached = self._phase_cache.get(key)
        if cached is None:
            (ay, gy), (ax, gx) = _axis_phase(self.image_shape[0]), _axis_phase(self.image_shape[1])
            a_in = np.outer(ay, ax)
            a_out = a_in * (gy * gx)
            cached = (torch.from_numpy(a_in).to(dtype=cdtype, device=device),
                      torch.from_numpy(a_out).to(dtype=cdtype, device=device))
            self._phase_cache[key] = cached
        return cached

    def _operands(self, dtype: torch.dtype, device: torch.device):
        if dtype not in _COMPLEX:
            raise TypeError(f"SenseOperator: expected float32/float64 (complex64/complex128) data, got {dtype}")
        cdtype = _COMPLEX[dtype]
        maps = self.maps
        if maps.dtype != cdtype or maps.device != device:
            maps = maps.to(dtype=cdtype, device=device)  # a copy: keep the operator in the data's dtype
        mask = self.mask_weights
        if mask is not None and (mask.dtype != dtype or mask.device != device):
            mask = mask.to(dtype=dtype, device=device)
        a_in, a_out = self._phases(cdtype, device)
        return maps, mask, a_in, a_out

    def _chunk(self, batch: int) -> int:
        if self.coil_chunk is not None:
            return min(self.coil_chunk, self.n_coils)
        per_coil = batch * self.image_shape[0] * self.image_shape[1]
        return max(1, min(self.n_coils, DEFAULT_CHUNK_ELEMENTS // max(per_coil, 1)))

    def _split_batch(self, n: int, role: str) -> int:
        if n % self.n_slices:
            raise ValueError(f"SenseOperator.{role}: batch {n} is not a multiple of the {self.n_slices} slices "
                             f"(item n uses maps[n % S])")
        return n // self.n_slices

    @staticmethod
    def _slice_view(t: torch.Tensor | None, n_slices: int) -> torch.Tensor | None:
        """``(S_t, ...)`` -> broadcastable over ``(k, S, ...)``: S_t is 1 or S."""
        return None if t is None else t.unsqueeze(0) if t.shape[0] == n_slices else t

    # ------------------------------------------------------------------ complex kernels
    def _check_complex(self, t: torch.Tensor, trailing: tuple[int, ...], role: str) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_complex():
            raise TypeError(f"SenseOperator.{role}: expected a complex torch.Tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.dim() < len(trailing) + 1 or tuple(t.shape[-len(trailing):]) != trailing:
            raise ValueError(f"SenseOperator.{role}: input has shape {tuple(t.shape)}; expected "
                             f"(..., {', '.join(map(str, trailing))}) with at least one batch dimension")

    def forward_complex(self, x: torch.Tensor) -> torch.Tensor:
        """Complex images ``(..., H, W)`` -> complex k-space ``(..., C, H, W)``."""
        h, w = self.image_shape
        self._check_complex(x, (h, w), "forward_complex")
        lead = x.shape[:-2]
        n = math.prod(lead)
        k = self._split_batch(n, "forward_complex")
        s, c = self.n_slices, self.n_coils
        maps, mask, a_in, a_out = self._operands(_REAL[x.dtype], x.device)
        kmask = a_out if mask is None else mask * a_out  # (S_m, H, W) or (H, W)
        kmask = self._slice_view(kmask.unsqueeze(-3), s) if kmask.dim() == 3 else kmask
        maps = self._slice_view(maps, s)
        xm = (x.reshape(k, s, 1, h, w) * a_in)
        step = self._chunk(n)
        track = torch.is_grad_enabled() and (x.requires_grad or maps.requires_grad)
        if step >= c:
            out = torch.fft.fft2(xm * maps, norm="ortho")
            out = out * kmask if track else out.mul_(kmask)
            return out.reshape(*lead, c, h, w)
        if track:
            parts = [torch.fft.fft2(xm * maps[..., c0:c0 + step, :, :], norm="ortho") * kmask
                     for c0 in range(0, c, step)]
            return torch.cat(parts, dim=2).reshape(*lead, c, h, w)
        out = torch.empty((k, s, c, h, w), dtype=x.dtype, device=x.device)
        for c0 in range(0, c, step):
            part = torch.fft.fft2(xm * maps[..., c0:c0 + step, :, :], norm="ortho")
            torch.mul(part, kmask, out=out[:, :, c0:c0 + step])
        return out.reshape(*lead, c, h, w)

    def adjoint_complex(self, y: torch.Tensor) -> torch.Tensor:
        """Complex k-space ``(..., C, H, W)`` -> complex images ``(..., H, W)``."""
        h, w = self.image_shape
        c, s = self.n_coils, self.n_slices
        self._check_complex(y, (c, h, w), "adjoint_complex")
        lead = y.shape[:-3]
        n = math.prod(lead)
        k = self._split_batch(n, "adjoint_complex")
        maps, mask, a_in, a_out = self._operands(_REAL[y.dtype], y.device)
        kmask = (a_out if mask is None else mask * a_out).conj()
        kmask = self._slice_view(kmask.unsqueeze(-3), s) if kmask.dim() == 3 else kmask
        maps = self._slice_view(maps, s).conj()
        yv = y.reshape(k, s, c, h, w)
        step = self._chunk(n)
        track = torch.is_grad_enabled() and (y.requires_grad or maps.requires_grad)
        acc = None
        for c0 in range(0, c, step):
            part = torch.fft.ifft2(yv[:, :, c0:c0 + step] * kmask, norm="ortho")
            mc = maps[..., c0:c0 + step, :, :]
            part = (part * mc if track else part.mul_(mc)).sum(dim=2)
            acc = part if acc is None else (acc + part if track else acc.add_(part))
        out = acc * a_in.conj() if track else acc.mul_(a_in.conj())
        return out.reshape(*lead, h, w)

    def normal_complex(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x = sum_c conj(S_c) ifft2c(|M|^2 fft2c(S_c x))`` (the mask applied once)."""
        h, w = self.image_shape
        self._check_complex(x, (h, w), "normal_complex")
        lead = x.shape[:-2]
        n = math.prod(lead)
        k = self._split_batch(n, "normal_complex")
        s, c = self.n_slices, self.n_coils
        maps, mask, a_in, _ = self._operands(_REAL[x.dtype], x.device)
        maps = self._slice_view(maps, s)
        track = torch.is_grad_enabled() and (x.requires_grad or maps.requires_grad)
        xv = x.reshape(k, s, h, w)
        if mask is None:  # F^H F = I: A^H A is the pointwise coil energy
            energy = (maps.real.square() + maps.imag.square()).sum(dim=-3)  # (1|S, ..., H, W)
            return (xv * energy.reshape(-1, h, w)).reshape(*lead, h, w)
        weight = mask.square().unsqueeze(-3)  # (S_m, 1, H, W): |M|^2, the phases cancel
        weight = self._slice_view(weight, s)
        xm = xv.unsqueeze(2) * a_in
        step = self._chunk(n)
        acc = None
        for c0 in range(0, c, step):
            mc = maps[..., c0:c0 + step, :, :]
            part = torch.fft.fft2(xm * mc, norm="ortho")
            part = part * weight if track else part.mul_(weight)
            part = torch.fft.ifft2(part, norm="ortho")
            part = (part * mc.conj() if track else part.mul_(mc.conj())).sum(dim=2)
            acc = part if acc is None else (acc + part if track else acc.add_(part))
        out = acc * a_in.conj() if track else acc.mul_(a_in.conj())
        return out.reshape(*lead, h, w)

    # ------------------------------------------------------------------ real view
    def _images_in(self, x: torch.Tensor) -> torch.Tensor:
        return torch.complex(x[..., 0, :, :], x[..., 1, :, :])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(self.forward_complex(self._images_in(x)))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        z = self.adjoint_complex(torch.view_as_complex(y if y.is_contiguous() else y.contiguous()))
        return image_to_channels(z)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.in_shape, "normal")
        return image_to_channels(self.normal_complex(self._images_in(x)))

    # ------------------------------------------------------------------ norm
    @torch.no_grad()
    def norm(self, n_iter: int = 100, generator: torch.Generator | None = None, tol: float = 1e-7) -> float:
        """Largest singular value, cached per dtype and device.

        Exact when every slice's mask is constant (fully sampled: ``A^H A`` is the pointwise
        coil energy, so ``||A|| = max |m_s| sqrt(max sum_c |S_c|^2)``, at most 1 for maps with
        ``sum_c |S_c|^2 <= 1``); otherwise the base class's power iteration, run on all ``S``
        slices at once so that the estimate covers every slice (the operator is block-diagonal
        over the batch).
        """
        key = (self._dtype, self._device)
        if key in self._norm_cache:
            return self._norm_cache[key]
        maps = self.maps
        energy = (maps.real.square() + maps.imag.square()).sum(dim=1)  # (S_maps, H, W)
        mask = self.mask_weights
        exact = None
        if mask is None:
            exact = float(energy.max().sqrt())
        else:
            flat = mask.reshape(mask.shape[0], -1)
            if bool((flat == flat[:, :1]).all()):
                level = flat[:, 0].abs()  # (S_mask,)
                peak = energy.reshape(energy.shape[0], -1).max(dim=1).values.sqrt()  # (S_maps,)
                exact = float((level * peak).max())  # each has 1 or S entries: they broadcast
        if exact is not None:
            self._norm_cache[key] = exact
            return exact
        return self._power_norm(n_iter, generator, tol)

    def _power_batch(self) -> int:
        return 1 if self.stack_slices else self.n_slices
