"""CT projectors against analytic line integrals, and the geometry object's checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inversa.models.physics.tomography import CTGeometry, FanBeam2D, ParallelBeam2D, Tomography2D, ct_operator


def disc_image(n: int, pixel: float, cx: float, cy: float, radius: float, supersample: int = 4) -> torch.Tensor:
    """A uniform disc (value 1) with pixel-area coverage, on the grid of docs/conventions.md."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    centres = np.arange(n) - (n - 1) / 2
    x = (centres[None, :, None, None] + offsets[None, None, None, :]) * pixel
    y = (centres[:, None, None, None] + offsets[None, None, :, None]) * pixel
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
    return torch.tensor(inside.mean(axis=(2, 3)), dtype=torch.float64)[None]


def detector_positions(g: CTGeometry) -> np.ndarray:
    return (np.arange(g.n_det) - (g.n_det - 1) / 2) * g.det_spacing + g.det_offset


def parallel_disc_sinogram(g: CTGeometry, cx: float, cy: float, radius: float) -> np.ndarray:
    """Chord of the disc on the line s u + t r: 2 sqrt(r^2 - (s - <c, u>)^2)."""
    s = detector_positions(g)[None, :]
    centre_on_detector = cx * np.cos(g.angles) + cy * np.sin(g.angles)
    return 2 * np.sqrt(np.clip(radius ** 2 - (s - centre_on_detector[:, None]) ** 2, 0, None))


def fan_disc_sinogram(g: CTGeometry, cx: float, cy: float, radius: float) -> np.ndarray:
    """Chord of the disc on the line from S = -R r to P_k = D r + s_k u."""
    th = g.angles[:, None, None]
    u = np.concatenate([np.cos(th), np.sin(th)], -1)
    r = np.concatenate([-np.sin(th), np.cos(th)], -1)
    source = -g.source_origin * r
    target = g.origin_detector * r + detector_positions(g)[None, :, None] * u
    direction = (target - source) / np.linalg.norm(target - source, axis=-1, keepdims=True)
    to_centre = np.array([cx, cy]) - source
    along = (to_centre * direction).sum(-1)
    distance2 = (to_centre ** 2).sum(-1) - along ** 2
    return 2 * np.sqrt(np.clip(radius ** 2 - distance2, 0, None))


def relative_l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum() / np.abs(b).sum())


# Angles over a full turn, offset so no view is axis-aligned, and a detector offset: a sign error
# in theta, u, r or s moves the off-centre disc's trace and fails the comparison.
ANGLES = np.linspace(0.0, 2 * np.pi, 20, endpoint=False) + 0.13
N, PIXEL = 96, 0.5


def test_parallel_centred_disc_matches_chord_length():
    g = CTGeometry.parallel(ANGLES[:6], n_det=131, det_spacing=0.4, image_size=N, pixel_size=PIXEL)
    sino = ParallelBeam2D(g).double()(disc_image(N, PIXEL, 0.0, 0.0, 15.0))[0].numpy()
    expected = parallel_disc_sinogram(g, 0.0, 0.0, 15.0)
    assert relative_l1(sino, expected) < 0.02
    # Through the centre the chord is the diameter, in mm.
    assert sino[:, 65].mean() == pytest.approx(30.0, rel=0.01)


def test_parallel_off_centre_disc_fixes_orientation():
    g = CTGeometry.parallel(ANGLES, n_det=131, det_spacing=0.4, det_offset=1.3, image_size=N, pixel_size=PIXEL)
    cx, cy, radius = 7.0, -4.0, 9.0
    sino = ParallelBeam2D(g).double()(disc_image(N, PIXEL, cx, cy, radius))[0].numpy()
    assert relative_l1(sino, parallel_disc_sinogram(g, cx, cy, radius)) < 0.02
    # The comparison is sharp enough to see the mirrored geometries.
    assert relative_l1(sino, parallel_disc_sinogram(g, cx, -cy, radius)) > 0.5
    mirrored = CTGeometry.parallel(-ANGLES, n_det=131, det_spacing=0.4, det_offset=1.3, image_size=N, pixel_size=PIXEL)
    assert relative_l1(sino, parallel_disc_sinogram(mirrored, cx, cy, radius)) > 0.5


