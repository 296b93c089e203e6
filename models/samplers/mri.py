"""Classical MRI reconstructions on the real view of a complex operator: zero-filled, CG-SENSE, L1-wavelet CS.

All three see the forward model only through the ``LinearOperator`` interface (``forward``,
``adjoint``, ``normal``, ``norm``) and the real-view layout of docs/conventions.md: a complex
image is two real channels ``(2, H, W)`` (real, imaginary). So they work alike for multi-coil
SENSE (``models.physics.mri.SenseOperator``), single-coil Fourier sampling and any other
real-view complex operator; the compressed-sensing sampler also accepts a real image ``(H, W)``.

- ``ZeroFilled``: ``A^H y``, the coil-combined zero-filled image (with normalised maps and full
  sampling it is the image itself).
- ``CGSense``: conjugate gradients on ``(A^H A + lam ||A||^2 I) x = A^H y`` from zero
  (Pruessmann et al. 2001), regularised by the iteration limit when ``lam = 0``.
- ``L1WaveletCS``: ``min_x 0.5 ||A x - y||^2 + lam_abs ||W x||_1`` by FISTA, ``W`` an orthonormal
  2-D wavelet transform (Lustig, Donoho & Pauly 2007; Beck & Teboulle 2009).

Each slice of a batch has its own stopping rule (and its own regularisation weight where that
depends on the data), so a slice's result does not depend on the batch it ran in.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from .base import (
    Sampler,
    SampleResult,
    StepCallback,
    Tally,
    batch_dot,
    check_measurement,
    expand_to,
    per_slice_sigma,
)
from .cg import conjugate_gradient


def _normal(operator):
    """``x -> A^H A x``, the operator's own ``normal`` where it has one (it may be cheaper)."""
    normal = getattr(operator, "normal", None)
    if callable(normal):
        return normal
    return lambda x: operator.adjoint(operator.forward(x))


class ZeroFilled(Sampler):
    """The zero-filled reconstruction ``A^H y``: one adjoint, no parameters.

    For SENSE with maps normalised so that ``sum_c |S_c|^2 = 1`` this is the coil combination
    ``sum_c conj(S_c) F^H M k_c`` of the zero-filled coil images; on fully sampled noiseless data
    it is the image itself. ``steps = 1``, ``nfe = 1``.
    """

    name = "zero-filled"
    deterministic = True
    uses_system_matrix = False

    def __init__(self):
        super().__init__()

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y = check_measurement(y, operator, self.name)
        tally = Tally(callback, total=1, nfe=1)
        x = operator.adjoint(y)
        tally.step()
        return tally.result(x.unsqueeze(0))


class CGSense(Sampler):
    """CG-SENSE: conjugate gradients on ``(A^H A + lam ||A||^2 I) x = A^H y``, started at zero.

    - ``lam``: Tikhonov weight relative to ``||A||^2`` (the absolute weight is
      ``lam * ||A||^2``, so it means the same whatever the scale of the maps or the FFT; with
      maps normalised to ``sum_c |S_c|^2 = 1`` and the centre of k-space sampled,
      ``||A|| = 1`` and ``lam`` is the absolute weight). Default 0: plain least squares,
      regularised by the iteration limit (CG on undersampled data amplifies noise as it
      converges, so ``max_iter`` matters: on the 16-coil brain of ../shared/data at 4x, 30
      iterations were best; on simulated studies with 4 to 8 coils and 1 % noise, about 10; a
      discrepancy-principle stop was tried and stopped too early on both).
    - ``max_iter`` (default 30), ``tol`` (default 1e-6): stop a slice when its relative residual
      ``||A^H y - (A^H A + lam I) x|| / ||A^H y||`` (by the CG recursion) is below ``tol``.

    The result's ``iterations`` and ``steps`` are the CG iterations of the slowest slice (the
    progress ``total`` is ``max_iter``), ``residual`` the largest final relative residual: above
    ``tol`` means a slice stopped at ``max_iter``. ``nfe = 1 + 2 * iterations`` (one ``A^H`` for
    the right-hand side, one ``A^H A`` per iteration counted as two).
    """

    name = "cg-sense"
    deterministic = True

    def __init__(self, lam: float = 0.0, max_iter: int = 30, tol: float = 1e-6):
        super().__init__()
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"cg-sense: lam must be a finite number >= 0, got {lam}")
        if int(max_iter) != max_iter or int(max_iter) < 1:
            raise ValueError(f"cg-sense: max_iter must be an integer >= 1, got {max_iter}")
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"cg-sense: tol must be > 0, got {tol}")
        self.lam = float(lam)
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def params(self) -> dict:
        return {"lam": self.lam, "max_iter": self.max_iter, "tol": self.tol}

    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y = check_measurement(y, operator, self.name)
        lam = self.lam * operator.norm() ** 2 if self.lam else 0.0
        tally = Tally(callback, total=self.max_iter, nfe=1)
        b = operator.adjoint(y)
        normal = _normal(operator)

        def apply(x: torch.Tensor) -> torch.Tensor:
            # conjugate_gradient applies the system once per iteration (none at a zero start),
            # so each call here is one CG step.
            out = normal(x)
            if lam:
                out = out + lam * x
            tally.nfe += 2
            tally.step()
            return out

        solved = conjugate_gradient(apply, b, tol=self.tol, max_iter=self.max_iter)
        tally.solver(solved.iterations, float(solved.relative_residual.max()) if b.shape[0] else 0.0)
        return tally.result(solved.x.unsqueeze(0))


