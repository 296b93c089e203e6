"""Training a prior (any family: diffusion, flow matching, VAE) in resumable chunks: the work behind `inversa train-prior`.

A run lives in one directory: ``last.{safetensors,json}`` (network, EMA, optimiser; written at
every checkpoint) and ``prior.{safetensors,json}`` (EMA weights only: the file samplers load).
Opening a directory that holds ``last`` resumes from it, provided it was made by the same
training recipe (same digest); a different recipe is refused rather than silently mixed in.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inversa.data.checkpoints import CheckpointError, checkpoint_paths, load_checkpoint, read_config, save_checkpoint
from inversa.data.image_sets import image_set
from inversa.models.priors.families import family, family_of
from inversa.models.priors.training import Trainer, TrainingConfig
from inversa.tasks.core.prior_recipe import PriorRecipe
from inversa.tasks.core.stores import code_version

LAST, PRIOR = "last", "prior"


def training_digest(recipe: PriorRecipe) -> str:
    """What decides the weights: family, data, architecture, training, normalisation (not the
    output path). The family enters only when it is not diffusion, so the runs and priors made
    before there were families keep their digests."""
    fields = {"data", "architecture", "training", "normalisation", "sigma_data"}
    keep = recipe.model_dump(include=fields | ({"family"} if recipe.family != "diffusion" else set()))
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prior_config(recipe: PriorRecipe, images) -> dict[str, Any]:
    """The JSON half of every checkpoint of this run."""
    fam = family(recipe.family)
    arch = fam.architecture.from_dict({**recipe.architecture, "image_size": images.image_size,
                                       "in_channels": images.channels})
    return {
        "name": recipe.name,
        "kind": fam.kind,
        "architecture": arch.to_dict(),
        "sigma_data": recipe.sigma_data,
        "normalisation": recipe.normalisation.model_dump(),
        "sampling": recipe.sampling.model_dump(),
        "training": TrainingConfig(**recipe.training).to_dict(),
        "data": {**images.spec(), "digest": images.digest()},
        "recipe_digest": training_digest(recipe),
        "code_version": code_version(),
        "torch_version": torch.__version__,
    }


def _numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().to("cpu").numpy() for k, v in tensors.items()}


def _other_recipe(last: Path, saved: dict[str, Any], digest: str) -> str | None:
    """Why ``last`` cannot be resumed by the recipe of ``digest``, or None when it can."""
    if saved.get("recipe_digest") == digest:
        return None
    return (f"{last}: this directory holds a training run of another recipe "
            f"(digest {saved.get('recipe_digest')}, this recipe {digest})")


OURS = tuple(f"{name}{suffix}" for name in (LAST, PRIOR) for suffix in (".safetensors", ".json"))


def check_run_directory(recipe: PriorRecipe, output, overwrite: bool = False) -> int:
    """Steps already completed in ``output`` by this recipe (0 for a new directory).

    A run directory is resumed only when its ``last`` checkpoint was written by this very
    recipe. Anything else that holds files (another recipe's run, a shipped or copied prior
    without ``last``, a user's own files) is refused, because training into it would replace a
    checkpoint someone may have spent hours on; ``overwrite`` removes this run's file names
    (``last.*``, ``prior.*``) first and leaves other files alone. A finished run of this recipe
    is only reported on, never retrained, unless ``overwrite`` is given.
    Reads only JSON, so the command line refuses in milliseconds, before Prefect starts.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{output}: exists and is not a directory; a training run needs a directory")
    if not out.is_dir():
        return 0
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return 0
    last = checkpoint_paths(out / LAST)[1]
    problem = None
    if last.is_file():
        try:
            saved = read_config(last)
        except CheckpointError as exc:
            problem = f"{exc}"
        else:
            problem = _other_recipe(last, saved, training_digest(recipe))
            if problem is None and not overwrite:
                return int(saved.get("completed_steps", 0))
    else:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        ours = [n for n in OURS if n in present]
        problem = (f"{output}: holds {shown} but no resumable training run (last.json); training here would "
                   f"replace {', '.join(ours)}" if ours else
                   f"{output}: not empty ({shown}) and not a training run directory")
    if problem is not None and not overwrite:
        raise ValueError(f"{problem}; choose another --output, or pass --overwrite to replace it")
    for name in OURS:
        (out / name).unlink(missing_ok=True)
    return 0


class TrainingRun:
    """A trainer bound to its directory, images and loss history."""

    def __init__(self, recipe: PriorRecipe, output, device: str = "cpu"):
        self.recipe = recipe
        self.output = Path(output)
        self.images = image_set(dict(recipe.data))
        self.config = prior_config(recipe, self.images)
        self.family = family(recipe.family)
        self.norm = self.config["normalisation"]
        training = TrainingConfig(**self.config["training"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(training.seed)  # the initial weights are part of what the seed fixes
            network = self.family.build(self.config)
        loss = self.family.loss
        self.trainer = Trainer(network.to(device), training,
                               loss=lambda module, x0, generator: loss(module, x0, generator, training))
        self.history: list[dict[str, float]] = []
        self.device = device
        self.resumed_from = 0
        last = checkpoint_paths(self.output / LAST)[1]
        if last.is_file():
            self._resume(last)

    def _resume(self, last: Path) -> None:
        problem = _other_recipe(last, read_config(last), self.config["recipe_digest"])
        if problem:
            raise ValueError(f"{problem}; choose another --output, or pass --overwrite to replace it")
        tensors, saved = load_checkpoint(last)
        self.trainer.load_state_tensors({k: torch.from_numpy(v).to(self.device) for k, v in tensors.items()},
                                        saved["completed_steps"])
        self.history = list(saved.get("history", []))
        self.resumed_from = self.trainer.completed

    @property
    def completed(self) -> int:
        return self.trainer.completed

    @property
    def total(self) -> int:
        return self.trainer.config.steps

    def normalise(self, images: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(images) - self.norm["offset"]) / self.norm["scale"]

    def train(self, stop: int, on_step: Callable[[int, float], None] | None = None) -> float:
        """Train until ``stop`` steps are complete; returns the mean loss of the steps taken."""
        cfg = self.trainer.config
        losses = []
        started = time.perf_counter()
        while self.trainer.completed < min(stop, cfg.steps):
            k = self.trainer.completed
            x0 = self.normalise(self.images.batch(cfg.seed, k, cfg.batch_size))
            loss = self.trainer.step(x0)
            losses.append(loss)
            if on_step is not None:
                on_step(k + 1, loss)
        if losses:
            self.history.append({"step": self.trainer.completed, "loss": float(np.mean(losses)),
                                 "seconds": time.perf_counter() - started})
        return float(np.mean(losses)) if losses else float("nan")

    def save(self) -> Path:
        """Write ``last`` (resumable) and then ``prior`` (EMA only) for the steps completed."""
        meta = {**self.config, "completed_steps": self.trainer.completed, "history": self.history}
        save_checkpoint(self.output / LAST, _numpy(self.trainer.state_tensors(True)), meta)
        return save_checkpoint(self.output / PRIOR, _numpy(self.trainer.state_tensors(False)),
                               {**meta, "history": self.history})

    def prior(self):
        """The EMA network as samplers would use it (this family's prior, in physical units)."""
        return self.family.wrap(self.trainer.ema, self.config, str(self.output / PRIOR))


def preview_strip(prior, n: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` prior samples side by side, mapped from the training range to [0, 1].

    A fixed scale (not per-image percentiles) so that previews from successive checkpoints
    can be compared by eye.
    """
    samples = family_of(prior.config).unconditional(prior, n, seed).numpy()
    lo, hi = prior.offset - 0.5 * prior.scale, prior.offset + 0.5 * prior.scale
    if samples.ndim == 4:  # channels: a complex image (real, imaginary) is shown by its magnitude
        samples = np.sqrt(np.sum(samples ** 2, axis=1)) if samples.shape[1] == 2 else samples[:, 0]
        lo, hi = 0.0, float(np.sqrt(2) * 0.5 * prior.scale)
    strip = np.concatenate([np.pad(s, 1, constant_values=lo) for s in samples], axis=1)
    return np.clip((strip - lo) / (hi - lo), 0, 1)
