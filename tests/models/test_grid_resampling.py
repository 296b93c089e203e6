"""Bilinear resampling from a prior's working grid to the output grid (tasks.measurement)."""

import numpy as np
import pytest
import torch

from inversa.models.resampling import Grid, GridResampler, resampling_matrix


def _centres(n, p):
    return (np.arange(n) - (n - 1) / 2) * p


def test_equal_grids_are_the_identity_exactly():
    x = torch.randn(3, 16, 16)
    resampler = GridResampler(Grid(16, 4.75), Grid(16, 4.75))
    assert resampler.identity and resampler(x) is x
    w, inside = resampling_matrix(16, 4.75, 16, 4.75)
    np.testing.assert_allclose(w, np.eye(16), atol=1e-12)
    assert inside.all()


def test_linear_functions_are_reproduced_at_output_centres():
    # A plane a + b x + c y sampled at input centres comes back exactly at every output centre
    # inside the input's outermost centres (bilinear interpolation is exact for linear functions).
    n_in, p_in, n_out, p_out = 16, 4.75, 40, 1.7
    xi, xo = _centres(n_in, p_in), _centres(n_out, p_out)
    plane = 0.3 + 0.02 * xi[None, :] - 0.05 * xi[:, None]
    out = GridResampler(Grid(n_in, p_in), Grid(n_out, p_out))(torch.from_numpy(plane)[None])[0].numpy()
    want = 0.3 + 0.02 * xo[None, :] - 0.05 * xo[:, None]
    assert np.abs(xo).max() < np.abs(xi).max()  # all output centres lie between input centres
    np.testing.assert_allclose(out, want, atol=1e-10)


def test_outside_the_field_of_view_is_zero_and_the_edge_band_is_clamped():
    w, inside = resampling_matrix(8, 1.0, 4, 1.0)  # output centres +-3.5 mm, input view +-2 mm
    assert inside.tolist() == [False, False, True, True, True, True, False, False]
    assert (w[~inside] == 0).all()
    np.testing.assert_allclose(w.sum(axis=1)[inside], 1.0)
    # Output centre -1.5 mm sits on input centre 0 (-1.5 mm); one at -1.9 mm (half-pixel band) clamps to it.
    w2, inside2 = resampling_matrix(1, 1.0, 4, 1.0)
    assert w2[0].tolist() == [0.0, 0.5, 0.5, 0.0] and inside2.all()
    band, _ = resampling_matrix(2, 3.8, 4, 1.0)  # centres at -1.9 and +1.9 mm
    assert band[0].tolist() == [1.0, 0.0, 0.0, 0.0] and band[1].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_std_beyond_the_view_takes_the_nearest_in_view_value():
    resampler = GridResampler(Grid(4, 1.0), Grid(8, 1.0))
    std = np.zeros((1, 8, 8))
    std[0, 2:6, 2:6] = np.arange(16).reshape(4, 4) + 1.0
    out = resampler.extend_std(std)
    assert (out > 0).all()
    assert out[0, 0, 0] == std[0, 2, 2] and out[0, 7, 7] == std[0, 5, 5] and out[0, 0, 4] == std[0, 2, 4]
    np.testing.assert_array_equal(out[0, 2:6, 2:6], std[0, 2:6, 2:6])


def test_bad_grids_are_rejected():
    with pytest.raises(ValueError, match="pixel sizes > 0"):
        resampling_matrix(4, 0.0, 4, 1.0)
    with pytest.raises(ValueError, match="does not overlap"):
        GridResampler(Grid(4, 1.0), Grid(4, 10.0)).extend_std(np.ones((4, 4)))
