"""Trained priors as recipes name them: a checkpoint path becomes a network, once per process.

``models`` never touches files, so this is where a recipe's ``method.params.prior`` (a
checkpoint ``NAME``, ``NAME.json`` or a training directory) is found, identified for provenance
and digests, and loaded. Loading is cached per path, file version and device: regions running
in threads share one network (inference only: no state changes).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from inversa.data.checkpoints import CheckpointError, checkpoint_paths, load_checkpoint, read_config
from inversa.models.priors.families import family_of, prior_from_checkpoint
from inversa.resources import priors_dir

PRIOR_CHECKPOINT = "prior"  # the EMA-only checkpoint a training directory holds (tasks.core.training.PRIOR)

_prior_lock = threading.Lock()
_priors: dict[tuple, Any] = {}


class PriorNotFound(FileNotFoundError):
    """The checkpoint a recipe names is not there; the message names the field and the paths tried."""


def resolve_prior_path(path: str | Path, field: str = "method.params.prior") -> Path:
    """The checkpoint a recipe names: absolute; else a shipped prior; else under the cwd.

    ``path`` is a checkpoint (``NAME``, ``NAME.json``, ``NAME.safetensors``) or a training
    directory, whose ``prior`` checkpoint is meant. Shipped priors come first, as
    ``priors/htc-discs-64`` (how shipped recipes write it) or ``htc-discs-64``, so a shipped recipe
    works from any directory, in a checkout or an installed wheel; the cwd catches a user's own.
    """
    raw = Path(str(path)).expanduser()
    shipped = priors_dir()
    bases = [raw] if raw.is_absolute() else [shipped.parent / raw, shipped / raw, Path.cwd() / raw]
    candidates = []
    for base in bases:
        # A training run's directory names its sampling checkpoint, ``<dir>/prior``.
        for candidate in ((base / PRIOR_CHECKPOINT, base) if base.is_dir() else (base,)):
            if candidate not in candidates:
                candidates.append(candidate)
    for candidate in candidates:
        if checkpoint_paths(candidate)[1].is_file():
            return checkpoint_paths(candidate)[1].with_suffix("")
    tried = ", ".join(dict.fromkeys(str(checkpoint_paths(c)[1]) for c in candidates))
    raise PriorNotFound(
        f"recipe field {field}: prior checkpoint {str(path)!r} not found (looked for {tried}); "
        "train one with `inversa train-prior` or give the path of an existing NAME.json"
    )


def prior_record(path: str | Path) -> dict[str, Any]:
    """What identifies a prior in provenance and digests: where it is and what its weights are."""
    resolved = resolve_prior_path(path)
    config = read_config(resolved)
    data = config.get("data", {})
    return {
        "path": str(resolved),
        "weights_sha256": config.get("weights_sha256"),
        "name": config.get("name"),
        "family": family_of(config).name,
        "completed_steps": config.get("completed_steps"),
        "kind": data.get("kind"),
        "image_size": data.get("image_size"),
        "pixel_size_mm": data.get("pixel_size_mm"),
    }


def load_prior(path, device: str | torch.device = "cpu", weights: str = "ema"):
    """A prior checkpoint (``NAME``, ``NAME.json`` or ``NAME.safetensors``) of any family, ready for sampling."""
    arrays, config = load_checkpoint(path)
    try:
        return prior_from_checkpoint(arrays, config, source=str(path), device=device, weights=weights)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def load_prior_cached(path: str | Path, device: str | torch.device = "cpu"):
    """The prior at ``path`` on ``device``, loaded once per process while its files are unchanged."""
    resolved = resolve_prior_path(path)
    weights, meta = checkpoint_paths(resolved)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in (weights, meta))
    key = (str(resolved), stamp, str(torch.device(device)))
    with _prior_lock:
        prior = _priors.get(key)
        if prior is None:
            for old in [k for k in _priors if k[0] == key[0] and k[2] == key[2]]:
                del _priors[old]  # a retrained checkpoint replaces the old network
            prior = load_prior(resolved, device=device)
            _priors[key] = prior
        return prior
