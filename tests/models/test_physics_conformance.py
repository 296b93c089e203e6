"""Every operator in models.physics passes the shared conformance suite, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inversa.models.physics import conformance
from inversa.models.physics.base import Gradient2D, Identity, LinearOperator, MatrixOperator
from inversa.models.physics.mri import SenseOperator
from inversa.models.physics.tomography import CTGeometry, FanBeam2D, ParallelBeam2D

_MATRIX = torch.randn(35, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

# Small instances: the norm check forms the dense matrix. Angles deliberately not symmetric and
# a detector offset, so an error in one quadrant of the ray geometry cannot hide.
_ANGLES = np.linspace(0.0, np.pi, 13, endpoint=False) + 0.2
_PARALLEL = CTGeometry.parallel(_ANGLES, n_det=23, det_spacing=0.8, det_offset=0.3, image_size=16, pixel_size=1.0)
_FAN = CTGeometry.fan(np.linspace(0.0, 2 * np.pi, 11, endpoint=False) + 0.1, n_det=25, det_spacing=1.1,
                      source_origin=40.0, origin_detector=20.0, det_offset=-0.5, image_size=14, pixel_size=1.0)

REGISTRY = {
    "matrix": lambda: MatrixOperator(_MATRIX, in_shape=(3, 4), out_shape=(5, 7)),
    "identity": lambda: Identity((4, 3)),
    "gradient2d": lambda: Gradient2D((6, 5), spacing=0.5),
    "parallel_beam": lambda: ParallelBeam2D(_PARALLEL),
    "fan_beam": lambda: FanBeam2D(_FAN),
    # Streaming blocks rebuilt per call: the uncached path must be the same operator.
    "fan_beam_uncached": lambda: FanBeam2D(_FAN, max_cached_nnz=0, block_nnz=1500),
    # SENSE (real view). S = 2 slices, 3 coils, odd x even grid, a random mask per slice; a batch
    # item is the whole region (stack_slices) so that every item is the same operator, as the
    # suite assumes (the flat layout uses maps[n % S]; tests/models/test_physics_mri.py covers it).
    "sense_multicoil": lambda: SenseOperator(
        torch.randn(2, 3, 6, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(5)),
        torch.rand(2, 6, 5, generator=torch.Generator().manual_seed(6)) < 0.5, stack_slices=True, coil_chunk=2),
    "sense_single_coil": lambda: SenseOperator.single_coil(
        (7, 6), torch.rand(7, 6, generator=torch.Generator().manual_seed(7)) < 0.4, dtype=torch.float64),
    # Fully sampled: norm() is the exact value, not a power iteration.
    "sense_fully_sampled": lambda: SenseOperator(
        torch.randn(1, 4, 5, 7, dtype=torch.complex128, generator=torch.Generator().manual_seed(8))),
}


def _factory(name):
    return lambda dtype, device: REGISTRY[name]().to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("check", sorted(conformance.CHECKS))
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_conformance(name, check, dtype):
    conformance.CHECKS[check](_factory(name), dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_cpu_gpu_agreement(name):
    conformance.check_cpu_gpu_agreement(_factory(name))


class _WrongAdjoint(LinearOperator):
    """A dense operator whose adjoint is off by a small perturbation: the suite must catch it."""

    def __init__(self, scale: float):
        super().__init__(12, 35)
        self.a = _MATRIX
        self.b = _MATRIX + scale * torch.randn(35, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def _forward(self, x):
        return x @ self.a.to(x).T

    def _adjoint(self, y):
        return y @ self.b.to(y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_dot_product_test_catches_a_wrong_adjoint(dtype):
    scale = 1e-2 if dtype == torch.float32 else 1e-4
    with pytest.raises(AssertionError, match="dot-product"):
        conformance.check_adjoint(lambda dt, dev: _WrongAdjoint(scale).to(dtype=dt), dtype=dtype)


def test_uncached_blocks_match_cached_matrix():
    x = torch.rand(2, 14, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cached = FanBeam2D(_FAN).double()
    streamed = FanBeam2D(_FAN, max_cached_nnz=2500, block_nnz=1500).double()
    assert 0 < streamed.cached_nnz(torch.float64) < cached.cached_nnz(torch.float64)
    torch.testing.assert_close(streamed(x), cached(x), rtol=1e-12, atol=1e-12)
    y = cached(x)
    torch.testing.assert_close(streamed.adjoint(y), cached.adjoint(y), rtol=1e-12, atol=1e-12)


def test_norm_is_cached_per_dtype():
    op = Gradient2D((6, 5))
    assert op.norm() == pytest.approx(op.double().norm(), rel=1e-4)
    assert set(op._norm_cache) == {(torch.float32, torch.device("cpu")), (torch.float64, torch.device("cpu"))}
