"""Spatially adaptive conformal calibration of Gaussian intervals ``mean +- z * scale * std``.

One global factor on the half-widths can fix a run's overall coverage but not where it misses:
a diffusion posterior is typically over-confident on edges and under-confident in flat
background, so a single scale widens the background to pay for the edges and the std still
does not point at the errors. Here the factor depends on the local std: pixels are grouped
into bands by their std (quantiles of the calibration set's std), and each band gets its own
conformal factor (Mondrian conformal risk control: the guarantee holds within each band). The
record says how each band covered before and after, and traces coverage at several nominal
levels so a calibration plot can show the whole curve.

Units are what exchangeability is assumed over: whole simulated images, tiles of them, or
spatial blocks of withheld field observations. Each unit's loss is the fraction of its
(band's) points outside the interval (``conformal_interval_scale`` below, with whole images as units).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from inversa.models.uq import interval_z

COVERAGE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DEFAULT_BANDS = 4


class NotCertifiable(ValueError):
    """Too few calibration units for the miscoverage asked for."""


def risk_controlled_scale(unit_scores: Sequence[np.ndarray], alpha: float) -> float:
    """The smallest ``lam`` with ``n/(n+1) * mean_i L_i(lam) + 1/(n+1) <= alpha``.

    ``L_i(lam)`` is the fraction of unit ``i``'s scores above ``lam`` (units without scores are
    left out). Scores are ``|x - m| / half-width`` (``inf`` where a zero-width interval misses).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    units = [np.sort(np.asarray(s, dtype=np.float64).ravel()) for s in unit_scores]
    units = [u[~np.isnan(u)] for u in units]
    units = [u for u in units if u.size]
    n = len(units)
    if n == 0 or 1.0 / (n + 1) > alpha:
        raise NotCertifiable(f"{n} calibration units cannot certify alpha={alpha:g}; "
                             f"need at least {int(np.ceil(1 / alpha - 1))}")
    budget = ((n + 1) * alpha - 1) / n + 1e-12
    sizes = np.array([u.size for u in units], dtype=np.float64)

    def risk(lam: float) -> float:
        above = np.array([u.size - np.searchsorted(u, lam, side="right") for u in units], dtype=np.float64)
        return float(np.mean(above / sizes))

    if risk(0.0) <= budget:
        return 0.0
    candidates = np.unique(np.concatenate(units))
    lo, hi = 0, candidates.size - 1  # risk(candidates[-1]) == 0 <= budget
    while lo < hi:
        mid = (lo + hi) // 2
        if risk(candidates[mid]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    lam = float(candidates[lo])
    if not np.isfinite(lam):
        raise ValueError("too many points have zero-width intervals and miss the truth; "
                         "no finite scale reaches the target coverage")
    return lam


def gaussian_scores(mean, std, truth, credible_level: float) -> np.ndarray:
    """``|truth - mean| / (z * std)``: a point is inside the interval scaled by ``lam`` iff its score <= lam."""
    m, s, x = (np.asarray(a, dtype=np.float64) for a in (mean, std, truth))
    dist = np.abs(x - m)
    half = interval_z(credible_level) * s
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(half > 0, dist / np.where(half > 0, half, 1.0), np.where(dist > 0, np.inf, 0.0))


def band_edges(std: np.ndarray, bands: int) -> np.ndarray:
    """Interior std edges splitting the points into ``bands`` groups of equal size (fewer when
    many stds are equal, e.g. a constant background). Band ``i`` holds stds in
    ``(edges[i-1], edges[i]]``, so a std tied at an edge stays in the band below it."""
    values = np.asarray(std, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if bands <= 1 or values.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(values, np.arange(1, bands) / bands))


def scale_map(record: dict[str, Any], std) -> np.ndarray | float:
    """Each point's interval factor under a calibration ``record`` (its band's, else the global one)."""
    bands = record.get("bands") or []
    if len(bands) <= 1:
        return float(record["scale"])
    edges = np.array([b["std_low"] for b in bands[1:]], dtype=np.float64)
    scales = np.array([b["scale"] for b in bands], dtype=np.float64)
    return scales[np.searchsorted(edges, np.asarray(std, dtype=np.float64), side="left")]


def sample_std_factor(calibration_samples: int, run_samples: int, credible_level: float) -> float:
    """What a factor found with stds of ``calibration_samples`` draws becomes for stds of
    ``run_samples`` draws, for a Gaussian posterior: the ratio of the predictive t quantiles
    ``t_{n-1} sqrt(1 + 1/n)``. Calibrating with fewer draws per pair makes calibration cheap;
    this keeps the factor meant for the run's own sample count."""
    if calibration_samples == run_samples:
        return 1.0
    if min(calibration_samples, run_samples) < 2:
        raise ValueError("a sample std needs at least 2 draws")
    q = (1.0 + credible_level) / 2.0

    def predictive(n: int) -> float:
        return float(student_t.ppf(q, n - 1) * np.sqrt(1.0 + 1.0 / n))

    return predictive(run_samples) / predictive(calibration_samples)


def _covered(scores: np.ndarray, lam) -> float:
    return float(np.mean(scores <= lam)) if scores.size else float("nan")


def calibrate_gaussian(means: Sequence[np.ndarray], stds: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                       credible_level: float, alpha: float, bands: int = DEFAULT_BANDS,
                       factor: float = 1.0, levels: Sequence[float] = COVERAGE_LEVELS) -> dict[str, Any]:
    """Band edges, per-band and global factors, and coverage before and after, from calibration units.

    Each argument is a sequence of units (arrays of any shape, one shape per unit across the three);
    points where any of them is not finite are left out. ``factor`` multiplies every factor found
    (``sample_std_factor`` when the calibration drew fewer samples than the run). A band with too
    few units to certify ``alpha`` on its own takes the global factor.
    """
    m, s, x = ([np.asarray(a, dtype=np.float64).ravel() for a in arrays] for arrays in (means, stds, truths))
    if not (len(m) == len(s) == len(x)) or any(a.size != b.size or a.size != c.size for a, b, c in zip(m, s, x)):
        raise ValueError("calibrate_gaussian: means, stds and truths must be units of matching sizes")
    ok = [np.isfinite(a) & np.isfinite(b) & np.isfinite(c) for a, b, c in zip(m, s, x)]
    m, s, x = ([a[k] for a, k in zip(arrays, ok)] for arrays in (m, s, x))
    scores = [gaussian_scores(a, b, c, credible_level) for a, b, c in zip(m, s, x)]
    everything = np.concatenate(scores) if scores else np.empty(0)
    if everything.size == 0:
        raise ValueError("calibrate_gaussian: no finite calibration points")
    scale = risk_controlled_scale(scores, alpha) * factor
    edges = band_edges(np.concatenate(s), bands)
    band_of = [np.searchsorted(edges, b, side="left") for b in s]
    all_bands = np.concatenate(band_of)
    records, scales = [], []
    for band in range(edges.size + 1):
        try:
            lam = risk_controlled_scale([sc[bo == band] for sc, bo in zip(scores, band_of)], alpha) * factor
        except NotCertifiable:
            lam = scale
        scales.append(lam)
        inside = everything[all_bands == band]
        records.append({
            "std_low": float(edges[band - 1]) if band > 0 else 0.0,
            "std_high": float(edges[band]) if band < edges.size else None,
            "scale": float(lam),
            "fraction": float(inside.size / everything.size),
            "coverage_before": _covered(inside, 1.0),
            "coverage_after": _covered(inside, lam),
        })
    per_point = np.asarray(scales)[all_bands]
    everything_std = np.concatenate(s)
    z = interval_z(credible_level)
    dist = np.abs(np.concatenate(x) - np.concatenate(m))
    curve = {"levels": [float(v) for v in levels], "before": [], "after": []}
    for level in levels:
        half = interval_z(level) * everything_std
        curve["before"].append(float(np.mean(dist <= half)))
        curve["after"].append(float(np.mean(dist <= half * per_point)))
    return {
        "scale": float(scale),
        "bands": records,
        "coverage_before": _covered(everything, 1.0),
        "coverage_after": float(np.mean(dist <= z * everything_std * per_point)),
        "curve": curve,
        "units": len(scores),
        "points": int(everything.size),
    }


def coverage_by_band(record: dict[str, Any], mean, std, lower, upper, truth) -> list[dict[str, Any]]:
    """Coverage of stored intervals against a reference in each of the record's std bands (evaluation)."""
    m, s, lo, hi, x = (np.asarray(a, dtype=np.float64).ravel() for a in (mean, std, lower, upper, truth))
    ok = np.isfinite(m) & np.isfinite(s) & np.isfinite(lo) & np.isfinite(hi) & np.isfinite(x)
    bands = record.get("bands") or [{"std_low": 0.0, "std_high": None}]
    edges = np.array([b["std_low"] for b in bands[1:]], dtype=np.float64)
    band_of = np.searchsorted(edges, s, side="left")
    inside = (lo <= x) & (x <= hi)
    out = []
    for i, b in enumerate(bands):
        sel = ok & (band_of == i)
        out.append({"std_low": b["std_low"], "std_high": b["std_high"], "fraction": float(sel.mean()),
                    "coverage": float(inside[sel].mean()) if sel.any() else float("nan")})
    return out


def conformal_interval_scale(scores, alpha: float = 0.1) -> float:
    """The smallest factor ``lam`` that keeps expected pixel miscoverage at or below ``alpha``,
    with whole images as the conformal units.

    Conformal risk control (Angelopoulos et al.; applied to diffusion posteriors by Teneggi et al.,
    "How to Trust Your Diffusion Model"): with ``n`` calibration images, loss ``L_i(lam)`` = the
    fraction of image ``i``'s pixels outside the interval scaled by ``lam``. ``scores``: ``(n, ...)``
    from ``models.uq.interval_scores``, one row per calibration image.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim < 2 or s.shape[0] < 1:
        raise ValueError(f"conformal_interval_scale: scores must be (n_images, ...) with n >= 1, got shape {s.shape}")
    lam = risk_controlled_scale(list(s.reshape(s.shape[0], -1)), alpha)
    if not np.isfinite(lam):
        raise ValueError("conformal_interval_scale: too many pixels have zero-width intervals and miss the truth; "
                         "no finite scale reaches the target coverage")
    return float(lam)
