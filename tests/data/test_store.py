"""The result store: round trip, resume, conflicts, crash safety and concurrent region writes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import inversa.data.store as store_module
from inversa.data.store import ResultStore, StoreConflict, StoreError, StoreInputError

REPO = Path(__file__).resolve().parents[2]
N_SLICES, H, W, REGION, N_SAMPLES = 5, 6, 4, 2, 3
PIXEL = 0.25
PROVENANCE = {
    "recipe": {"name": "ct-fbp", "method": {"name": "fbp", "params": {"filter": "ram-lak", "cutoff": 0.8}}},
    "recipe_digest": "sha256:recipe-one",
    "input_digest": "sha256:input-one",
    "code_version": "0.1.0+g1234",
    "seeds": [11, 12, 13],
    "nested": {"a": [1, 2.5, None, True, {"b": "c"}]},
}


def make_store(path, *, provenance=PROVENANCE, overwrite=False, **changes):
    kwargs = dict(
        n_slices=N_SLICES,
        image_shape=(H, W),
        pixel_size_mm=PIXEL,
        region_size=REGION,
        provenance=provenance,
        credible_level=0.9,
        n_samples=N_SAMPLES,
        with_reference=True,
        metric_names=("psnr", "coverage"),
        slice_coord=[10, 20, 30, 40, 50],
    )
    kwargs.update(changes)
    return ResultStore.create(path, overwrite=overwrite, **kwargs)


def region_arrays(start, stop, seed=0):
    """Distinct, reproducible values for every variable of slices start:stop."""
    rng = np.random.default_rng(1000 * seed + start)
    n = stop - start
    mean = rng.normal(size=(n, H, W)).astype(np.float32)
    std = rng.uniform(0.1, 1.0, size=(n, H, W)).astype(np.float32)
    return dict(
        mean=mean,
        std=std,
        lower=mean - 1.6 * std,
        upper=mean + 1.6 * std,
        samples=rng.normal(size=(N_SAMPLES, n, H, W)).astype(np.float32),
        reference=rng.normal(size=(n, H, W)).astype(np.float32),
        metrics={"psnr": rng.uniform(20, 40, size=n), "coverage": rng.uniform(0, 1, size=n)},
    )


def write_all(store, seed=0):
    for index, (start, stop) in enumerate(store.regions):
        store.write_region(index, **region_arrays(start, stop, seed), info={"nfe": 7 + index, "seconds": 0.5})


def expected_full(seed=0):
    parts = [region_arrays(s, min(s + REGION, N_SLICES), seed) for s in range(0, N_SLICES, REGION)]
    out = {name: np.concatenate([p[name] for p in parts]) for name in ("mean", "std", "lower", "upper", "reference")}
    out["samples"] = np.concatenate([p["samples"] for p in parts], axis=1)
    for metric in ("psnr", "coverage"):
        out[f"metric_{metric}"] = np.concatenate([p["metrics"][metric] for p in parts])
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root's parent (siblings included) with its bytes."""
    return {
        str(p.relative_to(root.parent)): p.read_bytes()
        for p in sorted(root.parent.rglob("*"))
        if p.is_file()
    }


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --------------------------------------------------------------------------------------------


