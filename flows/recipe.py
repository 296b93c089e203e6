"""Recipes: the YAML files that say what a pipeline does.

A recipe is validated in full before anything runs (`inversa check`), so a typo in a method
parameter fails in a second instead of an hour into a batch. The resolved recipe (defaults
filled in, overrides applied) is what gets digested into the store's provenance: two runs with
the same digest are the same computation, and may share (resume) a store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from inversa.resources import recipes_dir
from inversa.tasks.methods import PRIOR_PARAM, PriorNotFound, method_names, prior_record, uses_prior, validate_method_params
from inversa.models.samplers import REGISTRY

RECIPE_DIR = recipes_dir()


class RecipeError(ValueError):
    """A recipe that cannot run: names the recipe and the field at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class GridSpec(_Strict):
    size: int | None = Field(default=None, ge=8, le=8192)
    pixel_size_mm: float | None = Field(default=None, gt=0)


class FieldGridSpec(_Strict):
    """A field's target grid (data.fields.FieldGrid.from_spec): for scattered observations only."""

    extent: list[float] | None = Field(default=None, min_length=4, max_length=4)
    spacing: float | None = Field(default=None, gt=0)
    shape: list[int] | None = Field(default=None, min_length=2, max_length=2)
    padding: float | None = Field(default=None, ge=0)
    mask: Literal["convex-hull"] | None = None


class ObservationSpec(_Strict):
    """How to read field observations (data/readers/field_input.py)."""

    columns: dict[str, str | list[str]] | None = None
    units: str | None = None
    projection: Literal["auto", "lonlat"] | None = "auto"
    duplicates: Literal["error", "mean"] = "error"


class HoldoutSpec(_Strict):
    """Observed points withheld from the solver to score it (tasks/field_problem.py)."""

    fraction: float = Field(gt=0, lt=1)
    seed: int = 0


FIELD_ONLY = ("observations", "holdout", "variable")


class CalibrationSpec(_Strict):
    """Conformal calibration of the credible interval on simulated held-out pairs (tasks.calibration)."""

    pairs: int = Field(default=32, ge=1, le=100000)
    seed: int = 7
    alpha: float | None = Field(default=None, gt=0, lt=1)


class RunnerSpec(_Strict):
    """Where the tasks run (flows.task_runners.RunnerOptions); not part of the recipe digest."""

    kind: Literal["threads", "dask"] | None = None
    workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int | None = Field(default=None, ge=1)
    address: str | None = None
    cluster: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "RunnerSpec":
        from inversa.flows.task_runners import RunnerOptions

        RunnerOptions(**self.model_dump())  # its RunnerError (a ValueError) names the field at fault
        return self


