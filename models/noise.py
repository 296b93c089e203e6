"""Noise level of a measurement when the file does not state it.

Posterior widths scale with the noise level, so a wrong sigma gives wrong uncertainty. The
estimate uses second differences along the detector: a projection is smooth on the scale of
one detector cell while white noise is not, and the median absolute deviation ignores the
few edges where the projection itself jumps.
"""

from __future__ import annotations

import torch

_MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # MAD of a standard normal
_SECOND_DIFF_GAIN = 6.0 ** 0.5  # std of (e[k+1] - 2 e[k] + e[k-1]) for unit white noise


def estimate_noise_sigma(sinogram: torch.Tensor) -> torch.Tensor:
    """Per-slice noise standard deviation of `(B, n_angles, n_det)` sinograms, shape `(B,)`."""
    if sinogram.ndim != 3 or sinogram.shape[-1] < 3:
        raise ValueError(f"expected sinograms (B, n_angles, n_det >= 3), got {tuple(sinogram.shape)}")
    d2 = sinogram[..., 2:] - 2 * sinogram[..., 1:-1] + sinogram[..., :-2]
    flat = d2.reshape(d2.shape[0], -1)
    mad = (flat - flat.median(dim=1, keepdim=True).values).abs().median(dim=1).values
    return mad * _MAD_TO_SIGMA / _SECOND_DIFF_GAIN