def test_round_trip_through_xarray(tmp_path):
    path = tmp_path / "run.zarr"
    store = make_store(path)
    assert store.regions == [(0, 2), (2, 4), (4, 5)]
    assert store.pending_regions() == [0, 1, 2]
    write_all(store)
    assert store.done_regions() == {0, 1, 2} and store.pending_regions() == []

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no consolidated-metadata fallback, no stray `_inversa` node
        ds = xr.open_zarr(path)
    expected = expected_full()
    for name, values in expected.items():
        np.testing.assert_array_equal(ds[name].values, values, err_msg=name)
    for name in ("mean", "std", "lower", "upper", "reference"):
        assert ds[name].dims == ("slice", "y", "x") and ds[name].dtype == np.float32
        assert ds[name].encoding["chunks"] == (REGION, H, W)
    assert ds["samples"].dims == ("sample", "slice", "y", "x")
    assert ds["samples"].encoding["chunks"] == (1, REGION, H, W)
    assert ds["metric_psnr"].dims == ("slice",) and ds["metric_psnr"].dtype == np.float64

    np.testing.assert_array_equal(ds["slice"].values, [10, 20, 30, 40, 50])
    np.testing.assert_allclose(ds["y"].values, [-0.625, -0.375, -0.125, 0.125, 0.375, 0.625])
    np.testing.assert_allclose(ds["x"].values, [-0.375, -0.125, 0.125, 0.375])
    assert ds["y"].attrs["units"] == "mm" and ds["x"].attrs["units"] == "mm"

    assert ds.attrs["credible_level"] == 0.9
    assert ds.attrs["inversa_version"] == store_module.inversa_version() != ""
    assert ds.attrs["provenance"] == PROVENANCE
    reopened = ResultStore.open(path)
    assert reopened.provenance == PROVENANCE and reopened.credible_level == 0.9
    assert reopened.done_regions() == {0, 1, 2}
    assert reopened.has_reference and reopened.n_samples == N_SAMPLES
    assert reopened.metric_names == ("psnr", "coverage") and reopened.summary == {}


def test_unwritten_regions_read_as_nan_and_to_xarray_is_lazy(tmp_path):
    store = make_store(tmp_path / "run.zarr", n_samples=0, with_reference=False, slice_coord=None)
    arrays = region_arrays(2, 4)
    store.write_region(1, **{k: arrays[k] for k in ("mean", "std", "lower", "upper")})
    ds = store.to_xarray()
    assert ds["mean"].chunks is not None  # dask-backed: nothing read yet
    assert "samples" not in ds and "reference" not in ds
    np.testing.assert_array_equal(ds["slice"].values, np.arange(N_SLICES))
    mean = ds["mean"].values
    assert np.isnan(mean[[0, 1, 4]]).all()
    np.testing.assert_array_equal(mean[2:4], arrays["mean"])
    assert np.isnan(ds["metric_psnr"].values).all()


def test_deterministic_region_with_nan_uncertainty(tmp_path):
    """A point estimate writes NaN std/lower/upper; the region still counts as done."""
    store = make_store(tmp_path / "run.zarr", n_samples=0, with_reference=False)
    mean = np.full((REGION, H, W), 3.0)
    nan = np.full((REGION, H, W), np.nan)
    store.write_region(0, mean=mean, std=nan, lower=nan, upper=nan)
    ds = store.to_xarray()
    np.testing.assert_array_equal(ds["mean"].values[:2], 3.0)
    assert np.isnan(ds["std"].values).all()
    assert store.done_regions() == {0}


def test_point_estimate_without_uncertainty_writes_no_uncertainty_chunks(tmp_path):
    """std/lower/upper given as None stay at the NaN fill value and cost no chunk files."""
    store = make_store(tmp_path / "run.zarr", n_samples=0, with_reference=False)
    store.write_region(0, mean=np.full((REGION, H, W), 2.0))
    ds = store.to_xarray()
    np.testing.assert_array_equal(ds["mean"].values[:REGION], 2.0)
    assert np.isnan(ds["std"].values).all() and np.isnan(ds["upper"].values).all()
    assert not any((tmp_path / "run.zarr" / "std").rglob("c/*")), "no std chunk should be written"
    assert store.done_regions() == {0}
    with pytest.raises(StoreInputError, match="std, lower and upper, or none"):
        store.write_region(1, mean=np.zeros((REGION, H, W)), std=np.zeros((REGION, H, W)))


