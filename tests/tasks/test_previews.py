"""Previews people can read: panels from a store's standard variables, drawn with colour bars.

Hand-made stores with known numbers: the outside-the-interval fraction in the title must be the
measured one, units come from the store's attrs, a field is drawn north up over its coordinates,
a store without a reference shows mean and std only, and the PNG is a colour image.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.image import imread

from inversa.data.store import ResultStore
from inversa.tasks.core.kind import Panel, Preview
from inversa.tasks.core.panels import outside_map, store_preview
from inversa.tasks.core.previews import UI_DPI, preview_figure, preview_markdown, preview_png, write_preview_png

PROV = {"recipe_digest": "sha256:r", "input_digest": "sha256:i", "method": "dds"}


def _image_store(path, *, reference: bool = True, intervals: bool = True) -> tuple[ResultStore, dict]:
    """Two 8 x 8 slices; in slice 1 the reference leaves the interval at 7 known pixels (5 above,
    2 below) and one pixel has no interval, so 7 of 63 finite pixels are outside."""
    store = ResultStore.create(path, n_slices=2, image_shape=(8, 8), pixel_size_mm=0.5, region_size=1,
                               provenance=PROV, with_reference=reference, credible_level=0.9)
    store.update_attrs({"units": "1/mm"})
    rng = np.random.default_rng(3)
    arrays = {}
    for index in range(2):
        mean = rng.random((1, 8, 8)).astype(np.float32)
        std = np.full_like(mean, 0.1)
        lower, upper = mean - 0.2, mean + 0.2
        ref = mean + rng.uniform(-0.1, 0.1, mean.shape).astype(np.float32)
        ref[0, 0, :5] = upper[0, 0, :5] + 0.5
        ref[0, 7, :2] = lower[0, 7, :2] - 0.5
        lower[0, 4, 4] = np.nan
        kwargs = {"std": std, "lower": lower, "upper": upper} if intervals else {}
        store.write_region(index, mean=mean, reference=ref if reference else None, **kwargs)
        arrays[index] = {"mean": mean[0], "reference": ref[0], "lower": lower[0], "upper": upper[0]}
    return store, arrays


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png), format="png")


def _is_colour(image: np.ndarray) -> bool:
    """Some pixels whose red, green and blue differ clearly (a grey image has none)."""
    rgb = image[..., :3]
    return bool((rgb.max(axis=-1) - rgb.min(axis=-1) > 0.3).mean() > 0.01)


def test_slice_preview_with_reference_has_four_titled_panels_and_the_measured_outside_fraction(tmp_path):
    store, arrays = _image_store(tmp_path / "ct.zarr")
    preview = store_preview(store, 1)
    labels = [p.label for p in preview.panels]
    assert labels[:3] == ["mean", "std", "|mean - reference|"]
    a = arrays[1]
    finite = np.isfinite(a["lower"])
    measured = float(((a["reference"] < a["lower"]) | (a["reference"] > a["upper"]))[finite].mean())
    assert measured == pytest.approx(7 / 63)
    assert labels[3] == f"outside 90% interval: {measured:.1%}" == "outside 90% interval: 11.1%"
    assert np.nanmean(preview.panels[3].image) == pytest.approx(measured)
    assert np.isnan(preview.panels[3].image[4, 4])
    np.testing.assert_array_equal(preview.panels[0].image, a["mean"])  # an image: row 0 at the top, as stored
    np.testing.assert_allclose(preview.panels[2].image, np.abs(a["mean"] - a["reference"]))
    # std and error on one colour scale; the map of outside pixels from 0 to 1
    assert (preview.panels[1].vmin, preview.panels[1].vmax) == (preview.panels[2].vmin, preview.panels[2].vmax)
    assert (preview.panels[3].vmin, preview.panels[3].vmax) == (0.0, 1.0)
    assert [p.cmap for p in preview.panels] == ["gray", "magma", "magma", "Reds"]
    assert preview.extent is None and preview.title == "slice 1, dds"

    fig = preview_figure(preview)
    images = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == len(images) == 4
    bars = [ax.images[0].colorbar for ax in images]
    assert all(bar is not None for bar in bars)
    assert [bar.ax.get_ylabel() for bar in bars] == ["1/mm", "1/mm", "1/mm", ""]
    titles = [ax.get_title() for ax in images]
    assert all(t.startswith("slice 1, dds\n") for t in titles)
    assert titles[0].endswith("mean [1/mm]") and titles[1].endswith("std [1/mm]")
    assert titles[2].endswith("|mean - reference| [1/mm]")
    assert titles[3].endswith("outside 90% interval: 11.1%")
    assert [t.get_text() for t in bars[3].ax.get_yticklabels()] == ["inside", "outside"]
    assert not images[0].get_xticks().size  # bare pixels: no axes

    png = _decode(preview_png(preview))
    assert png.shape[1] > 4 * 250 and 150 < png.shape[0] < png.shape[1]
    assert _is_colour(png)


def test_a_store_without_reference_shows_mean_and_std_and_a_point_estimate_the_mean(tmp_path):
    store, _ = _image_store(tmp_path / "a.zarr", reference=False)
    preview = store_preview(store, 0)
    assert [p.label for p in preview.panels] == ["mean", "std"]
    assert len(preview_figure(preview).axes) == 2
    store, _ = _image_store(tmp_path / "b.zarr", reference=False, intervals=False)
    assert [p.label for p in store_preview(store, 0).panels] == ["mean"]
    with pytest.raises(ValueError, match=r"slice 2: expected 0..1"):
        store_preview(store, 2)


def _field_store(path, ys, *, coord_units="m", offset=0.0, **extra) -> ResultStore:
    xs = np.linspace(-500.0, 500.0, 6)
    store = ResultStore.create(path, n_slices=len(ys), image_shape=(len(ys), 6), pixel_size_mm=200.0, region_size=len(ys),
                               provenance={**PROV, "method": "gp"}, leading_dim="y", x_coord=xs, y_coord=ys,
                               coord_units=coord_units, with_reference=True, **extra)
    store.update_attrs({"units": "m/s"})
    field = np.arange(len(ys) * 6, dtype=np.float32).reshape(len(ys), 6) - np.float32(offset)
    store.write_region(0, mean=field, std=field / 10 + 1, lower=field - 1, upper=field + 1, reference=field + 0.5)
    return store


def test_a_field_is_drawn_north_up_over_its_coordinates(tmp_path):
    ys = np.array([0.0, 10.0, 20.0, 30.0, 40.0])  # ascending: the last row is the northmost
    store = _field_store(tmp_path / "f.zarr", ys)
    preview = store_preview(store, 0)
    mean = store.to_xarray()["mean"].values
    np.testing.assert_array_equal(preview.panels[0].image[0], mean[-1])
    # cell edges: half a spacing beyond the outer centres (200 m along x, 10 m along y)
    assert preview.extent == (-600.0, 600.0, -5.0, 45.0)
    assert (preview.xlabel, preview.ylabel, preview.aspect) == ("x (m)", "y (m)", "equal")
    assert preview.panels[0].cmap == "viridis" and preview.panels[0].units == "m/s"
    assert preview.panels[-1].label == "outside 90% interval: 0.0%"
    assert "north up" in preview.caption
    fig = preview_figure(preview)
    for ax in fig.axes:
        assert ax.images[0].get_extent() == [-600.0, 600.0, -5.0, 45.0]
        assert ax.get_xlim() == (-600.0, 600.0) and ax.get_ylim() == (-5.0, 45.0)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (m)", "y (m)")
        assert ax.get_aspect() == 1.0
    assert fig.axes[0].get_title() == "gp\nmean [m/s]"
    with pytest.raises(ValueError, match="one image"):
        store_preview(store, 1)


def test_degrees_stretch_latitude_and_signed_values_use_a_diverging_map(tmp_path):
    ys = np.array([61.0, 60.0, 59.0])  # latitude, descending: already north up
    store = _field_store(tmp_path / "g.zarr", ys, coord_units="degrees")
    preview = store_preview(store, 0)
    np.testing.assert_array_equal(preview.panels[0].image, store.to_xarray()["mean"].values)
    assert preview.aspect == pytest.approx(2.0)  # 1 / cos(60 degrees)
    assert preview.extent == (-600.0, 600.0, 58.5, 61.5)
    assert preview_figure(preview).axes[0].get_aspect() == pytest.approx(2.0)
    assert preview.panels[0].cmap == "viridis"  # values 0..17: one sign
    signed = store_preview(_field_store(tmp_path / "h.zarr", ys, offset=8.5), 0).panels[0]  # -8.5..8.5
    assert signed.cmap == "RdBu_r" and signed.vmin == -signed.vmax  # zero in the middle


def test_a_vector_field_over_time_shows_speed_and_the_fraction_of_components_outside(tmp_path):
    times = np.array(["2001-01-15", "2001-02-15"], dtype="datetime64[ns]")
    store = ResultStore.create(tmp_path / "v.zarr", n_slices=2, image_shape=(3, 4), pixel_size_mm=1.0, region_size=1,
                               provenance={**PROV, "method": "gp"}, slice_coord=times, leading_dim="time",
                               x_coord=np.arange(4.0), y_coord=np.arange(3.0), coord_units="km",
                               components=("u", "v"), with_reference=True)
    mean = np.zeros((1, 3, 4, 2), np.float32)
    mean[..., 0], mean[..., 1] = 3.0, 4.0
    ref = mean.copy()
    ref[0, 0, 0, 0] += 5.0  # one component of one cell outside: 1 of 24 values
    ref[0, 1, 1, :] -= 5.0  # both components of another: 2 more
    store.write_region(1, mean=mean, std=np.ones_like(mean), lower=mean - 1, upper=mean + 1, reference=ref)
    preview = store_preview(store, 1)
    assert preview.title == "time 2001-02-15, gp" and preview.caption.startswith("Time step 1 (2001-02-15)")
    assert [p.label for p in preview.panels[:3]] == ["mean speed", "std of u", "|mean - reference|"]
    np.testing.assert_allclose(preview.panels[0].image, 5.0)
    assert preview.panels[-1].label == f"outside 90% interval: {3 / 24:.1%}"
    outside = outside_map(*(np.asarray(a)[0] for a in (mean - 1, mean + 1, ref)))
    assert outside[0, 0] == 0.5 and outside[1, 1] == 1.0 and np.nanmean(outside) == pytest.approx(3 / 24)
    assert preview.panels[-1].image[-1, 0] == 0.5  # north up: stored row 0 is drawn last


def test_markdown_embeds_a_smaller_colour_rendering_of_the_same_figure(tmp_path):
    store, _ = _image_store(tmp_path / "ct.zarr")
    preview = store_preview(store, 1)
    markdown = preview_markdown(preview, "Preview")
    assert markdown.startswith("### Preview\n") and "outside 90% interval: 11.1%" in markdown
    uri = re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    png = base64.b64decode(uri.group(1))
    assert len(markdown) < 300_000
    small, full = _decode(png), _decode(preview_png(preview))
    assert _is_colour(small)
    assert small.shape[1] == pytest.approx(full.shape[1] * UI_DPI / 110, rel=0.05)
    written = write_preview_png(preview, tmp_path / "p.png")
    assert written.read_bytes() == preview_png(preview)


def test_a_kind_may_hand_over_panels_without_hints():
    """A kind's own Preview (only images and labels) still draws: grey, robust limits, no axes."""
    preview = Preview([Panel(np.arange(12.0).reshape(3, 4), "mean"), Panel(np.ones((3, 4)), "std")], "Slice 0")
    fig = preview_figure(preview)
    assert [ax.get_title() for ax in fig.axes] == ["mean", "std"]
    assert _decode(preview_png(preview)).shape[0] > 50


