"""ESPIRiT coil sensitivities from the fully sampled centre of k-space, in torch (CPU or GPU).

The method of Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI:
where SENSE meets GRAPPA", MRM 71:990-1001 (2014), with the choices of SigPy's
``sigpy.mri.app.EspiritCalib`` (one set of maps):

1. the calibration region is the centred ``calib_width`` square of k-space; its calibration
   matrix has one row per ``kernel_width``-square patch (all coils);
2. its right singular vectors with singular value above ``threshold * max`` span the signal
   space; each is a multi-coil k-space kernel;
3. in image space every pixel ``r`` gets the ``C x C`` matrix
   ``G(r) = (N / kw^2) sum_k g_k(r) g_k(r)^H``, ``g_k = ifft2c(zero-padded kernel k)``, whose
   dominant eigenvector is the vector of coil sensitivities at ``r`` (eigenvalue ~1 where there
   is signal);
4. that eigenvector by per-pixel power iteration (``max_iter`` steps from a vector of ones),
   maps zeroed where the eigenvalue is at most ``crop``, and the phase of every pixel made
   relative to the first coil; so ``sum_c |S_c|^2 = 1`` wherever the maps are not cropped.

Step 3 does not form the ``K`` zero-padded kernel images (``K * C`` FFTs of the full grid, SigPy's
way): ``g_c conj(g_d)`` is a trigonometric polynomial whose coefficients are the
cross-correlations of the small kernels, so ``G`` is built from the ``(2 kw - 1)^2``
correlation coefficients by two small matrix products per coil pair (exact, not an
approximation), in blocks of image rows so that memory stays bounded for many coils.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["espirit_maps"]

_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}
# Complex elements of one block of per-pixel C x C matrices (64 MiB in complex64).
_BLOCK_ELEMENTS = 1 << 23


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"espirit_maps.{what}: expected a positive int or a pair, got {value}")
    return value


def _centre_crop(ksp: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centred ``size`` block of the last two axes, as ``sigpy.resize`` cuts it."""
    (h, w), (ch, cw) = ksp.shape[-2:], size
    y0, x0 = h // 2 - ch // 2, w // 2 - cw // 2
    return ksp[..., y0:y0 + ch, x0:x0 + cw]


def _signal_kernels(calib: torch.Tensor, kw: int, threshold: float) -> torch.Tensor:
    """Right singular vectors of the calibration matrix above ``threshold * max``: ``(K, C, kw, kw)``."""
    c = calib.shape[0]
    patches = calib.unfold(1, kw, 1).unfold(2, kw, 1)  # (C, ny, nx, kw, kw)
    mat = patches.permute(1, 2, 0, 3, 4).reshape(-1, c * kw * kw)  # row: one patch, coil-major
    _, sv, vh = torch.linalg.svd(mat.to(torch.complex128), full_matrices=False)
    keep = sv > threshold * sv.max()
    return vh[keep].reshape(-1, c, kw, kw)


def _correlations(kernels: torch.Tensor, kw: int) -> torch.Tensor:
    """``R[c, d, ty, tx] = sum_k sum_j K_kc(j) conj(K_kd(j - delta))``, ``delta = t - (kw - 1)``."""
    length = 2 * kw - 1  # the correlation's support: circular correlation of this length is exact
    spectra = torch.fft.fft2(kernels, s=(length, length))  # (K, C, L, L)
    cross = torch.einsum("kcab,kdab->cdab", spectra, spectra.conj())
    corr = torch.fft.ifft2(cross)  # index t holds the lag delta = t mod L
    return torch.roll(corr, shifts=(kw - 1, kw - 1), dims=(-2, -1))  # index t holds delta = t - (kw - 1)


