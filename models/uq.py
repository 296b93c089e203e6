"""Uncertainty and image-quality metrics on NumPy arrays.

NumPy in, NumPy out: the pipeline computes these on arrays it has already moved to the CPU or
read back from the result store. Torch tensors are accepted too (converted through
``.detach().cpu().numpy()``) without importing torch here. scikit-image is not needed at run
time; ``ssim`` and ``otsu_threshold`` reproduce its definitions and are tested against it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.stats import norm


def _array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got an object array")
    return arr


class Welford:
    """Streaming per-pixel mean and variance over samples, in float64.

    Samples arrive in batches (the first axis is the sample axis), so a posterior with more
    samples than fit in memory is summarised without keeping them; two partial summaries can
    be merged (Chan et al.), e.g. from workers that drew different samples of one slice.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def update(self, samples) -> "Welford":
        batch = _array(samples, "Welford.update(samples)").astype(np.float64, copy=False)
        if batch.ndim < 1 or batch.shape[0] == 0:
            raise ValueError(f"Welford.update: expected samples of shape (n >= 1, ...), got {batch.shape}")
        other = Welford()
        other.count = batch.shape[0]
        other.mean = batch.mean(axis=0)
        other._m2 = ((batch - other.mean) ** 2).sum(axis=0)
        return self.merge(other)

    def merge(self, other: "Welford") -> "Welford":
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self._m2 = other.count, other.mean.copy(), other._m2.copy()
            return self
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"Welford.merge: shapes differ, {self.mean.shape} and {other.mean.shape}")
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self._m2 = self._m2 + other._m2 + delta**2 * (self.count * other.count / total)
        self.count = total
        return self

    @property
    def variance(self) -> np.ndarray:
        """Unbiased sample variance (divides by ``n - 1``); NaN with fewer than two samples."""
        if self.count == 0:
            raise ValueError("Welford.variance: no samples yet")
        if self.count < 2:
            return np.full_like(self.mean, np.nan)
        return self._m2 / (self.count - 1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.variance)


def quantiles(samples, levels) -> np.ndarray:
    """Per-pixel quantiles along the sample axis 0; returns ``(len(levels), ...)``."""
    arr = _array(samples, "quantiles(samples)")
    lv = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if np.any((lv < 0) | (lv > 1)):
        raise ValueError(f"quantiles: levels must lie in [0, 1], got {lv.tolist()}")
    return np.quantile(arr, lv, axis=0)


def credible_interval(samples, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed per-pixel credible interval holding ``level`` of the posterior mass."""
    if not 0 < level < 1:
        raise ValueError(f"credible_interval: level must lie in (0, 1), got {level}")
    lower, upper = quantiles(samples, [(1 - level) / 2, (1 + level) / 2])
    return lower, upper


def coverage(lower, upper, truth, mask=None) -> float:
    """Fraction of pixels (inside ``mask`` if given) whose true value lies in ``[lower, upper]``.

    For honest uncertainty it should be close to the credible level.
    """
    lo, hi, t = (_array(a, n) for a, n in ((lower, "lower"), (upper, "upper"), (truth, "truth")))
    if not (lo.shape == hi.shape == t.shape):
        raise ValueError(f"coverage: lower {lo.shape}, upper {hi.shape} and truth {t.shape} must have one shape")
    inside = (lo <= t) & (t <= hi)
    if mask is not None:
        m = _array(mask, "mask").astype(bool)
        if m.shape != t.shape:
            raise ValueError(f"coverage: mask has shape {m.shape}; expected {t.shape}")
        inside = inside[m]
    if inside.size == 0:
        raise ValueError("coverage: no pixels to count (empty mask)")
    return float(inside.mean())


def crps(samples, truth) -> np.ndarray:
    """Continuous ranked probability score per pixel from samples (lower is better).

    Energy form ``E|X - t| - 0.5 E|X - X'|``, computed from sorted samples in O(n log n).
    """
    xs = np.sort(_array(samples, "crps(samples)").astype(np.float64), axis=0)
    t = _array(truth, "crps(truth)").astype(np.float64)
    if xs.shape[1:] != t.shape:
        raise ValueError(f"crps: samples {xs.shape} do not match truth {t.shape} after the sample axis")
    n = xs.shape[0]
    first = np.abs(xs - t).mean(axis=0)
    ranks = (2 * np.arange(1, n + 1) - n - 1).reshape(-1, *([1] * t.ndim))
    spread = (ranks * xs).sum(axis=0) / n**2  # 0.5 * E|X - X'| over all ordered pairs
    return first - spread


def _range(ref: np.ndarray, data_range) -> float:
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range} (constant reference image?)")
    return float(data_range)


def psnr(x, ref, data_range=None) -> float:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the reference's max - min."""
    a, b = _array(x, "psnr(x)").astype(np.float64), _array(ref, "psnr(ref)").astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: x has shape {a.shape}, ref {b.shape}; expected one shape")
    rng = _range(b, data_range)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(rng**2 / mse))


