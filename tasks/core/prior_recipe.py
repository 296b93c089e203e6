"""Prior recipes: the YAML files that say how a diffusion prior is trained (`inversa train-prior`).

A separate schema from reconstruction recipes because the two share nothing but the loading
rules (a shipped name or a path, `--set` overrides, every typo an error). The architecture,
training and data blocks are checked against the classes that will consume them, so a wrong
key fails before Prefect starts, not at the first training step. Defaults are filled in by the
model, never by `model_dump`-ing nested dicts: the run directory's digest is taken over the
blocks as written, so the same YAML always resumes the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inversa.data.image_sets import image_set
from inversa.models.priors.training import TrainingConfig
from inversa.models.priors.families import FAMILY_NAMES, family
from inversa.tasks.core.recipe import RecipeError, read_recipe_fields


def check_training_blocks(data: dict[str, Any], architecture: dict[str, Any], training: dict[str, Any],
                          family_name: str = "diffusion") -> None:
    """Fail on a recipe's data, architecture or training block before any training starts.

    Raises ``ValueError`` naming the block and key (a ``TypeError`` from a dataclass would not
    survive recipe validation as a readable message).
    """
    try:
        images = image_set(dict(data))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data: {exc}") from None
    for key, value in (("image_size", images.image_size), ("in_channels", images.channels)):
        given = architecture.get(key)
        if given is not None and given != value:
            raise ValueError(f"architecture.{key} {given} differs from the data's {key} {value}; "
                             f"leave it out (it is taken from the data)")
    try:
        family(family_name).architecture.from_dict({**architecture, "image_size": images.image_size,
                                                    "in_channels": images.channels})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"architecture: {exc}") from None
    unknown = set(training) - set(TrainingConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"training: unknown keys {sorted(unknown)}; known: {sorted(TrainingConfig.__dataclass_fields__)}")
    try:
        TrainingConfig(**training)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"training: {exc}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalisation(_Strict):
    """The network sees ``(x - offset) / scale``: choose them to map the data to about [-0.5, 0.5]."""

    offset: float
    scale: float = Field(gt=0)


class SamplingRange(_Strict):
    """Noise levels a sampler runs over by default, in the network's normalised units."""

    sigma_min: float = Field(default=0.002, gt=0)
    sigma_max: float = Field(default=80.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "SamplingRange":
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min {self.sigma_min} must be below sigma_max {self.sigma_max}")
        return self


class PriorRecipe(_Strict):
    name: str
    description: str = ""
    # What kind of network the recipe trains (models/priors/families.py); the architecture block
    # is that family's configuration (a U-Net's for diffusion and flow matching, a VAE's for vae/hvae).
    family: Literal[FAMILY_NAMES] = "diffusion"
    data: dict[str, Any] = Field(default_factory=lambda: {"source": "phantoms"})
    normalisation: Normalisation
    sigma_data: float = Field(default=0.5, gt=0)
    architecture: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    sampling: SamplingRange = Field(default_factory=SamplingRange)
    checkpoint_every: int = Field(default=250, ge=1)
    preview_every: int = Field(default=4, ge=0, description="checkpoints between previews; 0: only at the end")
    output: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _blocks_fit_their_consumers(self) -> "PriorRecipe":
        check_training_blocks(self.data, self.architecture, self.training, self.family)
        if self.output is not None and not self.output.strip():
            raise ValueError("output is empty")
        return self


def _problem(err: dict) -> str:
    message = err["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {message}" if where else message


def load_prior_recipe(name_or_path: str | Path | dict | PriorRecipe, overrides: list[str] | None = None,
                      output: str | Path | None = None) -> PriorRecipe:
    """Read, override and validate a prior recipe; ``output`` wins over the recipe's when given."""
    if isinstance(name_or_path, PriorRecipe):
        if not overrides and output is None:
            return name_or_path
        name_or_path = name_or_path.model_dump()
    raw, source = read_recipe_fields(name_or_path, overrides, "prior recipe")
    if output is not None:
        raw["output"] = str(output)
    try:
        return PriorRecipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        hint = "" if "method" not in raw else " (this looks like a reconstruction recipe: use `inversa run`)"
        raise RecipeError(f"{source}: invalid prior recipe: {problems}{hint}") from None