# ---------------------------------------------------------------------------------------------- wavelets


BOUNDARIES = ("periodization", "boundary")


@functools.lru_cache(maxsize=128)
def _analysis_cpu(wavelet: str, length: int, boundary: str) -> torch.Tensor:
    """The orthogonal one-level 1-D analysis matrix for ``length`` (even) samples, float64 on the CPU.

    Rows: ``length // 2`` approximation (low-pass) then ``length // 2`` detail coefficients.
    ``"periodization"``: PyWavelets' periodised transform (``pywt.dwt(..., mode="periodization")``,
    the signal taken as periodic), built column by column from unit vectors, so it is that
    transform exactly; it keeps the wavelet's vanishing moments everywhere (a constant has no
    detail coefficients). ``"boundary"``: ptwt's boundary wavelets
    (``ptwt.matmul_transform.construct_boundary_a``), no wrap-around, but the orthogonalised
    boundary filters lose their vanishing moments (a constant leaves detail energy at the edges).
    A few milliseconds; cached per (wavelet, length, boundary).
    """
    if boundary == "boundary":
        from ptwt.matmul_transform import construct_boundary_a

        with warnings.catch_warnings():  # ptwt's sparse-tensor construction warns about beta CSR support
            warnings.simplefilter("ignore", UserWarning)
            return construct_boundary_a(wavelet, length, dtype=torch.float64).to_dense()
    import pywt

    eye = np.eye(length)
    columns = [np.concatenate(pywt.dwt(eye[i], wavelet, mode="periodization")) for i in range(length)]
    return torch.from_numpy(np.stack(columns, axis=1))


