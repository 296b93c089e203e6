"""Real brain anatomy for MRI studies and priors: the MNI152 T1 template shipped inside nilearn.

No MR image set can be downloaded at run time, but the ``nilearn`` wheel carries the ICBM 2009a
symmetric T1 template (197 x 233 x 189 voxels of 1 mm, uint8) as package data. Its axial slices
are real brain anatomy (grey and white matter, ventricles, skull-stripped) at realistic contrast:
the magnitude images the simulated MRI studies and the shipped MR prior are made from.

The file is located without importing nilearn (whose import pulls in scikit-learn) and read
with nibabel. Slices are returned as float32 in [0, 1] (the template's 0..255), axial, with the
anterior direction up (rows: posterior -> anterior flipped so that the nose is at row 0).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from inversa.data.errors import InvalidMeasurement

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
VOXEL_MM = 1.0


def template_path() -> Path:
    """The T1 template file inside the installed nilearn package."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidMeasurement("nilearn", "mni152 template",
                                 "the nilearn package installed (it ships the MNI152 T1 template)", "not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE
    if not path.is_file():
        raise InvalidMeasurement(str(path), "mni152 template", f"the file {TEMPLATE} shipped with nilearn", "absent")
    return path


@lru_cache(maxsize=1)
def t1_volume() -> np.ndarray:
    """The template as float32 ``(z, y, x)`` in [0, 1]: axial slices first, anterior at row 0."""
    import nibabel  # a dependency of this module only: CT and field runs never read NIfTI

    volume = np.asarray(nibabel.load(str(template_path())).dataobj, dtype=np.float32) / 255.0
    # NIfTI voxel order here is (x: left->right, y: posterior->anterior, z: inferior->superior).
    return np.ascontiguousarray(volume.transpose(2, 1, 0)[:, ::-1, :])


def brain_slices(min_brain_fraction: float = 0.15) -> np.ndarray:
    """Axial slices ``(n, 233, 197)`` in which brain covers at least ``min_brain_fraction`` of the
    image (the outermost slices are mostly background): about 130 of the 189."""
    volume = t1_volume()
    covered = (volume > 0.1).mean(axis=(1, 2))
    return volume[covered >= min_brain_fraction]
