"""Conformal calibration through the flow: an over-confident sampler reaches nominal coverage.

The Gaussian posterior with a prior ten times too narrow (prior_std 0.003 / mm for discs of
0.032 / mm) gives 90 % intervals that cover about two thirds of the pixels. Calibrated on 32
simulated pairs, its intervals cover about 90 % on fresh data (a study the calibration never saw).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from inversa.data.store import ResultStore
from inversa.data.synthetic import write_study
from inversa.tasks.core.recipe import RecipeError, load_recipe
from inversa.flows.reconstruct import reconstruct

OVERCONFIDENT = {"prior_std": 0.003, "tol": 1e-3, "max_iter": 50}


@pytest.fixture(scope="module")
def fresh_study(tmp_path_factory):
    return write_study(
        tmp_path_factory.mktemp("fresh"), name="fresh", kind="htc-discs", n_slices=6, image_size=24,
        pixel_size_mm=3.2, geometry={"geometry": "parallel", "n_det": 32, "detector_spacing_mm": 2.4},
        angles=np.linspace(0, np.pi, 20, endpoint=False), noise={"model": "gaussian", "relative_sigma": 0.01},
        seed=11,
    )


def _run(study, output, calibration=None):
    measurement, truth = study
    spec = {
        "name": "gaussian-overconfident", "input": str(measurement), "reference": str(truth), "output": str(output),
        "method": {"name": "gaussian", "params": OVERCONFIDENT}, "samples": 4, "region_size": 6,
    }
    if calibration:
        spec["calibration"] = calibration
    return reconstruct(load_recipe(spec))


def test_calibration_brings_coverage_to_nominal_on_fresh_data(fresh_study, tmp_path):
    plain = _run(fresh_study, tmp_path / "plain.zarr")
    calibrated = _run(fresh_study, tmp_path / "cal.zarr", {"pairs": 32, "seed": 7})
    assert abs(plain["coverage"] - 0.9) > 0.15  # over-confident without calibration
    assert abs(calibrated["coverage"] - 0.9) < 0.05

    record = json.loads((tmp_path / "cal.zarr" / "_inversa" / "calibration.json").read_text())
    assert record["pairs"] == 32 and record["alpha"] == pytest.approx(0.1)
    assert record["scale"] > 1.5
    assert record["coverage_before"] < 0.8 and 0.9 <= record["coverage_after"] < 0.97
    assert calibrated["interval_scale"] == pytest.approx(record["scale"])
    assert calibrated["calibration_coverage_after"] == pytest.approx(record["coverage_after"])
    store = ResultStore.open(tmp_path / "cal.zarr")
    assert store.attrs["calibration"]["scale"] == pytest.approx(record["scale"])
    assert store.provenance["calibration"] == {"pairs": 32, "seed": 7, "alpha": None}

    # Same seeds, same samples: the calibrated interval is the plain one widened by the scale.
    a, b = xr.open_zarr(tmp_path / "plain.zarr"), xr.open_zarr(tmp_path / "cal.zarr")
    np.testing.assert_array_equal(a["mean"].values, b["mean"].values)
    np.testing.assert_allclose(b["upper"].values - b["mean"].values,
                               record["scale"] * (a["upper"].values - a["mean"].values), rtol=1e-4, atol=1e-8)


def test_calibration_runs_once_per_store(fresh_study, tmp_path):
    first = _run(fresh_study, tmp_path / "once.zarr", {"pairs": 10, "seed": 3})
    path = tmp_path / "once.zarr" / "_inversa" / "calibration.json"
    stamp = path.stat().st_mtime_ns
    store = ResultStore.open(tmp_path / "once.zarr")
    (store.path / "_inversa" / "regions" / "0.json").unlink()
    second = _run(fresh_study, tmp_path / "once.zarr", {"pairs": 10, "seed": 3})
    assert path.stat().st_mtime_ns == stamp
    assert second["interval_scale"] == first["interval_scale"]


def test_calibration_recipe_errors_are_named():
    with pytest.raises(RecipeError, match="calibration.*point estimate"):
        load_recipe("ct-fbp", ["calibration.pairs=32"])
    with pytest.raises(RecipeError, match="calibration.pairs: 4 pairs cannot certify alpha=0.1"):
        load_recipe("ct-gaussian", ["calibration.pairs=4"])
    with pytest.raises(RecipeError, match="calibration.pairss"):
        load_recipe("ct-gaussian", ["calibration.pairss=4"])
    assert load_recipe("ct-gaussian").calibration is None
    assert load_recipe("ct-gaussian").digest() != load_recipe("ct-gaussian", ["calibration.pairs=32"]).digest()