def test_a_segmentation_reference_is_drawn_beside_the_mean_not_subtracted(tmp_path):
    # HTC2022's references are binary masks scored by MCC: an error in 1/mm against 0/1 labels
    # would be nonsense, so the preview shows mean, std (its own colour scale) and the mask.
    store, arrays = _image_store(tmp_path / "htc.zarr")
    store.update_attrs({"reference_kind": "segmentation"})
    preview = store_preview(store, 1)
    assert [p.label for p in preview.panels] == ["mean", "std", "reference segmentation"]
    np.testing.assert_array_equal(preview.panels[2].image, (arrays[1]["reference"] > 0).astype(float))
    assert preview.panels[1].vmax == pytest.approx(0.1, rel=0.05)  # the std's own scale
    assert "share one colour scale" not in preview.caption


def test_an_image_whose_region_is_not_written_yet_is_refused_not_drawn_blank(tmp_path):
    store = ResultStore.create(tmp_path / "partial.zarr", n_slices=2, image_shape=(8, 8), pixel_size_mm=0.5,
                               region_size=1, provenance=PROV, credible_level=0.9)
    store.write_region(0, mean=np.ones((1, 8, 8), np.float32))
    assert len(store_preview(store, 0).panels) == 1
    with pytest.raises(ValueError, match=r"slice 1 is not computed yet \(region 1 pending; 1 of 2 regions done\)"):
        store_preview(store, 1)