def ssim(x, ref, data_range=None) -> float:
    """Mean structural similarity of two 2D images (Wang et al. 2004).

    Gaussian window of sigma 1.5 truncated at 3.5 sigma (11 x 11), population statistics,
    K1 = 0.01, K2 = 0.03, averaged over the image without a 5-pixel border: the same
    numbers as scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.
    """
    a, b = _array(x, "ssim(x)").astype(np.float64), _array(ref, "ssim(ref)").astype(np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim: expected two 2D images of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"ssim: images must be at least 11 x 11 for the 11 x 11 window, got {a.shape}")
    rng = _range(b, data_range)

    def blur(img):
        return gaussian_filter(img, sigma=1.5, truncate=3.5, mode="reflect")

    ux, uy = blur(a), blur(b)
    vx = blur(a * a) - ux * ux
    vy = blur(b * b) - uy * uy
    vxy = blur(a * b) - ux * uy
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = 5
    return float(s[pad:-pad, pad:-pad].mean())


def otsu_threshold(x, nbins: int = 256) -> float:
    """Otsu's threshold: the histogram split maximising the between-class variance.

    A 256-bin histogram over the image's range, the threshold reported at a bin centre
    (as scikit-image's ``threshold_otsu``); pixels ``> threshold`` are foreground.
    """
    arr = _array(x, "otsu_threshold(x)").astype(np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError("otsu_threshold: the image has no finite values")
    if arr.min() == arr.max():
        return float(arr.min())
    hist, edges = np.histogram(arr, bins=nbins)
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centres) / np.maximum(w1, 1e-300)
    m2 = (np.cumsum((hist * centres)[::-1]) / np.maximum(w2[::-1], 1e-300))[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def mcc(segmentation, reference) -> float:
    """Matthews correlation coefficient of two binary images (1 perfect, 0 chance, -1 inverted).

    Returns 0 when a margin is empty (e.g. everything predicted background), the usual limit.
    """
    s = _array(segmentation, "mcc(segmentation)").astype(bool)
    r = _array(reference, "mcc(reference)").astype(bool)
    if s.shape != r.shape:
        raise ValueError(f"mcc: segmentation has shape {s.shape}, reference {r.shape}; expected one shape")
    tp = float(np.sum(s & r))
    tn = float(np.sum(~s & ~r))
    fp = float(np.sum(s & ~r))
    fn = float(np.sum(~s & r))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)


def mcc_otsu(x, reference_segmentation) -> float:
    """The HTC2022 score: Otsu-segment the reconstruction, then MCC against the reference."""
    arr = _array(x, "mcc_otsu(x)")
    return mcc(arr > otsu_threshold(arr), reference_segmentation)


def interval_scores(mean, lower, upper, truth) -> np.ndarray:
    """How far each pixel's truth lies out along its interval: ``|x - m| / half-width`` on its side.

    A pixel is covered by the interval scaled by ``lam`` about the mean exactly when its score is
    ``<= lam``; zero-width sides score ``inf`` unless the truth equals the mean.
    """
    m, lo, hi, x = (_array(a, n) for a, n in ((mean, "mean"), (lower, "lower"), (upper, "upper"), (truth, "truth")))
    if not (m.shape == lo.shape == hi.shape == x.shape):
        raise ValueError(f"interval_scores: shapes differ: mean {m.shape}, lower {lo.shape}, upper {hi.shape}, truth {x.shape}")
    above = x > m
    width = np.where(above, hi - m, m - lo)
    dist = np.abs(x - m)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(width > 0, dist / np.where(width > 0, width, 1.0), np.where(dist > 0, np.inf, 0.0))
    return scores


def scale_interval(mean, lower, upper, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Widen (``lam > 1``) or narrow the interval about the mean by ``lam``."""
    m, lo, hi = (_array(a, n) for a, n in ((mean, "mean"), (lower, "lower"), (upper, "upper")))
    return m - lam * (m - lo), m + lam * (hi - m)


def interval_z(level: float) -> float:
    """Half-width, in standard deviations, of the central ``level`` interval of a normal."""
    if not 0 < level < 1:
        raise ValueError(f"credible_level must lie in (0, 1), got {level}")
    return float(norm.ppf((1.0 + level) / 2.0))


def gaussian_interval(mean, std, level: float, scale=1.0) -> tuple[np.ndarray, np.ndarray]:
    """``mean -+ z * scale * std`` as float32 (``scale``: a calibration factor, 1 without one, or
    one per pixel from a spatially adaptive calibration, ``models.conformal.scale_map``).

    Every stored interval of every problem kind is made here, so one rule holds throughout:
    exact for Gaussian posteriors, and made honest for the others by the calibration scale.
    """
    half = (interval_z(level) * np.asarray(scale, dtype=np.float64)) * np.asarray(std)
    mean = np.asarray(mean)
    return (mean - half).astype(np.float32), (mean + half).astype(np.float32)
