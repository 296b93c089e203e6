"""The command line: bad input gets one clear line and a non-zero exit, and no store is harmed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from inversa.flows.cli import main
from inversa.tasks.core.previews import FILE_DPI, PANEL_INCHES
from tests.conftest import shared_file
from tests.flows.helpers import tiny_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("cli-study"), n_slices=2)


def _fail(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code != 0, err
    assert err.startswith("inversa ") and "error:" in err and "Traceback" not in err
    return err


def _listing(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_missing_file(capsys, tmp_path):
    err = _fail(capsys, "run", "ct-fbp", "--input", str(tmp_path / "nope.nc"), "--output", str(tmp_path / "o.zarr"))
    assert "nope.nc" in err
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("name", ["htc2022/htc2022_ta_full.mat", "tomopy_tooth/tooth.h5"])
def test_truncated_files(capsys, tmp_path, name):
    source = shared_file(f"ct/{name}")
    cut = tmp_path / Path(name).name
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    err = _fail(capsys, "run", "ct-fbp", "--input", str(cut), "--output", str(tmp_path / "o.zarr"))
    assert cut.name in err
    assert not (tmp_path / "o.zarr").exists()


def _npz(tmp_path, sinogram, angles, **geometry) -> Path:
    path = tmp_path / "m.npz"
    np.savez(path, sinogram=sinogram, angles=angles, **geometry)
    return path


def test_nan_in_sinogram(capsys, tmp_path):
    sino = np.ones((1, 10, 16), np.float32)
    sino[0, 3, 4] = np.nan
    path = _npz(tmp_path, sino, np.linspace(0, np.pi, 10), geometry="parallel", detector_spacing_mm=1.0)
    err = _fail(capsys, "check", "ct-fbp", "--input", str(path))
    assert "m.npz" in err and "sinogram" in err and "finite" in err.lower()


def test_angle_count_mismatch(capsys, tmp_path):
    path = _npz(tmp_path, np.ones((1, 10, 16), np.float32), np.linspace(0, np.pi, 9),
                geometry="parallel", detector_spacing_mm=1.0)
    err = _fail(capsys, "check", "ct-fbp", "--input", str(path))
    assert "m.npz" in err and "angle" in err


def test_fan_beam_without_geometry(capsys, tmp_path):
    path = _npz(tmp_path, np.ones((1, 10, 16), np.float32), np.linspace(0, np.pi, 10),
                geometry="fan", detector_spacing_mm=1.0)
    err = _fail(capsys, "check", "ct-fbp", "--input", str(path))
    assert "m.npz" in err and "source_origin_mm" in err and "origin_detector_mm" in err


def test_unknown_method_and_parameter(capsys, study, tmp_path):
    err = _fail(capsys, "check", "ct-fbp", "--input", str(study[0]), "--set", "method.name=magic")
    assert "unknown method 'magic'" in err
    err = _fail(capsys, "check", "ct-tv", "--input", str(study[0]), "--set", "method.params.colour=red")
    assert "no parameter 'colour'" in err


def test_output_holding_another_run_is_refused_and_untouched(capsys, prefect_harness, study, tmp_path):
    out = tmp_path / "store.zarr"
    assert main(["run", "ct-fbp", "--input", str(study[0]), "--output", str(out)]) == 0
    capsys.readouterr()
    before = _listing(out)
    err = _fail(capsys, "run", "ct-fbp", "--input", str(study[0]), "--output", str(out), "--set", "seed=5")
    assert "recipe digest" in err and "--overwrite" in err
    assert _listing(out) == before
    # A directory inversa did not write is never touched, even with --overwrite.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    err = _fail(capsys, "run", "ct-fbp", "--input", str(study[0]), "--output", str(foreign), "--overwrite")
    assert "not an inversa result store" in err
    assert (foreign / "thesis.tex").read_text() == "precious"
    # With --overwrite a store of another run is replaced.
    assert main(["run", "ct-fbp", "--input", str(study[0]), "--output", str(out), "--set", "seed=5", "--overwrite"]) == 0


def test_check_prints_the_plan_and_show_prints_json(capsys, prefect_harness, study, tmp_path):
    assert main(["check", "ct-gaussian", "--input", str(study[0]), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["n_slices"] == 2 and plan["image_size"] == 32 and plan["samples"] == 16
    assert plan["estimated_memory_bytes"] > 0 and plan["estimated_storage_bytes"] > 0

    out = tmp_path / "s.zarr"
    assert main(["run", "ct-fbp", "--input", str(study[0]), "--reference", str(study[1]), "--output", str(out)]) == 0
    capsys.readouterr()
    png = tmp_path / "p.png"
    assert main(["show", str(out), "--json", "--png", str(png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"variables", "metrics", "provenance"} <= set(doc)
    assert "mean" in doc["variables"] and doc["metrics"]["mcc"] > 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a colour figure of FBP's two panels side by side (a point estimate: mean and error, no std
    # and no interval to fall outside); FBP has no calibration, so no calibration plot beside it
    image = imread(png, format="png")
    assert image.shape[1] == round(2 * PANEL_INCHES * FILE_DPI) and image.shape[0] < image.shape[1]
    assert ((image[..., :3].max(axis=-1) - image[..., :3].min(axis=-1)) > 0.3).mean() > 0.01
    assert doc["png"] == str(png.resolve()) and "calibration_png" not in doc
    assert not (tmp_path / "p-calibration.png").exists()


def test_show_writes_the_calibration_plot_beside_the_preview(capsys, tmp_path):
    from inversa.data.store import ResultStore

    store = ResultStore.create(tmp_path / "c.zarr", n_slices=1, image_shape=(6, 6), pixel_size_mm=1.0, region_size=1,
                               provenance={"recipe_digest": "sha256:r", "input_digest": "sha256:i", "kind": "ct",
                                           "method": "dds"}, with_reference=True)
    ones = np.ones((1, 6, 6), np.float32)
    store.write_region(0, mean=ones, std=ones / 10, lower=ones * 0.9, upper=ones * 1.1, reference=ones * 1.5)
    record = {"scale": 1.2, "alpha": 0.1, "credible_level": 0.9, "coverage_before": 0.8, "coverage_after": 0.9,
              "curve": {"levels": [0.5, 0.9], "before": [0.4, 0.8], "after": [0.5, 0.9]}}
    store.write_meta_json("calibration.json", record)
    png = tmp_path / "out" / "view.png"
    png.parent.mkdir()
    assert main(["show", str(store.path), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    sibling = tmp_path / "out" / "view-calibration.png"
    assert f"preview      {png.resolve()}" in out and f"calibration  {sibling.resolve()}" in out
    assert imread(sibling, format="png").shape[1] > 300
    # mean, std, error and the outside map side by side
    assert imread(png, format="png").shape[1] == round(4 * PANEL_INCHES * FILE_DPI)


def test_show_reports_a_deleted_chunk_and_a_rerun_repairs_it(capsys, prefect_harness, study, tmp_path):
    out = tmp_path / "s.zarr"
    argv = ["run", "ct-fbp", "--input", str(study[0]), "--reference", str(study[1]), "--output", str(out),
            "--set", "region_size=1"]
    assert main(argv) == 0
    capsys.readouterr()
    whole = _listing(out)
    (out / "mean" / "c" / "1" / "0" / "0").unlink()  # slice 1's mean, as a failing disk or a careless rm would
    assert main(["show", str(out)]) == 1
    shown = capsys.readouterr().out
    assert "1/2 done, 1 damaged" in shown and "region 1" in shown and "mean/c/1/0/0 is missing" in shown
    assert main(["show", str(out), "--json"]) == 1
    assert list(json.loads(capsys.readouterr().out)["regions"]["damaged"]) == ["1"]
    # The rerun recomputes only the damaged region, and the store is whole again, byte for byte.
    assert main(argv) == 0
    capsys.readouterr()
    from inversa.data.store import ResultStore

    store = ResultStore.open(out)
    assert [store.region_record(i)["write_count"] for i in range(2)] == [1, 2]
    assert main(["show", str(out)]) == 0 and "2/2 done\n" in capsys.readouterr().out
    repaired = _listing(out)
    data = [name for name in whole if "/c/" in name]  # every chunk (the report rewrites attrs)
    assert {n: repaired[n] for n in data} == {n: whole[n] for n in data}


def test_an_input_attribute_cannot_bypass_the_grid_cap(capsys, study, tmp_path):
    import xarray as xr

    ds = xr.load_dataset(study[0])
    ds.attrs["image_size"] = 100000
    bad = tmp_path / "huge.nc"
    ds.to_netcdf(bad)
    for command in ("check", "run"):
        err = _fail(capsys, command, "ct-fbp", "--input", str(bad), "--output", str(tmp_path / "o.zarr"))
        assert "huge.nc" in err and "image_size" in err and "100000" in err and "grid.size" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "o.zarr").exists()


def test_a_plan_larger_than_the_machine_is_refused_before_anything_is_written(capsys, study, tmp_path,
                                                                              monkeypatch):
    from inversa.tasks.core import limits

    out = tmp_path / "o.zarr"
    # The Gaussian posterior holds its system matrix: at 4096 x 4096 pixels, about 8 GB per worker,
    # refused on a machine with 2 GB (and by the same rule, a 100000-pixel grid anywhere).
    monkeypatch.setattr(limits, "machine_memory_bytes", lambda: 2 << 30)
    err = _fail(capsys, "check", "ct-gaussian", "--input", str(study[0]), "--set", "grid.size=4096")
    assert "per worker" in err and "this machine's 2.0 GB of memory" in err
    err = _fail(capsys, "run", "ct-gaussian", "--input", str(study[0]), "--output", str(out), "--set", "grid.size=4096")
    assert "per worker" in err and not out.exists()
    # Storage: a store that cannot fit the free space where it goes.
    plan = limits.Plan(kind="ct", dataset="d", input="in.nc", output=str(out), n_slices=1, leading_dim="slice",
                       regions=[(0, 1)], method="fbp", method_params={}, samples=1, estimated_memory_bytes=10,
                       estimated_storage_bytes=5 << 30)
    with pytest.raises(ValueError, match=r"o\.zarr: the store will take about 5\.0 GB, and only 1\.0 GB is free"):
        limits.check_fits_machine(plan, str(out), memory=1 << 40, disk=1 << 30)
    limits.check_fits_machine(plan, str(out), memory=1 << 40, disk=6 << 30)


def test_a_yaml_alias_bomb_is_refused_at_once(capsys, tmp_path):
    import time

    lines = ["name: ct-fbp", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    err = _fail(capsys, "check", str(bomb), "--input", "x.nc")
    assert time.perf_counter() - started < 5 and "bomb.yaml" in err and "aliases" in err
    levels = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    err = _fail(capsys, "check", "ct-fbp", "--input", "x.nc", "--set", f"method.params.cutoff=[{', '.join(levels)}]")
    assert "--set method.params.cutoff" in err and "aliases" in err
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: ct-fbp\n" + "# padding\n" * 200_000)
    assert "at most" in _fail(capsys, "check", str(huge), "--input", "x.nc")


LAUNCH_FAILING = """
import sys
import inversa.tasks.kinds.ct.region as ct_region
from inversa.flows.cli import main

