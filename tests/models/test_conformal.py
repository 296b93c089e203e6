"""Spatially adaptive conformal calibration: known miscalibrations, fixed band by band."""

from __future__ import annotations

import numpy as np
import pytest

from inversa.models.conformal import (NotCertifiable, calibrate_gaussian, conformal_interval_scale, coverage_by_band,
                                      risk_controlled_scale, sample_std_factor, scale_map)
from inversa.models.uq import gaussian_interval, interval_scores


def _pooled_order_statistic(scores, alpha):
    """Risk control with equal-sized units written the other way: pooled, the risk at ``lam`` is the
    count of scores above it over all pixels, so ``lam`` is one order statistic of the sorted pool."""
    n = scores.shape[0]
    flat = np.sort(scores.reshape(n, -1).ravel())
    allowed = int(np.floor(((n + 1) * alpha - 1) / n * flat.size + 1e-9))
    return 0.0 if allowed >= flat.size else float(flat[flat.size - 1 - allowed])


def _images(rng, n, wrong_low=0.5, wrong_high=3.0, size=24):
    """Truth around a zero mean whose claimed std is off by one factor in quiet pixels and by
    another in busy ones (the std-dependent miscalibration a single scale cannot fix)."""
    claimed = np.where(rng.random((n, size, size)) < 0.5, 0.2, 1.0)
    true_std = np.where(claimed < 0.5, claimed * wrong_low, claimed * wrong_high)
    truth = rng.normal(0.0, 1.0, claimed.shape) * true_std
    return np.zeros_like(claimed), claimed, truth


def test_equal_units_give_the_pooled_risk_control_scale():
    rng = np.random.default_rng(0)
    m, s, x = _images(rng, 20)
    lower, upper = gaussian_interval(m, s, 0.9)
    scores = interval_scores(m, lower, upper, x)
    pooled = _pooled_order_statistic(scores, 0.1)
    assert conformal_interval_scale(scores, 0.1) == pytest.approx(pooled, rel=1e-12)
    record = calibrate_gaussian(list(m), list(s), list(x), 0.9, 0.1, bands=1)
    assert record["scale"] == pytest.approx(pooled, rel=1e-5)


def test_bands_fix_what_one_scale_cannot_on_fresh_data():
    rng = np.random.default_rng(1)
    record = calibrate_gaussian(*(list(a) for a in _images(rng, 30)), credible_level=0.9, alpha=0.1, bands=2)
    low, high = record["bands"]
    assert low["scale"] < 1.0 < high["scale"]  # quiet pixels were too wide, busy ones too narrow
    assert low["scale"] == pytest.approx(0.5, rel=0.1) and high["scale"] == pytest.approx(3.0, rel=0.1)
    m, s, x = _images(rng, 30)  # fresh images
    banded = gaussian_interval(m, s, 0.9, scale_map(record, s))
    single = gaussian_interval(m, s, 0.9, record["scale"])
    per_band = coverage_by_band(record, m, s, *banded, x)
    assert all(0.87 <= band["coverage"] <= 0.95 for band in per_band)
    per_band_single = coverage_by_band(record, m, s, *single, x)
    assert min(b["coverage"] for b in per_band_single) < 0.8 or max(b["coverage"] for b in per_band_single) > 0.98


def test_record_reports_coverage_along_the_nominal_levels():
    rng = np.random.default_rng(2)
    record = calibrate_gaussian(*(list(a) for a in _images(rng, 20, 1.0, 1.0)), 0.9, 0.1, bands=3)
    curve = record["curve"]
    assert curve["levels"] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    np.testing.assert_allclose(curve["before"], curve["levels"], atol=0.02)  # honest already
    assert record["coverage_before"] == pytest.approx(curve["before"][4])
    assert sum(b["fraction"] for b in record["bands"]) == pytest.approx(1.0)


def test_fewer_draws_per_pair_carry_over_to_the_runs_sample_count():
    rng = np.random.default_rng(3)
    level, n_cal, n_run = 0.9, 4, 16

    def posterior_summary(count, images):
        truth = rng.normal(0.0, 1.0, (images, 16, 16))  # truth from the posterior N(0, 1)
        draws = rng.normal(0.0, 1.0, (count, images, 16, 16))
        return draws.mean(0), draws.std(0, ddof=1), truth

    m, s, x = posterior_summary(n_cal, 40)
    factor = sample_std_factor(n_cal, n_run, level)
    assert factor < 1.0  # a 4-draw std needs a wider factor than a 16-draw one
    record = calibrate_gaussian(list(m), list(s), list(x), level, 0.1, bands=1, factor=factor)
    m, s, x = posterior_summary(n_run, 40)
    lower, upper = gaussian_interval(m, s, level, scale_map(record, s))
    covered = float(np.mean((lower <= x) & (x <= upper)))
    assert 0.88 <= covered <= 0.94
    without = calibrate_gaussian(list(m[:0]) + list(posterior_summary(n_cal, 40)[0]),
                                 list(posterior_summary(n_cal, 40)[1]), list(posterior_summary(n_cal, 40)[2]),
                                 level, 0.1, bands=1)
    assert without["scale"] > record["scale"]


def test_too_few_units_cannot_certify_and_units_without_points_are_left_out():
    with pytest.raises(NotCertifiable, match="5 calibration units cannot certify alpha=0.1"):
        risk_controlled_scale([np.ones(3)] * 5 + [np.empty(0)] * 10, 0.1)
    assert risk_controlled_scale([np.zeros(4)] * 20, 0.1) == 0.0
    assert risk_controlled_scale([np.array([0.5, 2.0])] * 9, 0.1) == pytest.approx(2.0)
