"""The built wheel works outside the checkout: the shipped recipes, prior and cluster specs are
package data, and nothing named `data` or `tasks` lands in site-packages.

The wheel is built from this checkout and installed (without dependencies) into a fresh virtual
environment in a temporary directory; that environment finds the dependencies of this test run
through a ``.pth`` line (installing torch and Prefect anew would take minutes and the network),
which adds their directory to ``sys.path`` without running the checkout's editable-install hook.
Every command then runs from another temporary directory, so nothing can come from the source
tree by accident: the test also checks that ``inversa`` is imported from the fresh environment.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, inversa script, a working directory outside the checkout) of a fresh environment."""
    root = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
                  str(REPO)], cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((root / "dist").glob("inversa-*.whl"))
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root).stdout.strip())
    deps = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (purelib / "_inversa_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    done = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                 str(wheel)], cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    work = root / "elsewhere"
    work.mkdir()
    return python, venv / "bin" / "inversa", work, wheel


def test_the_wheel_holds_one_namespace_and_the_resources(installed):
    *_, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"inversa"}
    for resource in ("inversa/recipes/ct-fbp.yaml", "inversa/recipes/field-gp.yaml",
                     "inversa/priors/htc-discs-64/prior.json", "inversa/priors/htc-discs-64/prior.safetensors",
                     "inversa/priors/mri-brain-64/prior.json", "inversa/priors/mri-brain-64/prior.safetensors",
                     "inversa/priors/htc-discs-128/prior.safetensors", "inversa/recipes/htc2022-gaussian.yaml",
                     "inversa/recipes/prior-htc-discs-hvae.yaml", "inversa/recipes/ct-vble.yaml",
                     "inversa/priors/htc-discs-hvae-64/prior.safetensors", "inversa/priors/htc-discs-flow-64/prior.json",
                     "inversa/recipes/ct-flowdps.yaml", "inversa/recipes/htc2022-vble.yaml", "inversa/recipes/mri-vble.yaml",
                     "inversa/priors/mri-brain-hvae-64/prior.safetensors",
                     "inversa/priors/mri-brain-flow-64/prior.safetensors", "inversa/recipes/mri-flowdps.yaml",
                     "inversa/recipes/mri-dds.yaml", "inversa/deploy/dask/local.py",
                     "inversa/tasks/kinds/ct/__init__.py", "inversa/tasks/kinds/field/__init__.py",
                     "inversa/tasks/kinds/mri/__init__.py"):
        assert resource in names, resource


def test_the_installed_package_runs_ct_and_field_recipes_outside_the_checkout(installed):
    python, inversa, work, _ = installed
    where = _run([str(python), "-c", "import inversa, inversa.data, inversa.resources as r; "
                  "print(inversa.data.__file__); print(r.priors_dir())"], cwd=work)
    assert where.returncode == 0, where.stderr
    module_file, priors = where.stdout.split()
    assert str(python.parents[1]) in module_file and str(REPO) not in module_file
    assert str(python.parents[1]) in priors
    for name in ("data", "tasks", "models", "flows"):
        bare = _run([str(python), "-c", f"import {name}"], cwd=work)
        assert bare.returncode != 0 and "ModuleNotFoundError" in bare.stderr, (name, bare.stdout)

    simulate = ("from inversa.data.synthetic import write_study; import numpy as np; "
                "write_study('.', name='scan', kind='htc-discs', n_slices=2, image_size=32, pixel_size_mm=2.4, "
                "geometry={'geometry': 'parallel', 'n_det': 48, 'detector_spacing_mm': 1.6}, "
                "angles=np.linspace(0, np.pi, 30, endpoint=False), noise={'model': 'gaussian', 'relative_sigma': 0.01}, "
                "seed=1)")
    assert _run([str(python), "-c", simulate], cwd=work).returncode == 0
    check = _run([str(inversa), "check", "ct-fbp", "--input", "scan.nc"], cwd=work)
    assert check.returncode == 0 and "2 slice(s)" in check.stdout, check.stdout + check.stderr
    # The shipped prior resolves from the installed package data.
    dds = _run([str(inversa), "check", "ct-dds", "--input", "scan.nc", "--json"], cwd=work)
    assert dds.returncode == 0, dds.stderr
    assert str(python.parents[1]) in json.loads(dds.stdout)["plan"]["prior"]["path"]

    ct = _run([str(inversa), "run", "ct-fbp", "--input", "scan.nc", "--reference", "scan_truth.nc",
               "--output", "ct.zarr"], cwd=work)
    assert ct.returncode == 0, ct.stdout + ct.stderr
    assert json.loads(ct.stdout)["regions_done"] == 1 and json.loads(ct.stdout)["psnr"] > 15

    study = _run([str(inversa), "field-study", "darcy", "--output", "darcy.nc", "--set", "n=9",
                  "--set", "n_sensors=30"], cwd=work)
    assert study.returncode == 0, study.stderr
    field = _run([str(inversa), "run", "field-gp", "--input", "darcy.nc", "--reference", "darcy_truth.nc",
                  "--output", "field.zarr", "--set", "method.params.max_iter=10"], cwd=work)
    assert field.returncode == 0, field.stdout + field.stderr
    assert json.loads(field.stdout)["regions_done"] == 1
    show = _run([str(inversa), "show", "field.zarr", "--json", "--png", "field.png"], cwd=work)
    assert show.returncode == 0 and (work / "field.png").read_bytes()[:4] == b"\x89PNG", show.stderr

    spec = _run([str(python), "-c", "from inversa.flows.task_runners import load_cluster_spec; "
                 "print(callable(load_cluster_spec('local')))"], cwd=work)
    assert spec.stdout.strip() == "True", spec.stderr
