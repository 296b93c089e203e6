import numpy as np
import pytest
import torch

from inversa.models import uq



def _skimage(module: str):
    """scikit-image, for the tests that compare against it (the others need only numpy)."""
    return pytest.importorskip(f"skimage.{module}")


def test_welford_matches_numpy_in_batches_and_merged():
    rng = np.random.default_rng(1)
    samples = rng.normal(3.0, 2.0, size=(37, 2, 5, 4))
    w = uq.Welford()
    for chunk in np.array_split(samples, [5, 6, 20]):
        w.update(chunk)
    np.testing.assert_allclose(w.mean, samples.mean(0), rtol=1e-12)
    np.testing.assert_allclose(w.variance, samples.var(0, ddof=1), rtol=1e-10)
    a, b = uq.Welford().update(samples[:10]), uq.Welford().update(torch.tensor(samples[10:]))
    merged = a.merge(b)
    assert merged.count == 37
    np.testing.assert_allclose(merged.variance, samples.var(0, ddof=1), rtol=1e-10)
    assert np.isnan(uq.Welford().update(samples[:1]).variance).all()


def test_quantiles_and_credible_interval():
    samples = np.arange(101, dtype=float)[:, None] * np.ones((1, 3))
    q = uq.quantiles(samples, [0.1, 0.5])
    np.testing.assert_allclose(q, [[10, 10, 10], [50, 50, 50]])
    lo, hi = uq.credible_interval(samples, 0.9)
    np.testing.assert_allclose(lo, 5)
    np.testing.assert_allclose(hi, 95)
    with pytest.raises(ValueError, match="level"):
        uq.credible_interval(samples, 1.5)


def test_coverage_of_gaussian_intervals_is_the_level():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(200, 200))
    samples = rng.normal(size=(400, 200, 200))  # posterior = prior, so truth is a draw from it
    lo, hi = uq.credible_interval(samples, 0.8)
    assert uq.coverage(lo, hi, truth) == pytest.approx(0.8, abs=0.01)
    mask = np.zeros_like(truth, dtype=bool)
    mask[:10] = True
    assert uq.coverage(lo, hi, truth, mask) == pytest.approx(np.mean((lo <= truth) & (truth <= hi), where=mask))
    assert uq.coverage(lo, hi, lo - 1) == 0.0


def test_crps_of_a_standard_normal_ensemble():
    from scipy.stats import norm

    # An evenly spread "ensemble" (normal quantiles) keeps Monte Carlo noise out of the check.
    n = 4000
    samples = norm.ppf((np.arange(n) + 0.5) / n)[:, None] * np.ones((1, 3))
    truth = np.array([0.0, 1.0, -2.0])
    # Closed form for N(0, 1): t(2 Phi(t) - 1) + 2 phi(t) - 1/sqrt(pi).

    exact = truth * (2 * norm.cdf(truth) - 1) + 2 * norm.pdf(truth) - 1 / np.sqrt(np.pi)
    np.testing.assert_allclose(uq.crps(samples, truth), exact, atol=2e-3)


def test_psnr_matches_scikit_image():
    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 0.05, size=(64, 64))
    x = ref + rng.normal(0, 0.002, size=ref.shape)
    expected = _skimage("metrics").peak_signal_noise_ratio(ref, x, data_range=0.05)
    assert uq.psnr(x, ref, data_range=0.05) == pytest.approx(expected, rel=1e-10)
    assert uq.psnr(ref, ref) == float("inf")


@pytest.mark.parametrize("data_range", [None, 2.0])
def test_ssim_matches_scikit_image(data_range):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:70, :90]
    ref = np.sin(xx / 7.0) * np.cos(yy / 11.0) + (xx > 40)
    x = ref + rng.normal(0, 0.3, size=ref.shape)
    dr = data_range if data_range is not None else ref.max() - ref.min()
    expected = _skimage("metrics").structural_similarity(
        x, ref, data_range=dr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert uq.ssim(x, ref, data_range=data_range) == pytest.approx(expected, abs=1e-4)
    assert uq.ssim(ref, ref) == pytest.approx(1.0)


def test_otsu_matches_scikit_image():
    rng = np.random.default_rng(6)
    img = np.concatenate([rng.normal(0.005, 0.003, 3000), rng.normal(0.03, 0.004, 1500)]).reshape(50, 90)
    assert uq.otsu_threshold(img) == pytest.approx(_skimage("filters").threshold_otsu(img), rel=1e-9)


def test_mcc_by_hand_and_the_otsu_score():
    seg = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)
    ref = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert uq.mcc(seg, ref) == pytest.approx(expected)
    assert uq.mcc(ref, ref) == 1.0
    assert uq.mcc(~ref, ref) == -1.0
    assert uq.mcc(np.zeros_like(ref), ref) == 0.0
    rng = np.random.default_rng(7)
    truth = np.zeros((40, 40), dtype=bool)
    truth[10:30, 5:25] = True
    recon = np.where(truth, 0.03, 0.0) + rng.normal(0, 0.002, truth.shape)
    assert uq.mcc_otsu(recon, truth) > 0.99
    assert uq.mcc_otsu(recon + rng.normal(0, 0.01, truth.shape), truth) < 0.95