@functools.lru_cache(maxsize=128)
def _analysis(wavelet: str, length: int, boundary: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _analysis_cpu(wavelet, length, boundary).to(dtype=dtype, device=device)


def _check_wavelet(wavelet: str, method: str):
    import pywt

    try:
        w = pywt.Wavelet(wavelet)
    except (ValueError, TypeError):
        raise ValueError(f"{method}: unknown wavelet {wavelet!r}; use an orthogonal discrete wavelet such as "
                         f"'haar', 'db4' or 'sym8' (pywt.wavelist(kind='discrete'))") from None
    if not w.orthogonal:
        raise ValueError(f"{method}: wavelet {wavelet!r} is not orthogonal; the prox of the l1 norm needs an "
                         f"orthonormal transform (use e.g. 'db4', 'sym8', 'coif2' or 'haar')")
    return w


def default_level(shape: tuple[int, int], wavelet: str) -> int:
    """As deep as the image allows: PyWavelets' ``dwt_max_level`` of the smaller side (as SigPy uses), >= 1."""
    import pywt

    w = _check_wavelet(wavelet, "wavelet")
    return max(1, pywt.dwt_max_level(min(shape), w.dec_len))


class OrthoWavelet2D:
    """An orthonormal multi-level 2-D wavelet transform of the last two axes, on a padded grid.

    The image ``(H, W)`` is zero-padded (centred) to ``(Hp, Wp)``, the next multiples of
    ``2 ** level``, so every level halves an even size; each level applies an orthogonal 1-D
    analysis matrix (``boundary``: PyWavelets' periodised transform by default, or ptwt's
    boundary wavelets, see ``_analysis_cpu``) along the rows and the columns of the current
    approximation block. The coefficients are kept in one ``(..., Hp, Wp)`` array in the Mallat
    layout (the coarsest approximation top-left), so ``inverse(forward(z)) = z`` and
    ``||forward(z)|| = ||z||`` to rounding: a square orthogonal transform, no redundant padding
    coefficients (which ptwt's and PyWavelets' padding modes add, so that ``W^T soft(W z)``
    would not be the exact prox). Dense matmuls, a few per level, on whatever device the input
    is on (GPU included). Immutable after construction, so thread-safe.
    """

    def __init__(self, shape: tuple[int, int], wavelet: str = "db4", level: int | None = None,
                 boundary: str = "periodization"):
        h, w = (int(s) for s in shape)
        if h < 1 or w < 1:
            raise ValueError(f"wavelet: image shape must be positive, got {shape}")
        _check_wavelet(wavelet, "wavelet")
        if boundary not in BOUNDARIES:
            raise ValueError(f"wavelet: boundary must be one of {BOUNDARIES}, got {boundary!r}")
        level = default_level((h, w), wavelet) if level is None else int(level)
        if level < 1:
            raise ValueError(f"wavelet: level must be >= 1, got {level}")
        if 2**level > max(2, min(h, w)):
            raise ValueError(f"wavelet: level {level} is too deep for an image of {h} x {w} "
                             f"(2**level must not exceed the smaller side, {min(h, w)})")
        block = 2**level
        self.shape = (h, w)
        self.wavelet = wavelet
        self.boundary = boundary
        self.level = level
        self.padded = (-(-h // block) * block, -(-w // block) * block)
        self.offset = ((self.padded[0] - h) // 2, (self.padded[1] - w) // 2)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the last two axes from ``(H, W)`` to ``(Hp, Wp)``, the image centred."""
        (h, w), (hp, wp), (top, left) = self.shape, self.padded, self.offset
        if (h, w) == (hp, wp):
            return x
        return torch.nn.functional.pad(x, (left, wp - w - left, top, hp - h - top))

    def crop(self, z: torch.Tensor) -> torch.Tensor:
        """The adjoint (and left inverse) of ``pad``."""
        (h, w), (top, left) = self.shape, self.offset
        return z[..., top:top + h, left:left + w]

    def _matrices(self, like: torch.Tensor):
        hp, wp = self.padded
        return [(_analysis(self.wavelet, hp >> lv, self.boundary, like.dtype, like.device),
                 _analysis(self.wavelet, wp >> lv, self.boundary, like.dtype, like.device)) for lv in range(self.level)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Coefficients of a padded image ``(..., Hp, Wp)``, same shape."""
        out = z.clone()
        for a_h, a_w in self._matrices(z):
            h, w = a_h.shape[0], a_w.shape[0]
            out[..., :h, :w] = a_h @ out[..., :h, :w] @ a_w.mT
        return out

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """The padded image of coefficients ``(..., Hp, Wp)`` (the transpose of ``forward``)."""
        out = c.clone()
        for a_h, a_w in reversed(self._matrices(c)):
            h, w = a_h.shape[0], a_w.shape[0]
            out[..., :h, :w] = a_h.mT @ out[..., :h, :w] @ a_w
        return out


def _soft_threshold(c: torch.Tensor, threshold: torch.Tensor, complex_channels: bool) -> torch.Tensor:
    """Shrink coefficient moduli by ``threshold`` (per batch item); complex: the two channels jointly."""
    if complex_channels:  # c: (B, 2, Hp, Wp), channel 0 real, 1 imaginary
        size = torch.sqrt(c[:, 0] ** 2 + c[:, 1] ** 2).unsqueeze(1)
    else:
        size = c.abs()
    t = expand_to(threshold, c)
    scale = torch.clamp(1.0 - t / torch.clamp(size, min=torch.finfo(c.dtype).tiny), min=0.0)
    return c * scale


def _l1(c: torch.Tensor, complex_channels: bool) -> torch.Tensor:
    if complex_channels:
        return torch.sqrt(c[:, 0] ** 2 + c[:, 1] ** 2).flatten(1).sum(1)
    return c.abs().flatten(1).sum(1)


class L1WaveletCS(Sampler):
    """L1-wavelet compressed sensing: ``min_x 0.5 ||A x - y||^2 + lam_abs ||W x||_1`` by FISTA.

    The sparsity-promoting reconstruction of Lustig, Donoho & Pauly (2007, "Sparse MRI: the
    application of compressed sensing for rapid MR imaging", MRM 58:1182), solved with the fast
    iterative shrinkage-thresholding algorithm of Beck & Teboulle (2009, SIAM J. Imaging Sci.
    2:183): a gradient step on the data term with step ``1 / ||A||^2`` (``operator.norm()``),
    the prox of the l1 term ``W^T soft(W z)`` (exact, ``W`` being orthonormal), then Nesterov
    momentum. ``W`` (``OrthoWavelet2D``) is an orthonormal 2-D wavelet transform applied to the
    real and imaginary channels alike; the l1 norm is that of the complex coefficients, so the
    soft threshold shrinks their modulus (both channels jointly, the phase kept). Every
    coefficient is thresholded, the coarse approximation included (as in Lustig's code and
    SigPy's ``L1WaveletRecon``).

    Any ``H x W`` works: the problem is solved on a grid zero-padded (centred) to multiples of
    ``2 ** level``, ``min_z 0.5 ||A crop(z) - y||^2 + lam_abs ||W z||_1``, the border left to the
    regulariser (it starts at zero and the data never see it), and the image cropped back;
    without padding this is the problem above. Pixels the operator does not see at all (a zero
    column of ``A``: outside the support of cropped ESPIRiT maps, say) are free in the same way:
    the regulariser extends the object smoothly into them, which the data can neither confirm
    nor correct, so with ``zero_unseen`` (default) they are set to 0 in the result, as
    zero-filled and CG-SENSE (which never leave ``range(A^H)``) have them. Equivalently the
    regulariser is the l1 norm of the best extension of ``x`` beyond what is seen. They are found
    by one probe, ``A^H A v`` for a fixed random ``v``, exactly zero only there.

    - ``lam`` (default 0.001) and ``reference`` (default "peak"): the soft threshold applied to
      the wavelet coefficients' moduli at each FISTA step is ``lam_img = lam * r_b``, in the units
      of the image, with ``r_b`` per slice:

      - "peak": the peak magnitude of the zero-filled image, ``max |A^H y| / ||A||^2`` (with
        normalised maps and the centre of k-space sampled, about 0.5-0.6 of the true image's
        peak at 4x, since the zero-filled image lacks the unsampled energy). ``lam`` is then a
        fraction (0.001 = 0.1 % of that peak) and the data's scale, scanner units, does not
        matter. 0.001 suits well-conditioned, high-SNR data (16 coils, 4x-8x: best 0.0005 on
        the Chiew brain, see benchmarks/mri_baselines.py); noisier data want 0.002-0.005.
      - "noise": ``noise_sigma / ||A||`` (``noise_sigma`` passed to ``sample``: the std of the
        real and of the imaginary part of one k-space sample), the std of the noise in one
        channel of the combined image, so ``lam`` is in noise standard deviations (the natural
        scale for a threshold: the moduli of pure-noise coefficients are about ``1.25 sigma``).
      - "absolute": ``r_b = 1``, ``lam`` in image units.

      The weight of ``||W x||_1`` in the objective is ``lam_abs = lam_img * ||A||^2``
      (``weight()``), which is SigPy's ``lamda`` in ``L1WaveletRecon`` (the same objective):
      with maps normalised to ``sum_c |S_c|^2 = 1`` and the k-space centre sampled,
      ``||A|| = 1`` and ``lamda = lam_img``. ``lam = 0`` gives least squares (the CG-SENSE
      solution, reached more slowly).
    - ``wavelet`` (default "db4"): an orthogonal PyWavelets wavelet; ``level``: decomposition
      levels, default (None) as deep as the image allows, ``pywt.dwt_max_level`` of the smaller
      side as SigPy does (3 for 96 x 96, 4 for 230 x 180, 5 for 256 x 256); ``boundary``:
      "periodization" (default, PyWavelets' periodised transform) or "boundary" (ptwt's
      orthogonal boundary wavelets), see ``OrthoWavelet2D``.
    - ``max_iter`` (default 100), ``tol`` (default 1e-4): stop a slice when the relative change
      of its iterate ``||z_k - z_{k-1}|| / ||z_k||`` falls below ``tol`` (checked after 10
      iterations); ``tol = 0`` runs ``max_iter`` iterations.
    - ``zero_unseen`` (default True): zero the pixels no measurement sees (above); False returns
      the regulariser's extension there (what SigPy's ``L1WaveletRecon`` returns).

    The result's ``steps`` are the FISTA iterations of the slowest slice (the progress ``total``
    is ``max_iter``); there is no inner solver (``iterations = 0``, ``residual = 0``).
    ``nfe = 1 + 2 * steps``, plus 2 for the probe with ``zero_unseen`` (``A^H y`` once, one
    ``A^H A`` per iteration counted as two; the cached ``||A||`` is not counted).
    """

    name = "cs"
    deterministic = True

    REFERENCES = ("peak", "noise", "absolute")

    def __init__(self, lam: float = 0.001, wavelet: str = "db4", level: int | None = None,
                 boundary: str = "periodization", max_iter: int = 100, tol: float = 1e-4, reference: str = "peak",
                 zero_unseen: bool = True):
        super().__init__()
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"cs: lam must be a finite number >= 0, got {lam}")
        _check_wavelet(wavelet, "cs")
        if level is not None and (int(level) != level or int(level) < 1):
            raise ValueError(f"cs: level must be an integer >= 1 or None (as deep as the image allows), got {level}")
        if boundary not in BOUNDARIES:
            raise ValueError(f"cs: boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if int(max_iter) != max_iter or int(max_iter) < 1:
            raise ValueError(f"cs: max_iter must be an integer >= 1, got {max_iter}")
        if not (tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"cs: tol must be >= 0, got {tol}")
        if reference not in self.REFERENCES:
            raise ValueError(f"cs: reference must be one of {self.REFERENCES}, got {reference!r}")
        self.lam = float(lam)
        self.wavelet = str(wavelet)
        self.level = None if level is None else int(level)
        self.boundary = boundary
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.reference = reference
        self.zero_unseen = bool(zero_unseen)

    def params(self) -> dict:
        return {"lam": self.lam, "wavelet": self.wavelet, "level": self.level, "boundary": self.boundary,
                "max_iter": self.max_iter, "tol": self.tol, "reference": self.reference,
                "zero_unseen": self.zero_unseen}

    # ------------------------------------------------------------------ pieces, public for tests and benchmarks
    def layout(self, operator) -> tuple[bool, tuple[int, int]]:
        """``(complex_channels, (H, W))`` from the operator's ``in_shape``: ``(2, H, W)`` or ``(H, W)``."""
        shape = tuple(operator.in_shape)
        if len(shape) == 3 and shape[0] == 2:
            return True, (shape[1], shape[2])
        if len(shape) == 2:
            return False, (shape[0], shape[1])
        raise ValueError(f"cs: the operator's in_shape is {shape}; expected a complex image as real channels "
                         f"(2, H, W) or a real image (H, W)")

    def transform(self, operator) -> OrthoWavelet2D:
        shape = self.layout(operator)[1]
        try:
            return OrthoWavelet2D(shape, self.wavelet, self.level, self.boundary)
        except ValueError as exc:
            raise ValueError(f"cs: {exc}") from None

    def threshold(self, back: torch.Tensor, operator, noise_sigma=None) -> torch.Tensor:
        """The per-slice soft threshold in image units, ``lam_img``, ``(B,)``, from ``back = A^H y``."""
        lipschitz = operator.norm() ** 2
        if self.reference == "absolute":
            return torch.full((back.shape[0],), self.lam, dtype=back.dtype, device=back.device)
        if self.reference == "noise":
            if noise_sigma is None:
                raise ValueError("cs: reference='noise' needs noise_sigma (the k-space noise std, float or (B,))")
            sigma = per_slice_sigma(noise_sigma, back.shape[0], back, self.name)
            return self.lam * sigma / math.sqrt(lipschitz if lipschitz > 0 else 1.0)
        complex_channels, _ = self.layout(operator)
        size = torch.sqrt((back**2).sum(1)) if complex_channels else back.abs()
        peak = size.flatten(1).amax(1) / (lipschitz if lipschitz > 0 else 1.0)
        return self.lam * peak

    def weight(self, y: torch.Tensor, operator, noise_sigma=None) -> torch.Tensor:
        """The absolute weight ``lam_abs`` of ``||W x||_1`` in the objective, per slice ``(B,)`` (SigPy's ``lamda``)."""
        y = check_measurement(y, operator, self.name)
        with torch.no_grad():
            return self.threshold(operator.adjoint(y), operator, noise_sigma) * operator.norm() ** 2

    def seen(self, operator, like: torch.Tensor, normal=None) -> torch.Tensor:
        """Pixels some measurement sees, ``(B, 1, H, W)`` (complex) or ``(B, H, W)`` (real), bool.

        ``A^H A v != 0`` for one fixed random image ``v`` (the same for every slice, so a slice's
        answer does not depend on its batch): a pixel whose column of ``A`` is zero gives exactly
        0, any other a non-zero value with probability one.
        """
        complex_channels, _ = self.layout(operator)
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn((1, *operator.in_shape), generator=gen, dtype=torch.float64).to(like.dtype).to(like.device)
        v = v.expand(like.shape[0], *operator.in_shape).contiguous()
        out = (normal or _normal(operator))(v) != 0
        return out.any(dim=1, keepdim=True) if complex_channels else out

    def objective(self, x: torch.Tensor, y: torch.Tensor, operator, noise_sigma=None) -> torch.Tensor:
        """``0.5 ||A x - y||^2 + lam_abs ||W pad(x)||_1`` per slice, ``(B,)`` (the zero-padded border)."""
        complex_channels, _ = self.layout(operator)
        wav = self.transform(operator)
        with torch.no_grad():
            r = operator.forward(x) - y
            l1 = _l1(wav.forward(wav.pad(x)), complex_channels)
            return 0.5 * batch_dot(r, r) + self.weight(y, operator, noise_sigma) * l1

    # ------------------------------------------------------------------ the solve
    @torch.no_grad()
    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        y = check_measurement(y, operator, self.name)
        complex_channels, _ = self.layout(operator)
        wav = self.transform(operator)
        lipschitz = operator.norm() ** 2
        if not lipschitz > 0:
            raise ValueError(f"cs: the operator's norm is {math.sqrt(max(lipschitz, 0.0))}; nothing is measured")
        normal = _normal(operator)
        tally = Tally(callback, total=self.max_iter, nfe=1)
        back = operator.adjoint(y)
        threshold = self.threshold(back, operator, noise_sigma)  # lam_abs / ||A||^2: the step's soft threshold
        shrink = bool((threshold > 0).any())

        batch = y.shape[0]
        z = torch.zeros((*back.shape[:-2], *wav.padded), dtype=back.dtype, device=back.device)
        v = z.clone()
        t = 1.0
        active = torch.ones(batch, dtype=torch.bool, device=y.device)
        tiny = torch.finfo(z.dtype).tiny
        while bool(active.any()) and tally.steps < self.max_iter:
            grad = wav.pad(normal(wav.crop(v)) - back)
            tally.nfe += 2
            u = v - grad / lipschitz
            z_new = wav.inverse(_soft_threshold(wav.forward(u), threshold, complex_channels)) if shrink else u
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            v_new = z_new + ((t - 1.0) / t_new) * (z_new - z)
            change = torch.sqrt(batch_dot(z_new - z, z_new - z))
            scale = torch.sqrt(batch_dot(z_new, z_new))
            keep = expand_to(active, z)
            z = torch.where(keep, z_new, z)
            v = torch.where(keep, v_new, v)
            t = t_new
            tally.step()
            if self.tol > 0 and tally.steps > 10:
                active = active & ~(change <= self.tol * torch.clamp(scale, min=tiny))
        x = wav.crop(z)
        if self.zero_unseen:
            x = x * self.seen(operator, back, normal)
            tally.nfe += 2
        return tally.result(x.unsqueeze(0))
