"""The CT recipe: a sinogram file in, a posterior on an image grid out.

Its fields are the ones CT recipes had before problem kinds existed, with the same defaults, so
a CT store's recipe digest does not move (tests/flows/test_recipe.py keeps the shipped recipes'
digests as golden values).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from inversa.tasks.core.recipe import MethodSpec, PosteriorRecipe, StrictModel
from inversa.tasks.kinds.ct.methods import coerce_method_params, method_names, uses_prior

FIELD_GRID_KEYS = ("extent", "spacing", "shape", "padding", "mask")
MIN_GRID, MAX_GRID = 8, 8192  # pixels per side, wherever the size comes from (recipe or input attrs)


class GridSpec(StrictModel):
    """The output image grid; left out, it is the measurement's default (data.schema.default_grid)."""

    size: int | None = Field(default=None, ge=MIN_GRID, le=MAX_GRID)
    pixel_size_mm: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _not_a_field_grid(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in FIELD_GRID_KEYS):
            raise ValueError("extent, spacing, shape, padding and mask are for kind: field; "
                             "a CT grid takes size and pixel_size_mm")
        return data


class CTRecipe(PosteriorRecipe):
    FOREIGN: ClassVar[dict[str, str]] = {
        name: "only for kind: field recipes" for name in ("observations", "holdout", "variable")
    }

    # Three simulated pairs of a quarter of the run's draws (48 tiles as conformal units): for a
    # batch of eight one-slice datasets sharing a scanner, under a fifth of their posterior time.
    DEFAULT_CALIBRATION_PAIRS: ClassVar[int] = 3

    kind: Literal["ct"] = "ct"
    format: str | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)
    angular_range_deg: float | None = Field(default=None, gt=0, le=360)
    start_angle_deg: float = 0.0
    view_step: int = Field(default=1, ge=1)
    grid: GridSpec = Field(default_factory=GridSpec)
    # The grid a method without a prior of its own solves on (a trained prior fixes its grid);
    # the result is resampled to ``grid``. A dense posterior (``gaussian``) on the 512 x 512 grid
    # of HTC2022 needs hours; on 128 x 128 over the same field of view, seconds. Left out: ``grid``.
    working_grid: GridSpec | None = None

    @model_validator(mode="after")
    def _working_grid_without_prior(self) -> "CTRecipe":
        if self.working_grid is not None and uses_prior(self.method.name):
            raise ValueError(f"working_grid: method {self.method.name!r} works on its prior's grid; "
                             "leave working_grid out (or train a prior on the grid you want)")
        return self

    def digest_payload(self) -> dict[str, Any]:
        """Without a working grid the digest is what it was before recipes could set one."""
        payload = super().digest_payload()
        if payload.get("working_grid") is None:
            payload.pop("working_grid", None)
        return payload

    @field_validator("method")
    @classmethod
    def _known_method(cls, spec: MethodSpec) -> MethodSpec:
        if spec.name not in method_names():
            raise ValueError(f"unknown method {spec.name!r}; expected one of {', '.join(method_names())}")
        return MethodSpec(name=spec.name, params=coerce_method_params(spec.name, spec.params))