def _lag_phases(n: int, kw: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``E[r, t] = exp(2 pi i (t - kw + 1)(r - n // 2) / n)``: ``(n, 2 kw - 1)``, built in float64."""
    r = torch.arange(n, dtype=torch.float64, device=device) - n // 2
    lag = torch.arange(2 * kw - 1, dtype=torch.float64, device=device) - (kw - 1)
    steps = torch.remainder(torch.outer(r, lag), n)  # integer valued: reduce before scaling
    return torch.polar(torch.ones_like(steps), 2.0 * math.pi * steps / n).to(dtype)


def _power_iteration(gram: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant eigenvector ``(P, C)`` and eigenvalue ``(P,)`` of each pixel's Hermitian ``gram[p]`` (P, C, C).

    SigPy's iteration: start from ones, ``v <- G v / ||G v||``; the eigenvalue is the last norm.
    """
    p, c, _ = gram.shape
    vec = torch.ones((p, c, 1), dtype=gram.dtype, device=gram.device)
    new = torch.empty_like(vec)
    tiny = torch.finfo(_REAL[gram.dtype]).tiny
    eig = None
    for _ in range(max_iter):
        torch.bmm(gram, vec, out=new)
        eig = torch.linalg.vector_norm(torch.view_as_real(new).reshape(p, -1), dim=1)
        torch.mul(new, eig.clamp(min=tiny).reciprocal().reshape(p, 1, 1), out=vec)
    return vec.reshape(p, c), eig


def _espirit_one(ksp: torch.Tensor, calib: tuple[int, int], kw: int, threshold: float, crop: float,
                 max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_coils, h, w = ksp.shape
    cdtype = ksp.dtype
    kernels = _signal_kernels(_centre_crop(ksp, calib), kw, threshold)
    # G(r) = (h w / kw^2) sum_k g_k g_k^H and g_kc conj(g_kd) = (1 / (h w)) sum_delta R_cd(delta) e^{2 pi i delta (r - c)}
    corr = _correlations(kernels, kw).to(cdtype) / (kw * kw)  # (C, C, L, L)
    ey = _lag_phases(h, kw, cdtype, ksp.device)  # (h, L)
    ex = _lag_phases(w, kw, cdtype, ksp.device)  # (w, L)
    half = corr @ ex.T  # (C, C, L, w)
    maps = torch.empty((n_coils, h, w), dtype=cdtype, device=ksp.device)
    eig = torch.empty((h, w), dtype=_REAL[cdtype], device=ksp.device)
    rows = max(1, min(h, _BLOCK_ELEMENTS // (n_coils * n_coils * w)))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        gram = (ey[r0:r1] @ half).reshape(n_coils, n_coils, -1).permute(2, 0, 1).contiguous()  # (rows * w, C, C)
        vec, val = _power_iteration(gram, max_iter)
        maps[:, r0:r1] = vec.T.reshape(n_coils, r1 - r0, w)
        eig[r0:r1] = val.reshape(r1 - r0, w)
    # Phase relative to the first coil (pixels where it vanishes keep their phase), then the crop.
    first = maps[0]
    size = first.abs()
    unit = torch.where(size > 0, first / torch.where(size > 0, size, torch.ones_like(size)), torch.ones_like(first))
    maps *= unit.conj()
    maps *= (eig > crop).to(maps.real.dtype)
    return maps, eig


def espirit_maps(kspace: torch.Tensor, calib_width: int | Sequence[int] = 24, kernel_width: int = 6,
                 threshold: float = 0.02, crop: float = 0.95, max_iter: int = 100, *,
                 return_eigenvalues: bool = False):
    """ESPIRiT sensitivity maps from centred k-space.

    Args:
        kspace: complex ``(C, ky, kx)`` or ``(S, C, ky, kx)`` (a torch tensor on any device, or
            array-like), centred as in docs/conventions.md, zeros where not sampled; the
            centred ``calib_width`` square must be fully sampled.
        calib_width: side of the calibration square (int or ``(cy, cx)``), clipped to the grid.
        kernel_width: side of the k-space kernels.
        threshold: singular values above ``threshold * max`` span the signal space.
        crop: maps are zero where the dominant eigenvalue is at most ``crop`` (background).
        max_iter: power iterations per pixel (a fixed count, as in SigPy).
        return_eigenvalues: also return the dominant eigenvalue per pixel, ``(ky, kx)`` or
            ``(S, ky, kx)``, real.

    Returns:
        Complex maps of the shape and dtype (complex64/complex128) of ``kspace``, on its device,
        with ``sum_c |S_c|^2 = 1`` wherever they are not cropped and the first coil's phase 0.
    """
    ksp = torch.as_tensor(kspace) if not isinstance(kspace, torch.Tensor) else kspace.detach()
    if not ksp.is_complex():
        raise TypeError(f"espirit_maps: expected complex k-space, got {ksp.dtype}")
    if ksp.dtype not in _REAL:
        raise TypeError(f"espirit_maps: expected complex64 or complex128, got {ksp.dtype}")
    if ksp.dim() not in (3, 4):
        raise ValueError(f"espirit_maps: expected (C, ky, kx) or (S, C, ky, kx), got shape {tuple(ksp.shape)}")
    kw = int(kernel_width)
    calib = _pair(calib_width, "calib_width")
    h, w = ksp.shape[-2:]
    calib = (min(calib[0], h), min(calib[1], w))
    if kw < 1 or kw > min(calib):
        raise ValueError(f"espirit_maps: kernel_width {kw} must be between 1 and the calibration size {calib}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"espirit_maps: threshold must be in [0, 1), got {threshold}")
    if int(max_iter) < 1:
        raise ValueError(f"espirit_maps: max_iter must be >= 1, got {max_iter}")
    stack = ksp.unsqueeze(0) if ksp.dim() == 3 else ksp
    with torch.no_grad():
        results = [_espirit_one(s, calib, kw, float(threshold), float(crop), int(max_iter)) for s in stack]
    maps = torch.stack([m for m, _ in results])
    eig = torch.stack([e for _, e in results])
    if ksp.dim() == 3:
        maps, eig = maps[0], eig[0]
    return (maps, eig) if return_eigenvalues else maps
