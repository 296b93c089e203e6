"""Small simulated studies for flow and CLI tests (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inversa.data.synthetic import write_study

TINY_GEOMETRY = {"geometry": "parallel", "n_det": 48, "detector_spacing_mm": 1.6}


def tiny_study(directory: Path, n_slices: int = 4, seed: int = 7) -> tuple[Path, Path]:
    """Parallel-beam HTC-like discs, 32 x 32 pixels, 40 views over 180 degrees."""
    return write_study(
        directory,
        name="tiny",
        kind="htc-discs",
        n_slices=n_slices,
        image_size=32,
        pixel_size_mm=2.4,
        geometry=TINY_GEOMETRY,
        angles=np.linspace(0, np.pi, 40, endpoint=False),
        noise={"model": "gaussian", "relative_sigma": 0.01},
        seed=seed,
    )


def tiny_mri_study(directory: Path, n_slices: int = 2, seed: int = 3, **options) -> tuple[Path, Path]:
    """A simulated 8-coil study of MNI152 brain slices, 32 x 32, 2x undersampled, 0.5 % noise."""
    from inversa.data.synthetic_mri import write_mri_study

    settings = {"n_slices": n_slices, "matrix": (32, 32), "n_coils": 8, "acceleration": 2.0,
                "center_fraction": 0.3, "relative_noise": 0.005, "seed": seed, **options}
    return write_mri_study(directory, "brain", **settings)


def tiny_mri_prior(directory: Path, recipe_name: str = "prior-mri-brain",
                   network: tuple[str, ...] = ("architecture.attention_levels=[1]",)) -> Path:
    """A two-channel (complex) MR prior of 16 x 16 from a shipped prior recipe, trained for two steps:
    enough to run the samplers of its family."""
    from inversa.tasks.core.prior_recipe import load_prior_recipe
    from inversa.tasks.core.training import TrainingRun

    recipe = load_prior_recipe(recipe_name, ["data.image_size=16", "architecture.channels=[8,16]", *network,
                                             "training.steps=2", "training.batch_size=2"])
    run = TrainingRun(recipe, directory)
    run.train(2)
    run.save()
    return directory / "prior"
