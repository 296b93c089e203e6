"""The field recipe: sparse observations of a physical field in, its posterior on a grid out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from inversa.tasks.core.recipe import MethodSpec, RecipeBase, StrictModel, calibration_setting
from inversa.tasks.kinds.field.methods import field_method

CT_GRID_KEYS = ("size", "pixel_size_mm")
CT_SETTING = ("a CT setting; field recipes take input, observations, grid, mask, holdout, calibration, variable "
              "and method")
SIMULATED_PAIRS = ("a setting of calibration on simulated pairs (CT, MRI); a field run calibrates on withheld "
                   "blocks of its own observations: calibration takes blocks, fraction, steps, bands, seed, alpha")


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


class FieldCalibrationSpec(StrictModel):
    """Conformal calibration of a field run's intervals on withheld spatial blocks of its own
    observations (tasks/kinds/field/calibration.py); on by default, ``calibration: off`` skips it.

    ``blocks``: calibration units wanted, each one spatial block of withheld observations (a
    time series fitted step by step spreads them over its calibration steps); ``fraction``: the
    share of a fit's observation sites one calibration fit withholds (where that is fewer sites
    than blocks, one site per block, but never more than a quarter of the sites); ``steps``: time steps
    calibrated in a series fitted step by step (None: enough to hold ``blocks`` at one site per
    block, at least 2); ``bands``:
    std bands with a factor each (used only where each band gets enough units); ``seed``: which
    blocks; ``alpha``: the miscoverage aimed at (None: 1 - credible_level).
    """

    blocks: int = Field(default=200, ge=1, le=100000)
    fraction: float = Field(default=0.1, gt=0, le=0.5)
    steps: int | None = Field(default=None, ge=1)
    bands: int = Field(default=4, ge=1, le=32)
    seed: int = 7
    alpha: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _not_simulated_pairs(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for name in ("pairs", "samples"):
                if name in data:
                    raise ValueError(f"calibration.{name}: {SIMULATED_PAIRS}")
        return data


class FieldRecipe(RecipeBase):
    FOREIGN: ClassVar[dict[str, str]] = {
        "store_samples": "field solvers store mean, std and the interval, not samples",
        **{name: CT_SETTING for name in ("format", "reader_options", "angular_range_deg", "start_angle_deg",
                                         "view_step", "samples")},
    }

    kind: Literal["field"]
    grid: FieldGridSpec = Field(default_factory=FieldGridSpec)
    observations: ObservationSpec | None = None
    holdout: HoldoutSpec | None = None
    calibration: FieldCalibrationSpec | None = None
    mask: str | None = None
    """Which cells of a gridded input lie outside the field (land): the name of a static mask
    variable in the input, ``unobserved`` (cells without a value at any time step), or ``none``
    (ignore a mask variable the input has). Unset: a variable named like a land-sea mask, if any
    (data/readers/field_grid.py); cells merely missing are filled, never taken for land."""
    variable: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _calibration_by_default(cls, data: Any) -> Any:
        """Every field method has a posterior std, so calibration is on unless the recipe says off
        (the shared rule of tasks/core/recipe.py; an absent key means on)."""
        if not isinstance(data, Mapping):
            return data
        return {**data, "calibration": calibration_setting(data["calibration"], stochastic=True)
                if "calibration" in data else {}}

    @field_validator("mask")
    @classmethod
    def _mask_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("mask: expected a variable name of the input, unobserved or none, got an empty string")
        return value

    @property
    def calibration_alpha(self) -> float:
        """The miscoverage the calibration targets: its ``alpha``, else ``1 - credible_level`` (rounded:
        1 - 0.9 is 0.09999999999999998 in floating point, which 9 units would just fail to certify)."""
        alpha = self.calibration.alpha if self.calibration is not None else None
        return round(1.0 - self.credible_level, 12) if alpha is None else float(alpha)

    @field_validator("method")
    @classmethod
    def _known_method(cls, spec: MethodSpec) -> MethodSpec:
        return MethodSpec(name=spec.name, params=field_method(spec.name, spec.params).given)