def test_zarr_does_not_see_the_manifest_directory(tmp_path):
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    assert (path / "_inversa" / "regions" / "0.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(str(path), mode="r")
        names = {name for name, _ in group.members()}
    assert "_inversa" not in names
    assert names == {"mean", "std", "lower", "upper", "samples", "reference",
                     "metric_psnr", "metric_coverage", "slice", "y", "x"}


def test_resume_returns_the_same_store_with_its_done_regions(tmp_path):
    path = tmp_path / "run.zarr"
    first = make_store(path)
    for index in (0, 2):
        start, stop = first.regions[index]
        first.write_region(index, **region_arrays(start, stop))
    before = snapshot(path)

    again = make_store(path)
    assert again.path == path
    assert again.done_regions() == {0, 2} and again.pending_regions() == [1]
    assert snapshot(path) == before  # resuming writes nothing

    start, stop = again.regions[1]
    again.write_region(1, **region_arrays(start, stop))
    ds = xr.open_zarr(path)
    np.testing.assert_array_equal(ds["mean"].values, expected_full()["mean"])


@pytest.mark.parametrize("digest", ["recipe_digest", "input_digest"])
def test_conflicting_digest_is_refused_and_changes_nothing(tmp_path, digest):
    path = tmp_path / "run.zarr"
    store = make_store(path)
    start, stop = store.regions[0]
    store.write_region(0, **region_arrays(start, stop))
    before = snapshot(path)

    other = dict(PROVENANCE, **{digest: "sha256:something-else"})
    with pytest.raises(StoreConflict) as info:
        make_store(path, provenance=other)
    message = str(info.value)
    assert digest in message and "something-else" in message
    assert str(path) in message and "overwrite" in message
    other_digest = ({"recipe_digest", "input_digest"} - {digest}).pop()
    assert other_digest not in message  # only the digest that differs is named
    assert snapshot(path) == before


def test_conflicting_layout_is_refused(tmp_path):
    path = tmp_path / "run.zarr"
    make_store(path)
    before = snapshot(path)
    with pytest.raises(StoreConflict, match=r"image_shape") as info:
        make_store(path, image_shape=(H + 1, W))
    assert "recipe_digest" not in str(info.value)
    assert snapshot(path) == before


def test_overwrite_replaces_the_store(tmp_path):
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    other = dict(PROVENANCE, recipe_digest="sha256:recipe-two")
    store = make_store(path, provenance=other, overwrite=True, image_shape=(3, 3), n_samples=0,
                       with_reference=False, metric_names=())
    assert store.provenance["recipe_digest"] == "sha256:recipe-two"
    assert store.done_regions() == set() and store.pending_regions() == [0, 1, 2]
    ds = xr.open_zarr(path)
    assert ds["mean"].shape == (N_SLICES, 3, 3) and "samples" not in ds
    assert np.isnan(ds["mean"].values).all()
    assert ds.attrs["provenance"]["recipe_digest"] == "sha256:recipe-two"
    assert not (path / "_inversa" / "regions" / "0.json").exists()
    assert siblings(path) == ["run.zarr"]  # no staging or retired copies left


@pytest.mark.parametrize("kind", ["directory", "empty-directory", "file", "zarr-without-marker"])
def test_refuses_a_path_that_is_not_an_inversa_store(tmp_path, kind):
    path = tmp_path / "precious"
    if kind == "directory":
        path.mkdir()
        (path / "thesis.tex").write_text("years of work")
    elif kind == "empty-directory":
        path.mkdir()
    elif kind == "file":
        path.write_text("not a store")
    else:
        xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(path, zarr_format=3, consolidated=False)
    before = snapshot(path) if path.is_dir() else {"file": path.read_bytes()}
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not an inversa result store") as info:
            make_store(path, overwrite=overwrite)
        assert not isinstance(info.value, StoreConflict)
        assert str(path) in str(info.value)
    after = snapshot(path) if path.is_dir() else {"file": path.read_bytes()}
    assert after == before
    assert siblings(path) == ["precious"]


def test_open_names_a_missing_path(tmp_path):
    with pytest.raises(StoreError, match="does not exist") as info:
        ResultStore.open(tmp_path / "missing.zarr")
    assert "missing.zarr" in str(info.value)


def test_crash_during_template_creation_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    staged = []

    def crash(target, *args):
        staged.append(target)
        assert (target / "zarr.json").is_file()  # the zarr template was already half-way there
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(store_module, "_write_marker", crash)
    with pytest.raises(KeyboardInterrupt):
        make_store(path)
    assert staged and not staged[0].exists()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_leaves_the_old_store_untouched(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    before = snapshot(path)

    def crash(*args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store_module, "_write_marker", crash)
    with pytest.raises(OSError, match="simulated"):
        make_store(path, provenance=dict(PROVENANCE, input_digest="sha256:new"), overwrite=True)
    assert snapshot(path) == before
    assert siblings(path) == ["run.zarr"]
    assert ResultStore.open(path).done_regions() == {0, 1, 2}


def test_failed_swap_restores_the_old_store(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    before = snapshot(path)
    real_rename = os.rename

    def rename(src, dst):
        if ".inversa-tmp-" in str(src):
            raise OSError("simulated failure while moving the new template in")
        return real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        make_store(path, provenance=dict(PROVENANCE, input_digest="sha256:new"), overwrite=True)
    assert snapshot(path) == before
    assert siblings(path) == ["run.zarr"]


def test_crash_before_manifest_leaves_region_pending(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    store = make_store(path)
    start, stop = store.regions[1]
    arrays = region_arrays(start, stop)

    def crash(*args):
        raise KeyboardInterrupt("killed after the arrays, before the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_write_json_atomic", crash)
        with pytest.raises(KeyboardInterrupt):
            store.write_region(1, **arrays)
    assert store.pending_regions() == [0, 1, 2]

    record = make_store(path).write_region(1, **arrays)  # the rerun
    assert record["write_count"] == 1
    assert store.done_regions() == {1}
    np.testing.assert_array_equal(xr.open_zarr(path)["mean"].values[start:stop], arrays["mean"])


def test_crash_midway_through_the_arrays_leaves_region_pending(tmp_path, monkeypatch):
    store = make_store(tmp_path / "run.zarr")
    start, stop = store.regions[0]
    real_setitem = zarr.Array.__setitem__
    calls = []

    def setitem(self, key, value):
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between two variables")
        return real_setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    with pytest.raises(KeyboardInterrupt):
        store.write_region(0, **region_arrays(start, stop))
    assert len(calls) == 2
    assert store.pending_regions() == [0, 1, 2]
    assert list((store.path / "_inversa" / "regions").iterdir()) == []


def test_unreadable_manifest_entry_is_not_done(tmp_path):
    path = tmp_path / "run.zarr"
    store = make_store(path)
    write_all(store)
    (path / "_inversa" / "regions" / "0.json").write_text('{"index": 0, "sta')  # torn write
    (path / "_inversa" / "regions" / "2.json").write_text(json.dumps({"index": 2, "start": 0, "stop": 1}))
    assert store.done_regions() == {1}
    assert store.pending_regions() == [0, 2]
    with pytest.raises(StoreError, match="region 0 is not recorded as done"):
        store.region_record(0)


def test_rewrite_is_idempotent_and_counts_writes(tmp_path):
    path = tmp_path / "run.zarr"
    store = make_store(path)
    write_all(store)
    first = {name: xr.open_zarr(path)[name].values for name in expected_full()}
    start, stop = store.regions[1]
    store.write_region(1, **region_arrays(start, stop), info={"nfe": 99})
    store.write_region(1, **region_arrays(start, stop), info={"nfe": 100})

    second = xr.open_zarr(path)
    for name, values in first.items():
        np.testing.assert_array_equal(second[name].values, values, err_msg=name)
    assert store.region_record(0)["write_count"] == 1
    record = store.region_record(1)
    assert record["write_count"] == 3
    assert record["info"] == {"nfe": 100}
    assert (record["start"], record["stop"]) == (2, 4)
    assert record["write_seconds"] >= 0 and record["completed_at"].endswith("+00:00")
    assert store.region_record(2)["info"] == {"nfe": 9, "seconds": 0.5}


def test_concurrent_thread_writes_equal_sequential(tmp_path):
    sequential = make_store(tmp_path / "sequential.zarr", n_slices=12, slice_coord=None)
    write_all(sequential)

    parallel = make_store(tmp_path / "parallel.zarr", n_slices=12, slice_coord=None)
    jobs = [(i, region_arrays(s, e)) for i, (s, e) in enumerate(parallel.regions)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda job: parallel.write_region(job[0], **job[1]), reversed(jobs)))

    assert parallel.done_regions() == set(range(6))
    a, b = sequential.to_xarray(), parallel.to_xarray()
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        assert not np.isnan(b[name].values).any(), name


_WORKER = """
import sys, numpy as np
from inversa.data.store import ResultStore
store = ResultStore.open(sys.argv[1])
for index in map(int, sys.argv[2:]):
    start, stop = store.regions[index]
    n = stop - start
    value = np.full((n, {H}, {W}), float(index), dtype=np.float32)
    store.write_region(index, mean=value, std=value, lower=value, upper=value, info={{"pid_region": index}})
"""


def test_concurrent_process_writes(tmp_path):
    path = tmp_path / "run.zarr"
    store = make_store(path, n_slices=8, n_samples=0, with_reference=False, slice_coord=None)
    script = _WORKER.format(H=H, W=W)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), *regions], env=env)
        for regions in (["0", "2"], ["1", "3"])
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    assert store.done_regions() == {0, 1, 2, 3}
    mean = xr.open_zarr(path)["mean"].values
    np.testing.assert_array_equal(mean[:, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3])


