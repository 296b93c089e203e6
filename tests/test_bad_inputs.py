"""Every class of bad input the command line refuses, in one table.

One row per case: how to make the bad input in a fresh directory, the command, the exit code,
words the message must contain, and the promise that nothing on disk changed (every file under
the case's directory has the bytes it had before the command). Each user error is one line on
stderr that names what is at fault and never a traceback. The counts are printed at the end
(`pytest tests/test_bad_inputs.py -s`), for the hardening issue's closing note.

Rows stay cheap: `check` wherever refusing happens at planning (what `run` does first as well),
`run` only where the refusal is run-specific (an output it must not touch).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import xarray as xr

from inversa.flows.cli import main
from inversa.resources import priors_dir
from tests.flows.helpers import tiny_mri_study, tiny_study


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path, "Study"], list[str]]  # writes the bad input under the directory, returns argv
    words: tuple[str, ...]
    code: int = 2


@dataclass(frozen=True)
class Study:
    ct: Path
    ct_truth: Path
    mri: Path


def _ct(study: Study, tmp: Path, **attrs) -> Path:
    ds = xr.load_dataset(study.ct)
    ds.attrs.update(attrs)
    path = tmp / "scan.nc"
    ds.to_netcdf(path)
    return path


def _with_sinogram(study: Study, tmp: Path, change) -> Path:
    ds = xr.load_dataset(study.ct)
    ds["sinogram"] = (ds["sinogram"].dims, change(ds["sinogram"].values.copy()))
    path = tmp / "scan.nc"
    ds.to_netcdf(path)
    return path


def _with_angles(study: Study, tmp: Path, angles) -> Path:
    ds = xr.load_dataset(study.ct).assign_coords(angle=angles)
    path = tmp / "scan.nc"
    ds.to_netcdf(path)
    return path


def _recipe(tmp: Path, text: str) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


def _zarr_input(study: Study, tmp: Path) -> Path:
    store = tmp / "scan.zarr"
    xr.load_dataset(study.ct).to_zarr(store, zarr_format=3, consolidated=True)
    return store


def _truncated_zarr_metadata(study, tmp):
    store = _zarr_input(study, tmp)
    meta = store / "sinogram" / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    return ["check", "ct-fbp", "--input", str(store)]


def _missing_zarr_chunk(study, tmp):
    store = _zarr_input(study, tmp)
    next(p for p in sorted((store / "sinogram" / "c").rglob("*")) if p.is_file()).unlink()
    return ["check", "ct-fbp", "--input", str(store)]


def _symlink_loop(study, tmp):
    (tmp / "a.nc").symlink_to(tmp / "b.nc")
    (tmp / "b.nc").symlink_to(tmp / "a.nc")
    return ["check", "ct-fbp", "--input", str(tmp / "a.nc")]


def _corrupt_prior(study, tmp):
    prior = tmp / "prior"
    shutil.copytree(priors_dir() / "htc-discs-64", prior)
    (prior / "prior.safetensors").write_bytes(b"\x00" * 128)
    return ["check", "ct-dds", "--input", str(study.ct), "--set", f"method.params.prior={prior}"]


def _mri_real_kspace(study, tmp):
    path = tmp / "kspace.npz"
    np.savez(path, kspace=np.ones((1, 2, 8, 8), dtype=np.float32))
    return ["check", "mri-cgsense", "--input", str(path)]


def _mri_zero_kspace(study, tmp):
    path = tmp / "kspace.npz"
    np.savez(path, kspace=np.zeros((1, 2, 8, 8), dtype=np.complex64))
    return ["check", "mri-cgsense", "--input", str(path)]


def _train_into_a_shipped_prior_copy(study, tmp):
    shutil.copytree(priors_dir() / "htc-discs-64", tmp / "copy")
    return ["train-prior", "prior-htc-discs", "--output", str(tmp / "copy"), "--steps", "1"]


def _output_of_another_run(study, tmp):
    out = tmp / "store.zarr"
    assert main(["run", "ct-fbp", "--input", str(study.ct), "--output", str(out)]) == 0
    return ["run", "ct-fbp", "--input", str(study.ct), "--output", str(out), "--set", "seed=9"]


def _foreign_output(study, tmp):
    (tmp / "thesis").mkdir()
    (tmp / "thesis" / "chapter1.tex").write_text("precious")
    return ["run", "ct-fbp", "--input", str(study.ct), "--output", str(tmp / "thesis"), "--overwrite"]


def _alias_bomb(study, tmp):
    lines = ["name: ct-fbp", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return ["check", str(_recipe(tmp, "\n".join(lines) + "\n")), "--input", str(study.ct)]


CASES = [
    Case("missing input", lambda s, t: ["check", "ct-fbp", "--input", str(t / "nope.nc")], ("nope.nc", "nothing at that path")),
    Case("symbolic link loop", _symlink_loop, ("a.nc", "loop of symbolic links")),
    Case("not a measurement", lambda s, t: ["check", "ct-fbp", "--input", str(_write(t / "x.nc", b"CDF\x01junk"))], ("x.nc",)),
    Case("truncated NetCDF", lambda s, t: ["check", "ct-fbp", "--input", str(_write(t / "x.nc", s.ct.read_bytes()[:3000]))], ("x.nc", "truncated")),
    Case("NaN in the sinogram", lambda s, t: ["check", "ct-fbp", "--input", str(_with_sinogram(s, t, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a)))], ("scan.nc", "sinogram", "NaN")),
    Case("all-zero sinogram", lambda s, t: ["check", "ct-fbp", "--input", str(_with_sinogram(s, t, np.zeros_like))], ("scan.nc", "sinogram", "zero")),
    Case("angles in degrees", lambda s, t: ["check", "ct-fbp", "--input", str(_with_angles(s, t, np.linspace(0, 179, 40)))], ("scan.nc", "angle", "degrees")),
    Case("angles spanning 10 rad", lambda s, t: ["check", "ct-fbp", "--input", str(_with_angles(s, t, np.linspace(0, 10, 40)))], ("scan.nc", "angle", "looks like degrees")),
    Case("repeated angles", lambda s, t: ["check", "ct-fbp", "--input", str(_with_angles(s, t, np.r_[0.0, 0.0, np.linspace(0.1, 3, 38)]))], ("scan.nc", "monotonic")),
    Case("fan beam without distances", lambda s, t: ["check", "ct-fbp", "--input", str(_ct(s, t, geometry="fan"))], ("scan.nc", "source_origin_mm")),
    Case("fan source inside the image", lambda s, t: ["check", "ct-fbp", "--input", str(_ct(s, t, geometry="fan", source_origin_mm=10.0, origin_detector_mm=100.0))], ("scan.nc", "attribute source_origin_mm")),
    Case("image_size attribute past the cap", lambda s, t: ["check", "ct-fbp", "--input", str(_ct(s, t, image_size=100000))], ("scan.nc", "image_size", "grid.size")),
    Case("zarr with truncated array metadata", _truncated_zarr_metadata, ("scan.zarr", "sinogram/zarr.json")),
    Case("zarr with a missing chunk", _missing_zarr_chunk, ("scan.zarr", "chunk files missing")),
    Case("unknown recipe", lambda s, t: ["check", "ct-fbq", "--input", str(s.ct)], ("ct-fbq", "not a shipped recipe")),
    Case("unknown method parameter", lambda s, t: ["check", "ct-fbp", "--input", str(s.ct), "--set", "method.params.filtr=hann"], ("filtr", "filter")),
    Case("misspelt recipe field", lambda s, t: ["check", "ct-fbp", "--input", str(s.ct), "--set", "grid.sise=64"], ("grid.sise", "size")),
    Case("grid too large in the recipe", lambda s, t: ["check", "ct-fbp", "--input", str(s.ct), "--set", "grid.size=100000"], ("grid.size", "8192")),
    Case("YAML alias bomb", _alias_bomb, ("recipe.yaml", "aliases")),
    Case("not YAML", lambda s, t: ["check", str(_recipe(t, "name: [unclosed\n")), "--input", str(s.ct)], ("recipe.yaml", "YAML")),
    Case("reference of the wrong shape", lambda s, t: ["check", "ct-fbp", "--input", str(s.ct), "--reference", str(_ct(s, t))], ("scan.nc",)),
    Case("corrupt prior checkpoint", _corrupt_prior, ("prior.safetensors",)),
    Case("MRI k-space that is real", _mri_real_kspace, ("kspace.npz", "kspace", "complex")),
    Case("MRI k-space all zero", _mri_zero_kspace, ("kspace.npz", "no sample")),
    Case("MRI undersampling of undersampled data", lambda s, t: ["check", "mri-cgsense", "--input", str(s.mri), "--set", "undersampling.acceleration=4"], ("already undersampled",)),
    Case("train-prior into a copied shipped prior", _train_into_a_shipped_prior_copy, ("copy", "--overwrite")),
    Case("output holding another run", _output_of_another_run, ("store.zarr", "recipe digest", "--overwrite")),
    Case("output that is not an inversa store", _foreign_output, ("thesis", "not an inversa result store")),
]


def _write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    base = tmp_path_factory.mktemp("bad-input-study")
    ct, truth = tiny_study(base / "ct", n_slices=1)
    mri, _ = tiny_mri_study(base / "mri", n_slices=1)
    return Study(ct, truth, mri)


TALLY: dict[str, int] = {"cases": 0, "refused cleanly": 0, "tracebacks": 0, "bytes changed": 0}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_with_one_clear_line_and_nothing_changed(case, study, tmp_path, capsys,
                                                                      prefect_harness):
    argv = case.make(study, tmp_path)
    shared = [study.ct, study.ct_truth, study.mri]
    before = _snapshot(tmp_path), {str(p): p.read_bytes() for p in shared}
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    after = _snapshot(tmp_path), {str(p): p.read_bytes() for p in shared}
    lines = [line for line in captured.err.splitlines() if line.startswith("inversa ")]
    TALLY["cases"] += 1
    TALLY["tracebacks"] += "Traceback" in captured.err
    changed = sum(before[0].get(k) != after[0].get(k) for k in set(before[0]) | set(after[0]))
    changed += sum(before[1][k] != after[1][k] for k in before[1])
    TALLY["bytes changed"] += changed
    assert code == case.code, captured.err
    assert len(lines) == 1 and "error:" in lines[0], captured.err
    for word in case.words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    assert "Traceback" not in captured.err
    assert changed == 0, "files changed on disk"
    TALLY["refused cleanly"] += 1


def test_zz_counts():
    """The tally of the table (run after it): every case refused cleanly, no traceback, nothing changed."""
    if TALLY["cases"] == 0:
        pytest.skip("run with the table")
    print("\nbad-input suite:", json.dumps(TALLY))
    assert TALLY["cases"] == len(CASES) and TALLY["refused cleanly"] == len(CASES)
    assert TALLY["tracebacks"] == 0 and TALLY["bytes changed"] == 0
