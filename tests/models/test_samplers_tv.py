import numpy as np
import pytest
import torch

from inversa.models.physics.base import Gradient2D, MatrixOperator
from inversa.models.physics.conformance import dense_matrix
from inversa.models.physics.tomography import CTGeometry, ct_operator
from inversa.models.samplers import REGISTRY
from inversa.models.samplers.fbp import fbp_reconstruct
from inversa.models.samplers.tv import TV

N = 32


@pytest.fixture(scope="module")
def ct():
    g = CTGeometry.parallel(np.arange(40) * np.pi / 40, 48, 1.0, image_size=N, pixel_size=1.0)
    projector = ct_operator(g)
    # The same matrix, dense: thousands of iterations in well under a second.
    op = MatrixOperator(dense_matrix(projector, dtype=torch.float32), in_shape=(N, N), out_shape=projector.out_shape)
    c = np.arange(N) - (N - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = 0.03 * (xx**2 + yy**2 < 13**2) - 0.02 * ((xx - 4) ** 2 + (yy + 3) ** 2 < 4**2)
    x = torch.tensor(img, dtype=torch.float32)[None]
    clean = op(x)
    sigma = 0.02 * float(clean.max())
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return g, op, x, noisy, sigma


def objective(op, x, y, lam):
    grad = Gradient2D((N, N))
    tv = torch.linalg.vector_norm(grad(x), dim=1).flatten(1).sum(1)
    return 0.5 * ((op(x) - y) ** 2).flatten(1).sum(1) + lam * tv


def test_tv_beats_fbp_on_a_piecewise_constant_phantom(ct):
    g, op, x, y, sigma = ct
    s = TV()
    rec = s.sample(y, op, sigma).samples[0]
    err = float((rec - x).norm() / x.norm())
    fbp_err = float((fbp_reconstruct(y, g) - x).norm() / x.norm())
    assert err < 0.12 and err < 0.6 * fbp_err
    assert float(rec.min()) >= 0.0


def test_tv_minimises_its_objective(ct):
    g, op, x, y, sigma = ct
    s = TV(max_iter=300)
    rec = s.sample(y, op, sigma).samples[0]
    lam = s.weight(y, op, sigma)
    value = objective(op, rec, y, lam)
    # Lower than at the truth and at the (non-negative) FBP, which are feasible points.
    assert bool((value < objective(op, x, y, lam)).all())
    assert bool((value < objective(op, fbp_reconstruct(y, g).clamp(min=0), y, lam)).all())
    # And within 0.5 % of a much longer run.
    longer = TV(max_iter=3000, tol=0).sample(y, op, sigma).samples[0]
    assert bool((value <= 1.005 * objective(op, longer, y, lam)).all())


def test_slices_are_independent_of_their_batch(ct):
    g, op, x, y, sigma = ct
    other = y.flip(-1) * 0.5
    both = TV(max_iter=60).sample(torch.cat([other, y]), op, torch.tensor([sigma / 2, sigma])).samples[0]
    alone = TV(max_iter=60).sample(y, op, sigma).samples[0]
    torch.testing.assert_close(both[1], alone[0], rtol=1e-4, atol=1e-6)


def test_weight_follows_the_noise_and_is_estimated_when_missing(ct):
    g, op, x, y, sigma = ct
    s = TV(lam=2.0)
    w1, w2 = s.weight(y, op, sigma), s.weight(y, op, 2 * sigma)
    torch.testing.assert_close(w2, 2 * w1)
    estimated = s.weight(y, op, None)
    assert float(estimated[0] / w1[0]) == pytest.approx(1.0, rel=0.5)  # the estimate is rough on a 40 x 48 sinogram
    with pytest.raises(ValueError, match="lam"):
        TV(lam=-1)
    assert REGISTRY["tv"] is TV