def failing(*args, **kwargs):
    raise {error}

ct_region.setup_for = failing
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("error, traceback_shown", [
    ("OSError(28, 'No space left on device')", False),  # the disk is full: the user's to fix
    ("TypeError('unsupported operand')", True),  # a bug in inversa: the traceback is the report
])
def test_user_errors_in_a_run_print_no_traceback_bugs_do(study, tmp_path, error, traceback_shown):
    """A real `inversa run` whose region fails: Prefect's own log lines show a traceback only for a bug."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["INVERSA_HOME"] = str(tmp_path / "home")
    child = subprocess.run([sys.executable, "-c", LAUNCH_FAILING.format(error=error), "run", "ct-fbp", "--input",
                            str(study[0]), "--output", str(tmp_path / "o.zarr")],
                           env=env, capture_output=True, text=True, timeout=300)
    err = child.stderr
    assert child.returncode != 0
    said = [line for line in err.splitlines() if line.startswith("inversa run: error:")]
    assert len(said) == 1 and error.split("'")[1] in said[0], err[-3000:]
    assert ("Traceback" in err) is traceback_shown, err[-3000:]


def test_which_errors_are_the_users():
    from inversa.data.errors import InvalidMeasurement
    from inversa.flows.quiet_errors import is_user_error
    from inversa.flows.reconstruct import RegionsFailed
    from inversa.tasks.pipeline import RegionFailed

    def chained(cause):
        region = RegionFailed("region 0 failed", "s.zarr", 0)
        region.__cause__ = cause
        run = RegionsFailed("1 of 1 regions failed")
        run.__cause__ = region
        return run

    assert is_user_error(InvalidMeasurement("a.nc", "sinogram", "finite values"))
    assert is_user_error(PermissionError(13, "Permission denied")) and is_user_error(OSError(30, "Read-only"))
    assert is_user_error(chained(ValueError("bad input"))) and is_user_error(chained(OSError(28, "full")))
    assert not is_user_error(chained(TypeError("bug"))) and not is_user_error(KeyError("x"))
    assert not is_user_error(None)


def test_a_long_message_keeps_both_ends_of_a_long_path():
    from inversa.flows.cli import MAX_MESSAGE, one_line

    path = "/data/" + "very-long-directory-name/" * 400 + "scan.nc"
    message = one_line(f"{path}: variable 'sinogram': expected finite values,\n  got 3 NaN")
    assert message.endswith("scan.nc: variable 'sinogram': expected finite values, got 3 NaN")
    assert message.startswith("/data/very-long") and len(message) < MAX_MESSAGE + 100 and "\n" not in message
    short = "/a/b.nc: variable 'x': expected y"
    assert one_line(short) == short


def test_geometry_errors_name_the_file_and_the_attribute(capsys, tmp_path):
    import xarray as xr

    from tests.flows.helpers import tiny_study

    measurement, _ = tiny_study(tmp_path / "s", n_slices=1)
    ds = xr.load_dataset(measurement)
    ds.attrs.update(geometry="fan", source_origin_mm=10.0, origin_detector_mm=100.0)
    bad = tmp_path / "fan.nc"
    ds.to_netcdf(bad)
    err = _fail(capsys, "check", "ct-fbp", "--input", str(bad))
    assert "fan.nc" in err and "attribute source_origin_mm" in err and "CTGeometry" not in err
    assert "np.float64" not in err


def test_disk_full_mid_run_then_freed_resumes_to_the_uninterrupted_store(capsys, prefect_harness, study, tmp_path,
                                                                         monkeypatch):
    """The disk fills while a region is being recorded (its arrays written, its manifest entry not):
    the run fails with one line saying so, the finished regions stay, and once space is freed the
    same command resumes to the store an uninterrupted run writes."""
    import errno

    import xarray as xr

    import inversa.data.store as store_module

    argv = ["run", "ct-gaussian", "--input", str(study[0]), "--output", str(tmp_path / "s.zarr"),
            "--set", "region_size=1", "--set", "samples=4"]
    real = store_module._write_json_atomic
    full = {"on": True}

    def write_json(path, obj):
        if full["on"] and path.name == "1.json" and path.parent.name == "regions":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(store_module, "_write_json_atomic", write_json)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and err.count("inversa run: error:") == 1
    assert "Traceback" not in err
    from inversa.data.store import ResultStore

    assert ResultStore.open(tmp_path / "s.zarr").done_regions() == {0}
    full["on"] = False  # space freed
    assert main(argv) == 0
    assert main([*argv[:5], str(tmp_path / "straight.zarr"), *argv[6:]]) == 0
    capsys.readouterr()
    got, want = xr.open_zarr(tmp_path / "s.zarr"), xr.open_zarr(tmp_path / "straight.zarr")
    for name in ("mean", "std", "lower", "upper"):
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