def test_fan_off_centre_disc_matches_chord_formula():
    g = CTGeometry.fan(ANGLES, n_det=121, det_spacing=0.75, source_origin=60.0, origin_detector=30.0,
                       det_offset=-2.0, image_size=N, pixel_size=PIXEL)
    cx, cy, radius = -6.0, 8.0, 10.0
    sino = FanBeam2D(g).double()(disc_image(N, PIXEL, cx, cy, radius))[0].numpy()
    assert relative_l1(sino, fan_disc_sinogram(g, cx, cy, radius)) < 0.02
    assert relative_l1(sino, fan_disc_sinogram(g, cx, -cy, radius)) > 0.5
    # The parallel-beam trace of the same disc is wrong for a fan this wide.
    parallel = CTGeometry.parallel(ANGLES, n_det=121, det_spacing=0.5, det_offset=-2.0 / 1.5)
    assert relative_l1(sino, parallel_disc_sinogram(parallel, cx, cy, radius)) > 0.1


def test_fan_tends_to_parallel_for_a_distant_source():
    far = CTGeometry.fan(ANGLES[:5], n_det=64, det_spacing=0.5, source_origin=1e6, origin_detector=0.0,
                         image_size=40, pixel_size=0.5)
    near = CTGeometry.parallel(ANGLES[:5], n_det=64, det_spacing=0.5, image_size=40, pixel_size=0.5)
    x = torch.rand(2, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ct_operator(far).double()(x), ct_operator(near).double()(x), rtol=1e-3, atol=1e-3)


def test_each_view_conserves_the_image_integral():
    """Summing a parallel view over the detector integrates the image (detector wider than image)."""
    g = CTGeometry.parallel(ANGLES[:7], n_det=90, det_spacing=0.7, image_size=40, pixel_size=1.1)
    x = torch.rand(1, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sino = ParallelBeam2D(g).double()(x)
    mass = float(x.sum()) * g.pixel_size ** 2
    np.testing.assert_allclose(sino.sum(-1)[0].numpy() * g.det_spacing, mass, rtol=0.01)


def test_float32_and_float64_agree_and_gradients_flow():
    g = CTGeometry.fan(ANGLES[:8], n_det=50, det_spacing=1.0, source_origin=80.0, origin_detector=40.0,
                       image_size=32, pixel_size=1.0)
    op = FanBeam2D(g)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(op(x).double(), op(x.double()), rtol=1e-4, atol=1e-4)
    xr = x.clone().requires_grad_(True)
    target = op(x.flip(-1))
    loss = (op(xr) - target).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, xr, create_graph=True)
    torch.testing.assert_close(grad, 2 * op.adjoint(op(x) - target), rtol=1e-4, atol=1e-3)
    # Second order: the Hessian-vector product of a least-squares loss is 2 A^T A v.
    v = torch.rand_like(x)
    (hvp,) = torch.autograd.grad((grad * v).sum(), xr)
    torch.testing.assert_close(hvp, 2 * op.normal(v), rtol=1e-4, atol=1e-3)


def test_geometry_defaults_follow_the_conventions():
    fan = CTGeometry(kind="fan", angles=[0.0, 1.0], n_det=100, det_spacing=0.2, source_origin=400.0,
                     origin_detector=100.0)
    assert fan.image_size == 100
    assert fan.pixel_size == pytest.approx(0.2 * 400 / 500)
    assert fan.angles.dtype == np.float64 and not fan.angles.flags.writeable
    par = CTGeometry.parallel([0.0, 0.5], n_det=30, det_spacing=0.7)
    assert (par.image_size, par.pixel_size) == (30, 0.7)
    assert par == CTGeometry.parallel(np.array([0.0, 0.5]), 30, 0.7) and hash(par) == hash(par.subset(slice(None)))
    assert par.subset(slice(0, 1)).n_angles == 1


