"""Filtered backprojection (FBP) for parallel beam and fan beam with a flat detector.

The weighted FBP of Kak & Slaney (Principles of Computerized Tomographic Imaging, ch. 3):
for fan beam the detector is rescaled to a virtual detector through the rotation axis, each
ray is pre-weighted by the cosine of its angle to the central ray, filtered by the same ramp
as parallel beam, and backprojected with the distance weight ``1 / U^2``. Geometry and signs
follow docs/conventions.md exactly, so FBP inverts the projectors of ``models.physics``.

Views are weighted by their own angular spacing, so unevenly spaced and limited-angle view
sets reconstruct with the right scale where they have data. The result is divided by the
average number of times a line is measured (``span / pi``, at least 1), which is exact for
scans over 180 or 360 degrees (a full 360-degree scan measures every line twice).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import Sampler, SampleResult, StepCallback, Tally, check_measurement

FILTERS = ("ram-lak", "hann")


def ramp_filter_response(n_det: int, spacing: float, filter_name: str = "ram-lak") -> torch.Tensor:
    """Frequency response of the ramp filter on a zero-padded length, as a real rfft half-spectrum.

    The kernel is the band-limited ramp sampled in the spatial domain (Kak & Slaney eq. 3.61),
    whose DFT has the right value at zero frequency; sampling ``|f|`` directly in frequency
    would leave a DC offset that shifts the whole image. Padding to at least ``2 * n_det``
    makes the circular convolution equal the linear one on the detector.
    """
    if filter_name not in FILTERS:
        raise ValueError(f"FBP filter {filter_name!r} is not known; expected one of {FILTERS}")
    length = max(64, 1 << math.ceil(math.log2(2 * n_det)))
    lags = np.fft.fftfreq(length, d=1.0 / length)  # 0, 1, ..., L/2-1, -L/2, ..., -1
    kernel = np.zeros(length)
    kernel[0] = 1.0 / (4.0 * spacing**2)
    odd = (lags.astype(int) % 2) == 1
    kernel[odd] = -1.0 / (np.pi * lags[odd] * spacing) ** 2
    response = spacing * np.real(np.fft.rfft(kernel))  # spacing: the convolution integral's ds
    if filter_name == "hann":
        freq = np.fft.rfftfreq(length)  # cycles per sample, 0 .. 1/2
        response = response * 0.5 * (1.0 + np.cos(2.0 * np.pi * freq))
    return torch.as_tensor(response)


def angular_weights(angles, period: float) -> np.ndarray:
    """Angular extent that each view stands for (midpoint rule on the sorted angles).

    If the views close a full ``period`` (2 pi, or pi for parallel beam), the gap from the
    last view back to the first counts as the wrap-around spacing, so a duplicated end view
    (0 and 360 degrees) shares one spacing instead of counting twice. Otherwise the end views
    take the spacing to their only neighbour, which is right for uniform limited-angle sets.
    """
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.size == 1:
        return np.array([np.pi])
    order = np.argsort(angles, kind="stable")
    srt = angles[order]
    gaps = np.diff(srt)
    span = srt[-1] - srt[0]
    largest = gaps.max()
    wrap = None
    for p in (period, 2.0 * np.pi) if period < 2.0 * np.pi else (period,):
        if -1e-9 <= p - span <= 1.5 * largest + 1e-12:
            wrap = max(p - span, 0.0)
            break
    left = np.concatenate([[wrap if wrap is not None else gaps[0]], gaps])
    right = np.concatenate([gaps, [wrap if wrap is not None else gaps[-1]]])
    weights = np.empty_like(angles)
    weights[order] = 0.5 * (left + right)
    return weights


def fbp_reconstruct(
    sinogram: torch.Tensor,
    geometry,
    filter_name: str = "ram-lak",
    views_per_chunk: int | None = None,
) -> torch.Tensor:
    """Reconstruct ``(B, H, W)`` images from ``(B, n_angles, n_det)`` sinograms.

    ``geometry`` is a ``CTGeometry`` (or anything with its attributes). Pixel-driven
    backprojection with linear interpolation on the detector, vectorised over all pixels and
    a chunk of views at once, and over the batch (every slice shares the interpolation indices).
    """
    g = geometry
    kind = g.kind
    if kind not in ("parallel", "fan"):
        raise ValueError(f"FBP: geometry.kind is {kind!r}; expected 'parallel' or 'fan'")
    angles = np.asarray(g.angles, dtype=np.float64).ravel()
    n_views, n_det = angles.size, int(g.n_det)
    if sinogram.ndim != 3 or tuple(sinogram.shape[1:]) != (n_views, n_det):
        raise ValueError(
            f"FBP: sinogram has shape {tuple(sinogram.shape)}; expected (batch, {n_views}, {n_det}) "
            f"from the geometry's angles and n_det"
        )
    d = float(g.det_spacing)
    offset = float(getattr(g, "det_offset", 0.0) or 0.0)
    size, pixel = int(g.image_size), float(g.pixel_size)
    device = sinogram.device
    work = torch.float64 if sinogram.dtype == torch.float64 else torch.float32
    batch = sinogram.shape[0]

    s_k = (np.arange(n_det) - (n_det - 1) / 2.0) * d + offset
    if kind == "fan":
        R, D = float(g.source_origin), float(g.origin_detector)
        if not (R > 0 and D > -R):
            raise ValueError(f"FBP: fan geometry needs source_origin > 0 and origin_detector > -source_origin, got {R}, {D}")
        magnification = (R + D) / R
        virtual = s_k / magnification
        cosine = R / np.sqrt(R**2 + virtual**2)
        tau = d / magnification
        data = sinogram.to(work) * torch.as_tensor(cosine, dtype=work, device=device)
        period = 2.0 * np.pi
    else:
        R = D = None
        tau = d
        data = sinogram.to(work)
        period = np.pi

    # Filter along the detector with zero padding.
    response = ramp_filter_response(n_det, tau, filter_name).to(device=device, dtype=work)
    length = 2 * (response.numel() - 1)
    spectrum = torch.fft.rfft(data, n=length, dim=-1) * response
    filtered = torch.fft.irfft(spectrum, n=length, dim=-1)[..., :n_det]

    weights = angular_weights(angles, period)
    redundancy = max(1.0, weights.sum() / np.pi)
    weights = weights / redundancy

    # Fold the view weights (and the constant R^2 of the fan distance weight) into the data.
    scale = torch.as_tensor(weights * (R**2 if kind == "fan" else 1.0), dtype=work, device=device)
    filtered = filtered * scale[:, None]
    # grid_sample layout: views as its batch, slices as its channels, so every slice shares one
    # interpolation grid; detector positions normalised so -1 and 1 are the end elements.
    views = filtered.permute(1, 0, 2).unsqueeze(2).contiguous()  # (V, B, 1, K)

    coords = (torch.arange(size, device=device, dtype=work) - (size - 1) / 2.0) * pixel
    to_grid = 2.0 / (d * max(n_det - 1, 1))
    cos_t = torch.as_tensor(np.cos(angles), dtype=work, device=device)
    sin_t = torch.as_tensor(np.sin(angles), dtype=work, device=device)
    n_pix = size * size
    if views_per_chunk is None:
        views_per_chunk = max(1, min(n_views, (1 << 20) // max(n_pix, 1)))

    image = torch.zeros(batch, n_pix, dtype=work, device=device)
    grid = torch.zeros(views_per_chunk, size, size, 2, dtype=work, device=device)
    for v0 in range(0, n_views, views_per_chunk):
        v1 = min(n_views, v0 + views_per_chunk)
        c, s = cos_t[v0:v1, None, None], sin_t[v0:v1, None, None]
        # X . u(theta) by separability: x_j cos + y_i sin, an outer sum over rows and columns.
        along = (coords * c) + (coords[:, None] * s)
        gx = grid[: v1 - v0, ..., 0]
        if kind == "fan":
            # 1 / (R + X . r(theta)): inverse source-to-pixel distance along the central ray.
            inv_depth = torch.reciprocal_((coords[:, None] * c) - (coords * s) + R)
            torch.mul(along, inv_depth, out=gx)
            gx.mul_((R + D) * to_grid)
        else:
            torch.mul(along, to_grid, out=gx)
        if offset:
            gx.sub_(offset * to_grid)
        sampled = torch.nn.functional.grid_sample(
            views[v0:v1], grid[: v1 - v0].view(v1 - v0, 1, n_pix, 2), mode="bilinear",
            padding_mode="zeros", align_corners=True,
        ).view(v1 - v0, batch, n_pix)
        if kind == "fan":
            image += torch.einsum("cbn,cn->bn", sampled, inv_depth.square_().view(v1 - v0, n_pix))
        else:
            image += sampled.sum(0)
    return image.reshape(batch, size, size).to(sinogram.dtype if sinogram.is_floating_point() else work)


class FBP(Sampler):
    """Filtered backprojection as a deterministic sampler.

    ``filter``: ``"ram-lak"`` (exact ramp; sharpest, noisiest) or ``"hann"`` (ramp times a
    Hann window; suppresses noise near the detector Nyquist frequency). The operator passed
    to ``sample`` must carry its ``geometry`` (a ``CTGeometry``): FBP is an analytic inverse
    of that geometry, not of an arbitrary matrix.
    """

    name = "fbp"
    deterministic = True
    uses_system_matrix = False

    def __init__(self, filter: str = "ram-lak", views_per_chunk: int | None = None):
        super().__init__()
        if filter not in FILTERS:
            raise ValueError(f"FBP: filter {filter!r} is not known; expected one of {FILTERS}")
        if views_per_chunk is not None and views_per_chunk < 1:
            raise ValueError(f"FBP: views_per_chunk must be >= 1, got {views_per_chunk}")
        self.filter = filter
        self.views_per_chunk = views_per_chunk

    def params(self) -> dict:
        return {"filter": self.filter}

    def sample(self, y, operator, noise_sigma=None, n: int = 1, generator=None,
               callback: StepCallback | None = None) -> SampleResult:
        geometry = getattr(operator, "geometry", None)
        if geometry is None:
            raise ValueError("FBP: the operator has no `geometry` attribute; FBP needs a CT projector built from a CTGeometry")
        if hasattr(operator, "out_shape"):
            check_measurement(y, operator, "FBP")
        image = fbp_reconstruct(y, geometry, self.filter, self.views_per_chunk)
        tally = Tally(callback, total=1, nfe=1)  # one backprojection, one step
        tally.step()
        return tally.result(image.unsqueeze(0))
