"""Pure helpers of posterior streaming (models/streaming.py, models/uq.py): batch size from memory, interval width, per-item seeding."""

import numpy as np
import pytest
import torch

from inversa.models.streaming import choose_batch, sample_generators
from inversa.models.uq import gaussian_interval, interval_z


def test_choose_batch_fills_the_headroom_and_respects_the_limits():
    gib = 2**30
    assert choose_batch(10 * gib, gib, limit=100) == 8  # 80 % of 10 GiB in 1 GiB items
    assert choose_batch(10 * gib, gib, limit=5) == 5
    assert choose_batch(10 * gib, gib, limit=100, headroom=0.5) == 5
    assert choose_batch(0.5 * gib, gib, limit=100) == 1  # one item always runs (it was measured to fit)
    assert choose_batch(-1, gib, limit=3) == 1
    with pytest.raises(ValueError, match="bytes_per_item"):
        choose_batch(gib, 0, limit=4)
    with pytest.raises(ValueError, match="limit"):
        choose_batch(gib, 1, limit=0)


def test_gaussian_interval_holds_the_credible_level_of_a_normal():
    assert interval_z(0.9) == pytest.approx(1.6448536, rel=1e-6)
    rng = np.random.default_rng(0)
    draws = rng.normal(2.0, 0.5, size=200_000)
    lo, hi = gaussian_interval(np.float32(2.0), np.float32(0.5), 0.9)
    assert np.mean((draws >= lo) & (draws <= hi)) == pytest.approx(0.9, abs=0.005)
    lo2, hi2 = gaussian_interval(np.float32(2.0), np.float32(0.5), 0.9, scale=2.0)
    assert (hi2 - 2.0) == pytest.approx(2 * (hi - 2.0), rel=1e-6)
    with pytest.raises(ValueError, match="credible_level"):
        interval_z(1.0)


def test_each_slice_and_sample_has_its_own_stream_whatever_the_batch():
    together = sample_generators(5, range(3, 5), range(0, 2))  # sample-major: (0,3) (0,4) (1,3) (1,4)
    alone = sample_generators(5, range(4, 5), range(1, 2))
    a = torch.randn(4, generator=together[3])
    b = torch.randn(4, generator=alone[0])
    assert torch.equal(a, b)
    draws = [torch.randn(4, generator=g) for g in sample_generators(5, range(3, 5), range(0, 2))]
    assert len({tuple(d.tolist()) for d in draws}) == 4
    other_seed = torch.randn(4, generator=sample_generators((5, 1), range(4, 5), range(1, 2))[0])
    assert not torch.equal(other_seed, b)
