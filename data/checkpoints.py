"""Checkpoints as safetensors plus a JSON config: loading a prior never unpickles anything.

Arrays go in and come out as NumPy (``safetensors.numpy``), so this file layer needs no torch
and ``models`` never touches files; ``tasks`` turns the arrays into a network.

A checkpoint ``NAME`` is two files, ``NAME.safetensors`` (tensors only) and ``NAME.json``
(everything needed to rebuild and trust it: architecture, schedule, normalisation, training-data
digest, code version, training step). Both are written to temporary siblings and renamed, JSON
last, so a crash mid-save leaves the previous checkpoint readable and never a half-written one
that looks complete: a checkpoint exists only when its JSON does and names its tensor file's digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .errors import InvalidMeasurement

FORMAT = "inversa-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(InvalidMeasurement):
    """A checkpoint that is missing, incomplete or not ours; the message names the file."""

    def __init__(self, message: str, path=None):
        # One message that already names the file, not InvalidMeasurement's (path, variable, expected).
        ValueError.__init__(self, message)
        self.path = None if path is None else str(path)
        self.variable, self.expected, self.got = "checkpoint", message, None

    def __reduce__(self):
        return (type(self), (str(self), self.path))


def checkpoint_paths(path) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``NAME``, ``NAME.json`` or ``NAME.safetensors``."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _previous(weights: Path) -> Path:
    """Where the weights the current JSON names are kept while a save replaces them."""
    return weights.with_name(f".{weights.name}.previous")


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def save_checkpoint(path, tensors: dict[str, np.ndarray], config: dict) -> Path:
    """Write ``tensors`` and ``config`` atomically; returns the JSON path."""
    weights, meta = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    tmp_w = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
    save_file(flat, str(tmp_w))
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **config,
              "weights": weights.name, "weights_sha256": _sha256(tmp_w)}
    tmp_m = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp_m.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    # Until the JSON is replaced it names the old weights: keep them (a hard link, no copy)
    # so that a crash between the two renames leaves the previous checkpoint loadable.
    previous = _previous(weights)
    if weights.is_file() and meta.is_file():
        previous.unlink(missing_ok=True)
        os.link(weights, previous)
    _replace(tmp_w, weights)
    _replace(tmp_m, meta)
    previous.unlink(missing_ok=True)
    return meta


def read_config(path) -> dict:
    """The JSON half of a checkpoint, checked to be ours."""
    _, meta = checkpoint_paths(path)
    if not meta.is_file():
        raise CheckpointError(f"{meta}: checkpoint config not found (expected NAME.json beside NAME.safetensors)")
    try:
        config = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{meta}: not an inversa checkpoint (format {config.get('format') if isinstance(config, dict) else None!r}, expected {FORMAT!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{meta}: checkpoint format_version {config['format_version']} is newer than this inversa reads ({FORMAT_VERSION})")
    return config


def load_checkpoint(path, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """``(tensors, config)``; the tensor file's digest is checked against the config's."""
    weights, meta = checkpoint_paths(path)
    config = read_config(path)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: checkpoint weights not found (named by {meta})")
    if verify and config.get("weights_sha256") and _sha256(weights) != config["weights_sha256"]:
        previous = _previous(weights)
        if previous.is_file() and _sha256(previous) == config["weights_sha256"]:
            return load_file(str(previous)), config  # a save died between its two renames
        raise CheckpointError(f"{weights}: contents do not match the sha256 recorded in {meta.name}; the file is corrupt or from another checkpoint")
    try:
        return load_file(str(weights)), config
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types, with no file name
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
