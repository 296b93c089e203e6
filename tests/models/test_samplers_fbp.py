"""FBP against analytic sinograms of discs written straight from docs/conventions.md.

The sinograms are computed in closed form here (chord lengths through a disc), not with the
project's projector, so these tests pin the FBP's scale and signs to the convention itself.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inversa.models.samplers import REGISTRY
from inversa.models.samplers.fbp import FBP, angular_weights, fbp_reconstruct, ramp_filter_response

MU = 0.03  # 1/mm, about the attenuation of the HTC2022 acrylic
CENTRE = (5.0, -8.0)  # mm, off-centre so a sign error moves the disc
RADIUS = 15.0


def geometry(kind, angles, image_size=96, pixel_size=0.6, n_det=192, det_spacing=0.5, det_offset=0.0):
    return SimpleNamespace(
        kind=kind, angles=np.asarray(angles, dtype=np.float64), n_det=n_det, det_spacing=det_spacing,
        det_offset=det_offset, source_origin=200.0 if kind == "fan" else None,
        origin_detector=100.0 if kind == "fan" else None, image_size=image_size, pixel_size=pixel_size,
    )


def disc_sinogram(g, centre=CENTRE, radius=RADIUS, mu=MU):
    """Line integrals of a uniform disc along the rays of the convention, in closed form."""
    theta = g.angles[:, None]
    s = (np.arange(g.n_det) - (g.n_det - 1) / 2) * g.det_spacing + g.det_offset
    u = np.stack([np.cos(theta), np.sin(theta)], -1)
    r = np.stack([-np.sin(theta), np.cos(theta)], -1)
    c = np.asarray(centre)
    if g.kind == "parallel":
        dist = s[None] - (u @ c)  # signed distance of the ray s_k u + t r from the centre
    else:
        source = -g.source_origin * r
        element = g.origin_detector * r + s[None, :, None] * u
        e = element - source
        e /= np.linalg.norm(e, axis=-1, keepdims=True)
        w = c - source
        dist = w[..., 0] * e[..., 1] - w[..., 1] * e[..., 0]
    return 2 * mu * np.sqrt(np.clip(radius**2 - dist**2, 0, None))


def pixel_radius(g, centre=CENTRE):
    coords = (np.arange(g.image_size) - (g.image_size - 1) / 2) * g.pixel_size
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    return np.hypot(xs - centre[0], ys - centre[1])


CASES = {
    "parallel-180": ("parallel", np.arange(180) * np.pi / 180),
    "fan-360": ("fan", np.arange(360) * np.pi / 180),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("filter_name", ["ram-lak", "hann"])
def test_uniform_disc_reconstructs_to_its_attenuation(case, filter_name):
    kind, angles = CASES[case]
    g = geometry(kind, angles, pixel_size=0.6 if kind == "parallel" else 0.4)
    y = torch.tensor(disc_sinogram(g), dtype=torch.float32)[None]
    x = fbp_reconstruct(y, g, filter_name)[0].numpy()
    rad = pixel_radius(g)
    interior = x[rad < RADIUS - 3]
    assert abs(interior.mean() / MU - 1) < 0.02
    assert interior.std() / MU < 0.02
    # Nothing outside: a flipped sign would put the disc at (-5, 8) instead.
    assert np.abs(x[rad > RADIUS + 3]).max() < 0.1 * MU


def test_detector_offset_is_honoured():
    angles = np.arange(180) * np.pi / 180
    g = geometry("parallel", angles, det_offset=1.3)
    y = torch.tensor(disc_sinogram(g), dtype=torch.float32)[None]
    x = fbp_reconstruct(y, g)[0].numpy()
    rad = pixel_radius(g)
    assert abs(x[rad < RADIUS - 3].mean() / MU - 1) < 0.02
    assert np.abs(x[rad > RADIUS + 3]).max() < 0.1 * MU


def test_uneven_angles_are_weighted_by_their_spacing():
    rng = np.random.default_rng(0)
    steps = rng.uniform(0.3, 1.7, size=240)
    angles = np.cumsum(steps) / steps.sum() * np.pi  # uneven, covering [0, pi)
    angles -= angles[0]
    g = geometry("parallel", angles)
    y = torch.tensor(disc_sinogram(g), dtype=torch.float32)[None]
    x = fbp_reconstruct(y, g)[0].numpy()
    assert abs(x[pixel_radius(g) < RADIUS - 3].mean() / MU - 1) < 0.02


def test_full_fan_scan_with_duplicated_end_view_is_not_overweighted():
    angles = np.arange(361) * np.pi / 180  # 0 .. 360 degrees inclusive, as HTC2022 stores it
    w = angular_weights(angles, 2 * np.pi)
    assert w.sum() == pytest.approx(2 * np.pi, rel=1e-12)
    assert w[0] == pytest.approx(np.pi / 360) and w[-1] == pytest.approx(np.pi / 360)


def test_limited_angle_weights_are_the_spacing():
    angles = np.deg2rad(np.arange(30.0, 120.0, 0.5))  # a 90 degree wedge
    w = angular_weights(angles, 2 * np.pi)
    np.testing.assert_allclose(w, np.deg2rad(0.5), rtol=1e-9)
    # A wedge is backprojected at full weight: nothing is divided by a redundancy it lacks.
    w_par = angular_weights(angles, np.pi)
    np.testing.assert_allclose(w_par, np.deg2rad(0.5), rtol=1e-9)


def test_ramp_filter_has_no_dc_offset_and_grows_linearly():
    spacing = 0.5
    h = ramp_filter_response(64, spacing).numpy()
    length = 2 * (h.size - 1)
    freq = np.fft.rfftfreq(length, d=spacing)
    # Spatial design: the DC term is small but not zero (1/4 of the first bin's width), unlike
    # a sampled |f| ramp whose zero DC removes the image's mean.
    assert 0 < h[0] < 0.5 * freq[1]
    mid = slice(length // 16, length // 4)
    np.testing.assert_allclose(h[mid], freq[mid], rtol=0.02)
    hann = ramp_filter_response(64, spacing, "hann").numpy()
    assert hann[-1] == pytest.approx(0, abs=1e-12)


def test_batch_and_slices_are_independent():
    angles = np.arange(90) * np.pi / 90
    g = geometry("fan", angles, image_size=48, n_det=96, det_spacing=1.0)
    y1 = torch.tensor(disc_sinogram(g), dtype=torch.float32)
    y2 = torch.tensor(disc_sinogram(g, centre=(-6.0, 3.0), radius=9.0, mu=0.05), dtype=torch.float32)
    both = fbp_reconstruct(torch.stack([y1, y2]), g, views_per_chunk=7)
    alone = fbp_reconstruct(y2[None], g)
    torch.testing.assert_close(both[1], alone[0], rtol=1e-5, atol=1e-6)


def test_sampler_interface_reads_the_operator_geometry():
    g = geometry("parallel", np.arange(60) * np.pi / 60, image_size=32, n_det=64)
    op = SimpleNamespace(geometry=g, in_shape=(32, 32), out_shape=(60, 64))
    y = torch.tensor(disc_sinogram(g), dtype=torch.float32)[None]
    sampler = REGISTRY["fbp"](filter="hann")
    result = sampler.sample(y, op, None, n=8, generator=None)
    assert result.samples.shape == (1, 1, 32, 32)
    assert sampler.deterministic and result.nfe == 1
    with pytest.raises(ValueError, match="out_shape"):
        sampler.sample(y[:, :10], op, None)
    with pytest.raises(ValueError, match="geometry"):
        sampler.sample(y, SimpleNamespace(out_shape=(60, 64)), None)
    with pytest.raises(ValueError, match="filter"):
        FBP(filter="cosine")


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_fbp_inverts_the_project_projector(kind):
    # The projector of models.physics and this FBP must agree on every sign of the convention.
    from inversa.models.physics.tomography import CTGeometry, ct_operator

    if kind == "parallel":
        g = CTGeometry.parallel(np.arange(180) * np.pi / 180, 192, 0.5, image_size=96, pixel_size=0.6)
    else:
        g = CTGeometry.fan(np.arange(360) * np.pi / 180, 192, 0.5, 200.0, 100.0, image_size=96, pixel_size=0.6)
    op = ct_operator(g)
    disc = MU * (pixel_radius(g) < RADIUS)
    projected = op(torch.tensor(disc, dtype=torch.float32)[None])
    analytic = torch.tensor(disc_sinogram(g), dtype=torch.float32)[None]
    assert float((projected - analytic).norm() / analytic.norm()) < 0.03  # pixelated disc
    inclusion = pixel_radius(g, centre=(1.0, -5.0)) < 5  # inside the disc
    image = disc + 0.5 * MU * inclusion
    x = FBP().sample(op(torch.tensor(image, dtype=torch.float32)[None]), op).samples[0, 0].numpy()
    assert np.linalg.norm(x - image) / np.linalg.norm(image) < 0.1
    assert x[pixel_radius(g, centre=(1.0, -5.0)) < 3].mean() == pytest.approx(1.5 * MU, rel=0.03)
