"""Calibration pairs kept on disk, keyed by what determines them.

Simulating and reconstructing calibration pairs costs as much as reconstructing that many
slices, yet it depends only on the prior and method, the geometry (or sampling masks), the
wedge, the noise level, the grid and the calibration settings, not on which dataset is being
reconstructed. A batch of datasets sharing one geometry therefore pays once, and a rerun (or
tomorrow's batch) pays nothing. The pairs' means, stds and truths are kept, not the factor,
so a different credible level or band count reuses them too.

The cache lives in ``$INVERSA_CACHE_DIR/calibration`` (default ``~/.cache/inversa``). Entries
are written atomically; a process that finds another computing the same key waits for it
(an exclusive lock file), so two datasets of one batch never simulate the same pairs twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "INVERSA_CACHE_DIR"
NOISE_STEP = 1.25  # noise levels within this ratio share calibration pairs
ARRAYS = ("mean", "std", "truth")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "inversa")
    return Path(root) / "calibration"


def rounded_noise(level: float) -> float:
    """The noise level on a geometric grid of ratio ``NOISE_STEP`` nearest ``level``: pairs are
    simulated at the rounded level, so datasets of one scanner and protocol share them."""
    if not level > 0:
        return float(level)
    return float(NOISE_STEP ** round(math.log(level) / math.log(NOISE_STEP)))


def key_digest(key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _thread_lock(digest: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(digest, threading.Lock())


def _load(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except (OSError, ValueError, KeyError):
        return None  # unreadable or partial: computed again and replaced
    return arrays if all(name in arrays for name in ARRAYS) else None


def _save(path: Path, arrays: dict[str, np.ndarray], key: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(key, sort_keys=True, indent=1, default=str))


def cached_pairs(key: dict[str, Any], compute: Callable[[], dict[str, Any]]
                 ) -> tuple[dict[str, Any], bool]:
    """``compute()``'s arrays (``mean``, ``std``, ``truth`` and any others) for ``key``, from the
    cache when present; returns them and whether they came from the cache."""
    digest = key_digest(key)
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest}.npz"
    with _thread_lock(digest), open(directory / f"{digest}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            found = _load(path) if path.exists() else None
            if found is not None:
                return found, True
            arrays = compute()
            _save(path, {k: np.asarray(v) for k, v in arrays.items()}, key)
            return arrays, False
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