def test_bad_region_inputs_are_named(tmp_path):
    store = make_store(tmp_path / "run.zarr")
    good = region_arrays(0, 2)
    with pytest.raises(StoreInputError, match=r"'std' has shape \(2, 5, 4\), expected \(2, 6, 4\)") as info:
        store.write_region(0, **dict(good, std=np.zeros((2, 5, 4))))
    assert "run.zarr" in str(info.value) and "region 0" in str(info.value)
    with pytest.raises(StoreInputError, match=r"'samples'.*expected \(3, 2, 6, 4\)"):
        store.write_region(0, **dict(good, samples=np.zeros((2, 2, 6, 4))))
    with pytest.raises(StoreInputError, match="'samples' is required"):
        store.write_region(0, **dict(good, samples=None))
    with pytest.raises(StoreInputError, match="metric 'ssim' was not declared"):
        store.write_region(0, **dict(good, metrics={"ssim": np.zeros(2)}))
    with pytest.raises(StoreInputError, match="out of range"):
        store.write_region(3, **good)
    with pytest.raises(StoreInputError, match=r"info\['device'\]"):
        store.write_region(0, **good, info={"device": object()})
    assert store.done_regions() == set()  # nothing recorded by a refused write
    assert np.isnan(store.to_xarray()["mean"].values).all()  # and nothing written


