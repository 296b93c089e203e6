"""Checkpoint files: round trip, damaged or foreign files are named in the error, saves are atomic."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import inversa.data.checkpoints as checkpoints
from inversa.data.checkpoints import CheckpointError, checkpoint_paths, load_checkpoint, read_config, save_checkpoint



def _tensors(scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "ema.net.stem.weight": (scale * rng.standard_normal((8, 1, 3, 3))).astype(np.float32),
        "optim.0.step": np.array([12.0], np.float32),
        "optim.0.exp_avg": rng.standard_normal(5).astype(np.float64),
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
    }


def test_round_trip_keeps_arrays_dtypes_and_config(tmp_path):
    tensors = _tensors()
    config = {"name": "tiny", "architecture": {"channels": [8, 16]}, "completed_steps": 3, "history": [{"step": 3, "loss": 0.5}]}
    meta = save_checkpoint(tmp_path / "run" / "prior", tensors, config)
    assert meta == tmp_path / "run" / "prior.json" and (tmp_path / "run" / "prior.safetensors").is_file()
    arrays, loaded = load_checkpoint(tmp_path / "run" / "prior.safetensors")
    assert arrays.keys() == tensors.keys()
    for name, value in tensors.items():
        assert arrays[name].dtype == value.dtype and np.array_equal(arrays[name], value), name
    for key, value in config.items():
        assert loaded[key] == value
    assert loaded["format"] == "inversa-checkpoint" and loaded["weights"] == "prior.safetensors"
    assert len(loaded["weights_sha256"]) == 64
    assert read_config(meta) == loaded
    # No temporary files are left beside the checkpoint.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["prior.json", "prior.safetensors"]


def test_checkpoint_paths_accept_any_of_the_three_spellings(tmp_path):
    expected = (tmp_path / "last.safetensors", tmp_path / "last.json")
    for spelling in ("last", "last.json", "last.safetensors"):
        assert checkpoint_paths(tmp_path / spelling) == expected


def test_corrupt_tensor_file_is_named(tmp_path):
    save_checkpoint(tmp_path / "prior", _tensors(), {"name": "tiny"})
    weights = tmp_path / "prior.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF  # one flipped bit pattern in the last tensor's data
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"prior\.safetensors.*sha256"):
        load_checkpoint(tmp_path / "prior")


def test_foreign_json_is_refused(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"architecture": {}, "note": "someone else's"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.json: not an inversa checkpoint"):
        load_checkpoint(tmp_path / "model")


def test_invalid_json_and_missing_files_are_named(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"broken\.json: not valid JSON"):
        read_config(tmp_path / "broken")
    with pytest.raises(CheckpointError, match=r"absent\.json: checkpoint config not found"):
        load_checkpoint(tmp_path / "absent")


def test_save_interrupted_before_the_json_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    first = _tensors(1.0)
    save_checkpoint(tmp_path / "last", first, {"completed_steps": 2})
    real_replace = os.replace

    def dying(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("simulated crash while saving the JSON")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoints.os, "replace", dying)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path / "last", _tensors(2.0), {"completed_steps": 4})
    monkeypatch.setattr(checkpoints.os, "replace", real_replace)

    arrays, config = load_checkpoint(tmp_path / "last")
    assert config["completed_steps"] == 2
    for name, value in first.items():
        assert np.array_equal(arrays[name], value), name
