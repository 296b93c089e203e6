"""Conformal calibration through the flow: an over-confident sampler reaches nominal coverage.

The Gaussian posterior with a prior ten times too narrow (prior_std 0.003 / mm for discs of
0.032 / mm) gives 90 % intervals that cover about two thirds of the pixels (calibration off).
Calibrated on 32 simulated pairs, its intervals cover about 90 % on fresh data (a study the
calibration never saw).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from inversa.data.store import ResultStore
from inversa.models.conformal import scale_map
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


def _run(study, output, calibration="off"):
    measurement, truth = study
    spec = {
        "name": "gaussian-overconfident", "input": str(measurement), "reference": str(truth), "output": str(output),
        "method": {"name": "gaussian", "params": OVERCONFIDENT}, "samples": 4, "region_size": 6,
    }
    if calibration is not None:
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
    assert store.provenance["calibration"] == {"pairs": 32, "samples": 4, "bands": 4, "seed": 7, "alpha": None}
    assert len(record["bands"]) == 4 and record["curve"]["levels"][0] == 0.5

    # Same seeds, same samples: the calibrated interval is the plain one widened by the factor of
    # each pixel's std band.
    a, b = xr.open_zarr(tmp_path / "plain.zarr"), xr.open_zarr(tmp_path / "cal.zarr")
    np.testing.assert_array_equal(a["mean"].values, b["mean"].values)
    factors = scale_map(record, b["std"].values)
    assert np.unique(factors).size == 4  # spatially adaptive: each band its own factor
    np.testing.assert_allclose(b["upper"].values - b["mean"].values,
                               factors * (a["upper"].values - a["mean"].values), rtol=1e-4, atol=1e-8)


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
    with pytest.raises(RecipeError, match=r"calibration.pairs: 1 pairs \(16 conformal units\) cannot certify alpha=0.05"):
        load_recipe("ct-gaussian", ["calibration.pairs=1", "calibration.alpha=0.05"])
    with pytest.raises(RecipeError, match="calibration.pairss"):
        load_recipe("ct-gaussian", ["calibration.pairss=4"])
    with pytest.raises(RecipeError, match="calibration.samples: 64 is more than the run's samples"):
        load_recipe("ct-gaussian", ["calibration.samples=64"])
    # On by default for a method with uncertainty, off for a point estimate, off when asked.
    assert load_recipe("ct-gaussian").calibration is not None
    assert load_recipe("ct-fbp").calibration is None
    for off in ("off", "false", "null", "no"):
        assert load_recipe("ct-gaussian", [f"calibration={off}"]).calibration is None
    assert load_recipe("ct-gaussian").digest() != load_recipe("ct-gaussian", ["calibration=off"]).digest()


def test_calibration_pairs_are_reused_across_datasets_and_reruns(fresh_study, tmp_path, monkeypatch):
    # A second dataset of the same scanner and protocol (other discs, same geometry and noise).
    other = write_study(
        tmp_path / "other", name="other", kind="htc-discs", n_slices=6, image_size=24, pixel_size_mm=3.2,
        geometry={"geometry": "parallel", "n_det": 32, "detector_spacing_mm": 2.4},
        angles=np.linspace(0, np.pi, 20, endpoint=False), noise={"model": "gaussian", "relative_sigma": 0.01},
        seed=12,
    )
    monkeypatch.setenv("INVERSA_CACHE_DIR", str(tmp_path / "cache"))
    _run(fresh_study, tmp_path / "a.zarr", {"pairs": 10, "seed": 3})
    _run(other, tmp_path / "b.zarr", {"pairs": 10, "seed": 3})
    _run(fresh_study, tmp_path / "c.zarr", {"pairs": 10, "seed": 4})  # other pairs: computed afresh
    a, b, c = (json.loads((tmp_path / f"{n}.zarr" / "_inversa" / "calibration.json").read_text()) for n in "abc")
    assert not a["cached"] and a["nfe"] > 0
    assert b["cached"] and b["nfe"] == 0 and b["noise_sigma"] == a["noise_sigma"]
    assert b["measured_noise_sigma"] != a["measured_noise_sigma"]  # not equal, rounded to one level
    assert [x["scale"] for x in b["bands"]] == [x["scale"] for x in a["bands"]]
    assert not c["cached"] and c["scale"] != a["scale"]
    assert len(list((tmp_path / "cache" / "calibration").glob("*.npz"))) == 2


def test_a_damaged_cache_entry_is_computed_again(tmp_path, monkeypatch):
    from inversa.tasks.core.calibration_cache import cache_dir, cached_pairs, key_digest

    monkeypatch.setenv("INVERSA_CACHE_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"mean": np.zeros(3), "std": np.ones(3), "truth": np.full(3, 2.0)}

    key = {"kind": "test", "n": 1}
    first, hit = cached_pairs(key, compute)
    assert not hit and len(calls) == 1
    again, hit = cached_pairs(key, compute)
    assert hit and len(calls) == 1 and np.array_equal(again["truth"], first["truth"])
    (cache_dir() / f"{key_digest(key)}.npz").write_bytes(b"truncated")
    again, hit = cached_pairs(key, compute)
    assert not hit and len(calls) == 2 and np.array_equal(again["truth"], first["truth"])