def test_provenance_needs_both_digests(tmp_path):
    incomplete = {k: v for k, v in PROVENANCE.items() if k != "input_digest"}
    with pytest.raises(StoreInputError, match=r"provenance\['input_digest'\]"):
        make_store(tmp_path / "run.zarr", provenance=incomplete)
    assert list(tmp_path.iterdir()) == []


def test_summary_goes_into_attrs(tmp_path):
    path = tmp_path / "run.zarr"
    store = make_store(path)
    write_all(store)
    store.write_summary({"psnr": np.float64(31.5), "coverage": 0.88, "undefined": float("nan")},
                        report={"regions": 3, "seconds": [1.0, 2.0]})
    ds = xr.open_zarr(path)
    assert ds.attrs["summary_metrics"] == {"psnr": 31.5, "coverage": 0.88, "undefined": None}
    assert ds.attrs["report"] == {"regions": 3, "seconds": [1.0, 2.0]}
    assert ds.attrs["provenance"] == PROVENANCE
    np.testing.assert_array_equal(ds["mean"].values, expected_full()["mean"])
    assert ResultStore.open(path).summary == {"psnr": 31.5, "coverage": 0.88, "undefined": None}
    json.loads((path / "zarr.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_store_handle_pickles_for_worker_processes(tmp_path):
    store = make_store(tmp_path / "run.zarr")
    clone = pickle.loads(pickle.dumps(store))
    start, stop = clone.regions[0]
    clone.write_region(0, **region_arrays(start, stop))
    assert store.done_regions() == {0}


def test_concurrent_creates_agree_on_one_store(tmp_path):
    """Workers that all call create for the same run end up sharing one template."""
    path = tmp_path / "run.zarr"
    with ThreadPoolExecutor(max_workers=3) as pool:
        stores = list(pool.map(lambda _: make_store(path), range(3)))
    assert {s.path for s in stores} == {path}
    assert siblings(path) == ["run.zarr"]
    assert ResultStore.open(path).provenance == PROVENANCE


@pytest.mark.parametrize("fault", ["deleted", "truncated", "flipped"])
def test_damaged_chunks_are_found_and_a_rewrite_repairs_them(tmp_path, fault):
    store = make_store(tmp_path / "s.zarr")
    write_all(store)
    assert store.damaged_regions() == {} and store.pending_regions() == []
    chunk = tmp_path / "s.zarr" / "mean" / "c" / "1" / "0" / "0"  # region 1's mean
    payload = chunk.read_bytes()
    if fault == "deleted":
        chunk.unlink()
    elif fault == "truncated":
        chunk.write_bytes(payload[:-3])
    else:  # same size, one byte changed: only the contents check sees it
        chunk.write_bytes(payload[:-1] + bytes([payload[-1] ^ 0xFF]))
    damaged = ResultStore.open(tmp_path / "s.zarr").damaged_regions()
    assert list(damaged) == [1] and "mean/c/1/0/0" in damaged[1]
    assert {"deleted": "missing", "truncated": "bytes", "flipped": "checksum"}[fault] in damaged[1]
    assert store.pending_regions() == [1] and store.done_regions() == {0, 1, 2}
    assert store.intact_regions() == {0, 2} and store.intact_regions([1, 2]) == {2}
    # The cheap check (sizes only) sees deletion and truncation, not a flipped byte.
    assert store.pending_regions(contents=False) == ([] if fault == "flipped" else [1])
    # Writing the region again makes it whole.
    start, stop = store.regions[1]
    store.write_region(1, **region_arrays(start, stop), info={"nfe": 8, "seconds": 0.5})
    assert store.damaged_regions() == {} and store.pending_regions() == []
    for name, want in expected_full().items():
        np.testing.assert_array_equal(xr.open_zarr(tmp_path / "s.zarr")[name].values, want, err_msg=name)


def test_every_chunk_of_a_region_is_checksummed(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    write_all(store)
    chunks = store.region_record(0)["chunks"]
    # mean, std, lower, upper, reference, two metrics, and one chunk per sample.
    assert len(chunks) == 5 + 2 + N_SAMPLES
    assert {name.split("/")[0] for name in chunks} == {"mean", "std", "lower", "upper", "reference", "samples",
                                                       "metric_psnr", "metric_coverage"}
    assert all(v is not None for v in chunks.values())
    for name in chunks:  # each is a real file of the store, and they are all region 0's
        assert (tmp_path / "s.zarr" / name).is_file()
        assert name.split("/c/")[1].split("/")[1 if name.startswith("samples") else 0] == "0"