def test_geometry_from_measurement_attrs():
    attrs = {"geometry": "fan", "detector_spacing_mm": 0.2, "source_origin_mm": 410.66,
             "origin_detector_mm": 143.08, "pixel_size_mm": 0.14832, "image_size": 512}
    g = CTGeometry.from_attrs(np.linspace(0, np.pi, 5), 560, attrs)
    assert (g.kind, g.n_det, g.image_size, g.pixel_size, g.source_origin) == ("fan", 560, 512, 0.14832, 410.66)
    with pytest.raises(ValueError, match="source_origin_mm"):
        CTGeometry.from_attrs([0.0], 10, {"geometry": "fan", "detector_spacing_mm": 1.0})


@pytest.mark.parametrize("changes, message", [
    ({"kind": "cone"}, "CTGeometry.kind"),
    ({"angles": []}, "CTGeometry.angles"),
    ({"angles": [0.0, np.nan]}, "CTGeometry.angles"),
    ({"n_det": 0}, "CTGeometry.n_det"),
    ({"det_spacing": -1.0}, "CTGeometry.det_spacing"),
    ({"image_size": 1}, "CTGeometry.image_size"),
    ({"pixel_size": 0.0}, "CTGeometry.pixel_size"),
    ({"source_origin": 50.0}, "CTGeometry.source_origin"),
    ({"source_origin": 20.0}, "must lie outside the image"),
    ({"origin_detector": -300.0}, "CTGeometry.origin_detector"),
])
def test_invalid_geometry_names_the_field(changes, message):
    fields = dict(kind="parallel", angles=[0.0, 1.0], n_det=32, det_spacing=1.0, image_size=32, pixel_size=1.0)
    if "source_origin" in changes or "origin_detector" in changes:
        fields.update(kind="fan", source_origin=200.0, origin_detector=100.0)
        if changes.get("source_origin") == 50.0:
            fields["kind"] = "parallel"
            fields.pop("origin_detector")
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        CTGeometry(**fields)


def test_operator_refuses_bad_input():
    op = ct_operator(CTGeometry.parallel([0.0, 1.0], n_det=10, det_spacing=1.0, image_size=8, pixel_size=1.0))
    with pytest.raises(ValueError, match=r"expected \(batch, 8, 8\)"):
        op(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"expected \(batch, 2, 10\)"):
        op.adjoint(torch.zeros(1, 10, 2))
    with pytest.raises(TypeError, match="float32 or float64"):
        op(torch.zeros(1, 8, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="expected 'fan'"):
        FanBeam2D(op.geometry)
    assert isinstance(op, ParallelBeam2D) and isinstance(op, Tomography2D)


def test_memory_plan_for_htc_sized_problems_is_bounded():
    """Planning a 721-view 512 x 512 fan problem needs no matrix; beyond the budget it streams."""
    g = CTGeometry.fan(np.deg2rad(np.arange(721) * 0.5), n_det=560, det_spacing=0.2, source_origin=410.66,
                       origin_detector=143.08, image_size=512, pixel_size=0.14832)
    op = FanBeam2D(g, max_cached_nnz=0)
    per_view = op.nnz_per_view()
    assert per_view.shape == (721,)
    # Joseph: two entries per step, at most image_size steps per ray.
    assert 0.3 * 2 * 512 * 560 < per_view.mean() < 2 * 512 * 560
    assert op.matrix_bytes() > 4e9  # too big to cache on a laptop by default ...
    wedge = FanBeam2D(g.subset(slice(0, 180)))
    assert wedge.matrix_bytes() < 2e9  # ... while a 90 degree wedge fits the default budget
    assert math.isclose(wedge.nnz_per_view().sum(), per_view[:180].sum())