class Recipe(_Strict):
    name: str
    description: str = ""
    kind: Literal["ct", "field"] = "ct"
    input: str | None = None
    format: str | None = None
    reader_options: dict[str, Any] = Field(default_factory=dict)
    reference: str | None = None
    reference_variable: str | None = None
    output: str | None = None
    angular_range_deg: float | None = Field(default=None, gt=0, le=360)
    start_angle_deg: float = 0.0
    view_step: int = Field(default=1, ge=1)
    method: MethodSpec
    grid: GridSpec | FieldGridSpec = Field(default_factory=GridSpec)
    observations: ObservationSpec | None = None
    holdout: HoldoutSpec | None = None
    variable: str | None = None
    samples: int = Field(default=16, ge=1, le=10000)
    credible_level: float = Field(default=0.9, gt=0, lt=1)
    store_samples: bool = False
    region_size: int = Field(default=1, ge=1)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    calibration: CalibrationSpec | None = None
    runner: RunnerSpec | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, spec: MethodSpec, info: ValidationInfo) -> MethodSpec:
        if info.data.get("kind") == "field":
            from inversa.tasks.field_methods import field_method

            field_method(spec.name, spec.params)
            return spec
        if spec.name not in method_names():
            raise ValueError(
                f"unknown method {spec.name!r}; expected one of {', '.join(sorted(method_names()))}"
            )
        validate_method_params(spec.name, spec.params)
        return spec

    @model_validator(mode="after")
    def _paths_are_strings(self) -> "Recipe":
        for field in ("input", "reference", "output"):
            value = getattr(self, field)
            if value is not None and not str(value).strip():
                raise ValueError(f"{field} is empty")
        return self

    @model_validator(mode="after")
    def _sections_fit_the_kind(self) -> "Recipe":
        if self.kind == "field":
            if self.calibration is not None:
                raise ValueError("calibration: not available for field recipes (their intervals are Gaussian "
                                 "posteriors; score them with holdout: {fraction: ...})")
            if self.store_samples:
                raise ValueError("store_samples: field solvers store mean, std and the interval, not samples")
            if isinstance(self.grid, GridSpec):
                if self.grid.size is not None or self.grid.pixel_size_mm is not None:
                    raise ValueError("grid: size and pixel_size_mm are CT settings; a field grid takes "
                                     "extent, spacing or shape, padding, mask")
                self.grid = FieldGridSpec()
        else:
            if isinstance(self.grid, FieldGridSpec):
                raise ValueError("grid: extent, spacing, shape, padding and mask are for kind: field; "
                                 "a CT grid takes size and pixel_size_mm")
            for name in FIELD_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for kind: field recipes")
        return self

    @model_validator(mode="after")
    def _calibration_needs_uncertainty(self) -> "Recipe":
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

    def digest(self) -> str:
        """Digest of what determines the numbers (not where they come from or go, nor where they run).

        A trained prior is part of the computation: its weights' digest is folded in, so a
        retrained checkpoint at the same path never resumes a store made with the old one.
        """
        payload = self.model_dump(exclude={"input", "output", "description", "device", "runner"})
        for name in FIELD_ONLY:  # absent from CT recipes: their digests stay what they were
            if payload[name] is None:
                payload.pop(name)
        if self.kind == "ct" and uses_prior(self.method.name) and PRIOR_PARAM in self.method.params:
            try:
                payload["prior_weights_sha256"] = prior_record(self.method.params[PRIOR_PARAM])["weights_sha256"]
            except PriorNotFound:
                payload["prior_weights_sha256"] = None  # the run itself reports the missing file
        text = json.dumps(payload, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe path, or the name of a shipped recipe (`ct-fbp`, `htc2022-limited`, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (RECIPE_DIR / f"{name_or_path}.yaml", RECIPE_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
    raise RecipeError(f"{name_or_path}: no such recipe file, and not a shipped recipe ({shipped})")


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 60 is a number, true a bool, null None, else a string."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    """Apply `key.sub=value` overrides to a raw recipe mapping (before validation)."""
    data = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{source}: --set {item!r}: expected KEY=VALUE (e.g. method.params.iterations=200)")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise RecipeError(f"{source}: --set {item!r}: empty key")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: --set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return data


def read_recipe_fields(name_or_path: str | Path | dict, overrides: list[str] | None,
                       label: str) -> tuple[dict[str, Any], str]:
    """The raw fields of a recipe (a shipped name, a path or a dict) with ``--set`` overrides applied,
    and where they came from (for error messages); shared by every kind of recipe."""
    if isinstance(name_or_path, dict):
        raw, source = dict(name_or_path), label
    else:
        path = find_recipe(name_or_path)
        source = str(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise RecipeError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{source}: expected a mapping of recipe fields at the top level")
    return apply_overrides(raw, overrides or [], source), source


def load_recipe(
    name_or_path: str | Path | dict,
    overrides: list[str] | None = None,
    **fields: Any,
) -> Recipe:
    """Read, override and validate a recipe. Keyword fields (input, output, ...) win when not None."""
    raw, source = read_recipe_fields(name_or_path, overrides, "recipe")
    for key, value in fields.items():
        if value is not None:
            raw[key] = str(value) if isinstance(value, Path) else value
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'recipe'}: {err['msg']}" for err in exc.errors()
        )
        raise RecipeError(f"{source}: invalid recipe: {problems}") from None
