"""Messages for inputs that cannot be used name the file and say what is wrong in the user's words."""

from __future__ import annotations

import numpy as np
import pytest

from inversa.data.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from inversa.data.errors import InvalidGrid, MissingFile
from inversa.data.readers.sniff import require_exists


def test_a_symbolic_link_loop_and_a_broken_link_are_named_as_such(tmp_path):
    loop = tmp_path / "scan.nc"
    loop.symlink_to(tmp_path / "other.nc")
    (tmp_path / "other.nc").symlink_to(loop)
    with pytest.raises(MissingFile, match=r"scan\.nc: .*got a loop of symbolic links"):
        require_exists(loop)
    broken = tmp_path / "broken.nc"
    broken.symlink_to(tmp_path / "gone.nc")
    with pytest.raises(MissingFile, match=r"broken\.nc: .*a symbolic link to .*gone\.nc, which does not exist"):
        require_exists(broken)
    with pytest.raises(MissingFile, match="nothing at that path"):
        require_exists(tmp_path / "absent.nc")


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    save_checkpoint(tmp_path / "prior", {"w": np.ones(4, dtype=np.float32)}, {"name": "p"})
    weights = tmp_path / "prior.safetensors"
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"prior\.safetensors: contents do not match"):
        load_checkpoint(tmp_path / "prior")
    with pytest.raises(CheckpointError, match=r"prior\.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path / "prior", verify=False)


def test_collinear_stations_say_so_instead_of_qhull_text():
    from inversa.data.fields import _convex_hull

    x = np.linspace(0, 10, 6)
    with pytest.raises(InvalidGrid, match=r"sensors all on one line") as info:
        _convex_hull(x, 2 * x + 1, source="stations.csv")
    assert "stations.csv" in str(info.value) and "QH" not in str(info.value)
    with pytest.raises(InvalidGrid, match=r"2 distinct sensor position"):
        _convex_hull(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0]))


def test_an_error_found_on_data_already_read_gets_the_file_name():
    err = InvalidGrid(None, "grid.mask", "sensors spanning an area", "6 sensors all on one line")
    assert str(err).startswith("<in-memory dataset>")
    named = err.naming("stations.csv")
    assert type(named) is InvalidGrid and str(named).startswith("stations.csv: variable 'grid.mask'")
    assert err.naming(None) is err
