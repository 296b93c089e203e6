"""Crash windows of store replacement: a process killed inside an overwrite loses nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import inversa.data.store as store_module
from inversa.data.store import StoreConflict, StoreError
from tests.data.test_store import PROVENANCE, REPO, expected_full, make_store, siblings, snapshot, write_all

NEW = dict(PROVENANCE, input_digest="sha256:new")

# Overwrite the store in a child that dies (os._exit: no handler, no cleanup, like SIGKILL) just
# before the new template is renamed into place, i.e. between the two renames of the swap.
KILLED_BETWEEN_RENAMES = """
import os, sys
import inversa.data.store as store_module
from tests.data.test_store import PROVENANCE, make_store
real_rename = os.rename
def rename(src, dst):
    if ".inversa-tmp-" in str(src):
        os._exit(9)
    return real_rename(src, dst)
store_module.os.rename = rename
make_store(sys.argv[1], provenance=dict(PROVENANCE, input_digest="sha256:new"), overwrite=True)
"""


@pytest.fixture()
def interrupted_overwrite(tmp_path):
    """A finished store whose overwrite was killed between the renames; and its files before."""
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    before = snapshot(path)
    child = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(path)], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    names = siblings(path)
    assert "run.zarr" not in names  # the window: the old store is aside, the new one not in
    assert any(n.startswith(".run.zarr.inversa-old-") for n in names)
    return path, before


def _without_leftovers(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith("run.zarr/")}


def test_rerun_of_the_old_run_gets_its_store_back(interrupted_overwrite):
    path, before = interrupted_overwrite
    with pytest.warns(UserWarning, match="interrupted overwrite"):
        store = make_store(path)
    assert store.done_regions() == {0, 1, 2}
    assert _without_leftovers(snapshot(path)) == _without_leftovers(before)
    ds = store.to_xarray()
    np.testing.assert_array_equal(ds["mean"].values, expected_full()["mean"])


def test_rerun_of_the_overwrite_replaces_the_store(interrupted_overwrite):
    path, _ = interrupted_overwrite
    with pytest.warns(UserWarning, match="interrupted overwrite"):
        store = make_store(path, provenance=NEW, overwrite=True)
    assert store.provenance["input_digest"] == "sha256:new" and store.done_regions() == set()
    assert not any(n.startswith(".run.zarr.inversa-old-") for n in siblings(path))


def test_other_run_without_overwrite_is_refused_and_the_old_store_kept(interrupted_overwrite):
    path, before = interrupted_overwrite
    with pytest.warns(UserWarning, match="interrupted overwrite"), pytest.raises(StoreConflict, match="input_digest"):
        make_store(path, provenance=NEW)
    assert _without_leftovers(snapshot(path)) == _without_leftovers(before)


def test_a_deletion_cut_short_is_never_taken_for_a_store(tmp_path, monkeypatch):
    """Killed while deleting the replaced store: what is left must not come back later."""
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    monkeypatch.setattr(store_module.shutil, "rmtree", lambda *a, **k: None)  # the deletion never happens
    make_store(path, provenance=NEW, overwrite=True)
    monkeypatch.undo()
    leftover = [n for n in siblings(path) if n.startswith(".run.zarr.inversa-old-")]
    assert len(leftover) == 1 and (tmp_path / leftover[0] / "zarr.json").exists()
    shutil.rmtree(path)  # the user deletes the new store and starts again
    store = make_store(path)
    assert store.done_regions() == set()  # a fresh store, not the half-deleted old one


def test_two_stores_set_aside_are_not_guessed_between(tmp_path):
    path = tmp_path / "run.zarr"
    write_all(make_store(path))
    shutil.copytree(path, tmp_path / ".run.zarr.inversa-old-aaaaaaaaaaaa")
    os.rename(path, tmp_path / ".run.zarr.inversa-old-bbbbbbbbbbbb")
    with pytest.raises(StoreError, match="2 stores that interrupted overwrites moved aside") as refused:
        make_store(path)
    assert "inversa-old-aaaaaaaaaaaa" in str(refused.value) and not path.exists()
