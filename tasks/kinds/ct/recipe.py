"""The CT recipe: a sinogram file in, a posterior on an image grid out.

Its fields are the ones CT recipes had before problem kinds existed, with the same defaults, so
a CT store's recipe digest does not move (tests/flows/test_recipe.py keeps the shipped recipes'
digests as golden values).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from inversa.models.samplers import REGISTRY
from inversa.tasks.core.priors import PriorNotFound, prior_record
from inversa.tasks.core.recipe import MethodSpec, RecipeBase, StrictModel
from inversa.tasks.kinds.ct.methods import PRIOR_PARAM, coerce_method_params, method_names, uses_prior

FIELD_GRID_KEYS = ("extent", "spacing", "shape", "padding", "mask")


class GridSpec(StrictModel):
    """The output image grid; left out, it is the measurement's default (data.schema.default_grid)."""

    size: int | None = Field(default=None, ge=8, le=8192)
    pixel_size_mm: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _not_a_field_grid(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in FIELD_GRID_KEYS):
            raise ValueError("extent, spacing, shape, padding and mask are for kind: field; "
                             "a CT grid takes size and pixel_size_mm")
        return data


class CalibrationSpec(StrictModel):
    """Conformal calibration of the credible interval on simulated held-out pairs (ct/calibration.py)."""

    pairs: int = Field(default=32, ge=1, le=100000)
    seed: int = 7
    alpha: float | None = Field(default=None, gt=0, lt=1)


class CTRecipe(RecipeBase):
    FOREIGN: ClassVar[dict[str, str]] = {
        name: "only for kind: field recipes" for name in ("observations", "holdout", "variable")
    }

    kind: Literal["ct"] = "ct"
    format: str | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)
    angular_range_deg: float | None = Field(default=None, gt=0, le=360)
    start_angle_deg: float = 0.0
    view_step: int = Field(default=1, ge=1)
    grid: GridSpec = Field(default_factory=GridSpec)
    samples: int = Field(default=16, ge=1, le=10000)
    store_samples: bool = False
    calibration: CalibrationSpec | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, spec: MethodSpec) -> MethodSpec:
        if spec.name not in method_names():
            raise ValueError(f"unknown method {spec.name!r}; expected one of {', '.join(method_names())}")
        return MethodSpec(name=spec.name, params=coerce_method_params(spec.name, spec.params))

    @model_validator(mode="after")
    def _calibration_needs_uncertainty(self) -> Self:
        if self.calibration is not None:
            if REGISTRY[self.method.name].deterministic:
                raise ValueError(
                    f"calibration: method {self.method.name!r} gives a point estimate; there is no interval to calibrate"
                )
            alpha = self.calibration.alpha if self.calibration.alpha is not None else 1 - self.credible_level
            if 1.0 / (self.calibration.pairs + 1) > alpha:
                raise ValueError(
                    f"calibration.pairs: {self.calibration.pairs} pairs cannot certify alpha={alpha:g}; "
                    f"need at least {int(-(-1 // alpha)) - 1}"
                )
        return self

    @property
    def calibration_alpha(self) -> float:
        """The miscoverage the calibration targets: its ``alpha``, else ``1 - credible_level``."""
        alpha = self.calibration.alpha if self.calibration is not None else None
        return 1.0 - self.credible_level if alpha is None else float(alpha)

    @property
    def point_estimate(self) -> bool:
        return REGISTRY[self.method.name].deterministic

    @property
    def samples_drawn(self) -> int:
        """Posterior samples per slice: 1 for a point estimate, whatever ``samples`` says."""
        return 1 if self.point_estimate else self.samples

    def digest_payload(self) -> dict[str, Any]:
        """A trained prior is part of the computation: its weights' digest is folded in, so a
        retrained checkpoint at the same path never resumes a store made with the old one."""
        payload = super().digest_payload()
        if uses_prior(self.method.name) and PRIOR_PARAM in self.method.params:
            try:
                payload["prior_weights_sha256"] = prior_record(self.method.params[PRIOR_PARAM])["weights_sha256"]
            except PriorNotFound:
                payload["prior_weights_sha256"] = None  # the run itself reports the missing file
        return payload
