"""The MRI recipe: multi-coil (or single-coil) k-space in, a posterior magnitude image per slice out."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from inversa.tasks.core.recipe import MethodSpec, PosteriorRecipe, StrictModel
from inversa.tasks.kinds.mri.methods import MRI_METHODS

CT_SETTING = "a CT setting; MRI recipes take input, undersampling, sensitivity and method"
FIELD_SETTING = "only for kind: field recipes"


class UndersamplingSpec(StrictModel):
    """Retrospective undersampling of fully sampled k-space (a study: the fully sampled data give the
    reference). ``pattern``: fastMRI-style ``equispaced`` or ``random`` lines along ky with a fully
    sampled centre of ``center_fraction`` of the lines, or a variable-density ``poisson`` disc with a
    fully sampled ``calib`` box."""

    pattern: Literal["equispaced", "random", "poisson"] = "equispaced"
    acceleration: float = Field(gt=1, le=64)
    center_fraction: float = Field(default=0.08, gt=0, lt=1)
    calib: tuple[int, int] = (24, 24)
    seed: int = 0


class SensitivitySpec(StrictModel):
    """Where coil sensitivities come from: the input's own (``file``), ESPIRiT on the fully sampled
    centre of the measured k-space (``espirit``), or, for a retrospective study only, ESPIRiT on the
    centre of the fully sampled data before undersampling (``prescan``: it stands in for the
    separate low-resolution calibration scan many protocols acquire; an undersampled scan's own
    centre may be too small for good maps). ``auto``: the file's, else ``prescan`` in a
    retrospective study, else ``espirit``."""

    source: Literal["auto", "file", "espirit", "prescan"] = "auto"
    calib_width: int = Field(default=24, ge=4)
    kernel_width: int = Field(default=6, ge=2)
    threshold: float = Field(default=0.02, gt=0, lt=1)
    crop: float = Field(default=0.95, ge=0, lt=1)


class MRIRecipe(PosteriorRecipe):
    FOREIGN: ClassVar[dict[str, str]] = {
        **{name: CT_SETTING for name in ("angular_range_deg", "start_angle_deg", "view_step", "grid")},
        **{name: FIELD_SETTING for name in ("observations", "holdout", "variable")},
    }

    kind: Literal["mri"]
    format: str | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)
    undersampling: UndersamplingSpec | None = None
    sensitivity: SensitivitySpec = Field(default_factory=SensitivitySpec)
    store_complex_mean: bool = False

    @field_validator("method")
    @classmethod
    def _known_method(cls, spec: MethodSpec) -> MethodSpec:
        return MethodSpec(name=spec.name, params=MRI_METHODS.coerce(spec.name, spec.params))

    @model_validator(mode="after")
    def _prescan_needs_a_study(self) -> Self:
        if self.sensitivity.source == "prescan" and self.undersampling is None:
            raise ValueError("sensitivity.source: 'prescan' estimates maps from fully sampled data before "
                             "undersampling; it needs an undersampling section (a retrospective study)")
        return self
