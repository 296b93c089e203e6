"""The field recipe: sparse observations of a physical field in, its posterior on a grid out."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from inversa.tasks.core.recipe import MethodSpec, RecipeBase, StrictModel
from inversa.tasks.kinds.field.methods import field_method

CT_GRID_KEYS = ("size", "pixel_size_mm")
CT_SETTING = "a CT setting; field recipes take input, observations, grid, holdout, variable and method"


class FieldGridSpec(StrictModel):
    """A field's target grid (data.fields.FieldGrid.from_spec): for scattered observations only."""

    extent: list[float] | None = Field(default=None, min_length=4, max_length=4)
    spacing: float | None = Field(default=None, gt=0)
    shape: list[int] | None = Field(default=None, min_length=2, max_length=2)
    padding: float | None = Field(default=None, ge=0)
    mask: Literal["convex-hull"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_a_ct_grid(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(data.get(k) is not None for k in CT_GRID_KEYS):
            raise ValueError("size and pixel_size_mm are CT settings; a field grid takes "
                             "extent, spacing or shape, padding, mask")
        return data

    def given(self) -> dict[str, Any]:
        """The keys the recipe set (what FieldGrid.from_spec reads)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ObservationSpec(StrictModel):
    """How to read field observations (data/readers/field_input.py)."""

    columns: dict[str, str | list[str]] | None = None
    units: str | None = None
    projection: Literal["auto", "lonlat"] | None = "auto"
    duplicates: Literal["error", "mean"] = "error"


class HoldoutSpec(StrictModel):
    """Observed points withheld from the solver to score it (tasks/kinds/field/problem.py)."""

    fraction: float = Field(gt=0, lt=1)
    seed: int = 0


class FieldRecipe(RecipeBase):
    FOREIGN: ClassVar[dict[str, str]] = {
        "calibration": ("not available for field recipes (their intervals are Gaussian posteriors; "
                        "score them with holdout: {fraction: ...})"),
        "store_samples": "field solvers store mean, std and the interval, not samples",
        **{name: CT_SETTING for name in ("format", "reader_options", "angular_range_deg", "start_angle_deg",
                                         "view_step", "samples")},
    }

    kind: Literal["field"]
    grid: FieldGridSpec = Field(default_factory=FieldGridSpec)
    observations: ObservationSpec | None = None
    holdout: HoldoutSpec | None = None
    variable: str | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, spec: MethodSpec) -> MethodSpec:
        return MethodSpec(name=spec.name, params=field_method(spec.name, spec.params).given)
