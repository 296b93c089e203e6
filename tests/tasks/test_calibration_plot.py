"""The calibration plot draws the record's own numbers: the coverage curve before and after, the
diagonal, and the coverage per std band; it is saved in the store and embedded in markdown."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.image import imread

from inversa.data.store import ResultStore
from inversa.tasks.core import calibration
from inversa.tasks.core.calibration_plot import (
    AFTER_LABEL,
    BEFORE_LABEL,
    DIAGONAL_LABEL,
    PLOT_FILE,
    RECORD_FILE,
    calibration_figure,
    calibration_figure_png,
    calibration_markdown,
    calibration_record,
    write_calibration_png,
)

RECORD = {
    "scale": 1.37, "alpha": 0.1, "credible_level": 0.9, "coverage_before": 0.71, "coverage_after": 0.902, "pairs": 16,
    "curve": {"levels": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
              "before": [0.33, 0.41, 0.50, 0.60, 0.71, 0.79],
              "after": [0.52, 0.63, 0.71, 0.82, 0.902, 0.94]},
    "bands": [{"std_low": 0.0, "std_high": 0.02, "scale": 1.9, "fraction": 0.4, "coverage_before": 0.55,
               "coverage_after": 0.88},
              {"std_low": 0.02, "std_high": 0.05, "scale": 1.3, "fraction": 0.35, "coverage_before": 0.74,
               "coverage_after": 0.91},
              {"std_low": 0.05, "std_high": None, "scale": 1.05, "fraction": 0.25, "coverage_before": 0.86,
               "coverage_after": 0.93}],
}


def _line(ax, label_start: str):
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith(label_start)]
    return line


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png), format="png")


def test_the_curves_and_bands_are_the_records_numbers():
    fig = calibration_figure(RECORD)
    assert len(fig.axes) == 2
    curve_ax, band_ax = fig.axes
    curve = RECORD["curve"]
    before, after = _line(curve_ax, BEFORE_LABEL), _line(curve_ax, AFTER_LABEL)
    np.testing.assert_array_equal(before.get_xdata(), curve["levels"])
    np.testing.assert_array_equal(before.get_ydata(), curve["before"])
    np.testing.assert_array_equal(after.get_xdata(), curve["levels"])
    np.testing.assert_array_equal(after.get_ydata(), curve["after"])
    assert "1.37" in after.get_label()  # the scale that made "after"
    diagonal = _line(curve_ax, DIAGONAL_LABEL)
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    assert "71.0% -> 90.2%" in curve_ax.get_title() and "16 pairs" in curve_ax.get_title()

    bars = [c for c in band_ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == [BEFORE_LABEL, AFTER_LABEL]
    assert [p.get_height() for p in bars[0]] == [b["coverage_before"] for b in RECORD["bands"]]
    assert [p.get_height() for p in bars[1]] == [b["coverage_after"] for b in RECORD["bands"]]
    nominal = [line for line in band_ax.get_lines() if line.get_label().startswith("nominal")]
    assert nominal and set(nominal[0].get_ydata()) == {0.9}
    ticks = [t.get_text() for t in band_ax.get_xticklabels()]
    assert ticks == ["< 0.02\n40%, x1.9", ">= 0.02\n< 0.05\n35%, x1.3", ">= 0.05\n25%, x1.05"]


def test_a_record_without_curve_or_bands_shows_its_one_level():
    record = {k: v for k, v in RECORD.items() if k not in ("curve", "bands")}
    fig = calibration_figure(record)
    assert len(fig.axes) == 1
    np.testing.assert_array_equal(_line(fig.axes[0], BEFORE_LABEL).get_xydata(), [[0.9, 0.71]])
    np.testing.assert_array_equal(_line(fig.axes[0], AFTER_LABEL).get_xydata(), [[0.9, 0.902]])
    bad = {**RECORD, "curve": {"levels": [0.5, 0.9], "before": [0.4], "after": [0.5, 0.9]}}
    with pytest.raises(ValueError, match="differ in length"):
        calibration_figure(bad)
    with pytest.raises(ValueError, match="missing scale"):
        calibration_figure({k: v for k, v in RECORD.items() if k != "scale"})


def test_the_plot_is_saved_in_the_store_and_embedded_in_markdown(tmp_path):
    assert RECORD_FILE == calibration.CALIBRATION_FILE
    store = ResultStore.create(tmp_path / "s.zarr", n_slices=1, image_shape=(4, 4), pixel_size_mm=1.0, region_size=1,
                               provenance={"recipe_digest": "sha256:r", "input_digest": "sha256:i"})
    assert calibration_record(store) is None and write_calibration_png(store) is None
    assert not store.meta_path(PLOT_FILE).exists()

    path = write_calibration_png(store, RECORD)  # what the calibration step calls with its new record
    assert path == store.meta_path(PLOT_FILE)
    image = _decode(path.read_bytes())
    assert image.shape[1] > 600 and image.shape[0] > 300
    rgb = image[..., :3]
    assert ((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3).mean() > 0.01  # orange and blue, not grey

    store.write_meta_json(RECORD_FILE, {"scale": 1.2})  # a record the plot cannot read is no record
    assert calibration_record(store) is None
    store.write_meta_json(RECORD_FILE, RECORD)  # a store's own record is found without being handed over
    assert calibration_record(store) == RECORD
    path.unlink()
    assert write_calibration_png(store) == path and path.read_bytes() == calibration_figure_png(RECORD)

    markdown = calibration_markdown(RECORD)
    assert markdown.startswith("### Calibration\n") and "50%, 60%, 70%, 80%, 90%, 95%" in markdown
    assert "1.37" in markdown and "per band of posterior std" in markdown
    png = base64.b64decode(re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1))
    assert len(markdown) < 300_000 and _decode(png).shape[1] < image.shape[1]
