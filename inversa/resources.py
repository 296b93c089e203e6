"""Where the shipped recipes, priors and cluster specs are, in a checkout or an installed wheel.

They are package data of ``inversa.recipes``, ``inversa.priors`` and ``inversa.deploy``, found
through ``importlib.resources``: never relative to the current directory or to the source tree,
which a wheel does not have.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def _folder(package: str) -> Path:
    # The resource folders are plain directories on disk in both cases (an editable install maps
    # them to the checkout; a wheel unpacks them into site-packages), so a Path is safe to keep.
    with as_file(files(package)) as path:
        return Path(path)


def recipes_dir() -> Path:
    """The shipped YAML recipes (``ct-fbp.yaml``, ``field-gp.yaml``, ``prior-htc-discs.yaml``, ...)."""
    return _folder("inversa.recipes")


def priors_dir() -> Path:
    """The shipped prior checkpoints, one directory each (``htc-discs-64/prior.{json,safetensors}``)."""
    return _folder("inversa.priors")


def dask_specs_dir() -> Path:
    """The shipped Dask cluster specs (``local.py``, ``slurm.py``, ``dask_cuda.py``)."""
    return _folder("inversa.deploy.dask")
