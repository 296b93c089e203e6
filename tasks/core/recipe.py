"""Recipes: the YAML files that say what a pipeline does, as typed models.

A recipe is validated in full before anything runs (`inversa check`), so a typo in a method
parameter fails in a second instead of an hour into a batch. Each problem kind has its own model
(a subclass of ``RecipeBase``), chosen by the recipe's ``kind`` field: a discriminated union on
``kind`` (``recipe_union`` builds it as a pydantic type; ``load_recipe`` picks the member by the
tag first, so that errors name only that kind's fields). What flows and tasks receive is that
model, never a dict, and defaults live in the model only.

The validated recipe is what gets digested into the store's provenance: two runs with the same
digest are the same computation, and may share (resume) a store.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from inversa.data.checkpoints import read_config
from inversa.models.priors.families import family_of
from inversa.models.samplers import REGISTRY
from inversa.resources import recipes_dir
from inversa.tasks.core.methods import PRIOR_PARAM, uses_prior
from inversa.tasks.core.params import did_you_mean
from inversa.tasks.core.priors import PriorNotFound, prior_record, resolve_prior_path
from inversa.tasks.core.runner import RunnerOptions
from inversa.tasks.kinds import DEFAULT_KIND, kind_named, kind_names


class RecipeError(ValueError):
    """A recipe that cannot run: names the recipe and the field at fault."""


class StrictModel(BaseModel):
    """Unknown fields are errors; a validated section never changes afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodSpec(StrictModel):
    """``name`` and keyword ``params``; each kind checks and coerces them against the method."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunnerSpec(StrictModel):
    """Where the tasks run (tasks.core.runner.RunnerOptions); not part of the recipe digest."""

    kind: Literal["threads", "dask"] | None = None
    workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int | None = Field(default=None, ge=1)
    address: str | None = None
    cluster: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "RunnerSpec":
        RunnerOptions(**self.model_dump())  # its RunnerError (a ValueError) names the field at fault
        return self


class RecipeBase(StrictModel):
    """What every problem kind's recipe has. A kind subclasses it with ``kind: Literal[NAME]``.

    ``FOREIGN`` names fields other kinds have and says why they do not apply to this one, so a
    CT setting in a field recipe gets that sentence instead of a bare "unknown field".
    """

    FOREIGN: ClassVar[dict[str, str]] = {}
    # Where the data comes from and goes, and where it runs, do not change the numbers.
    NOT_DIGESTED: ClassVar[frozenset[str]] = frozenset({"input", "output", "description", "device", "runner"})

    kind: str
    name: str
    description: str = ""
    input: str | None = None
    reference: str | None = None
    reference_variable: str | None = None
    output: str | None = None
    method: MethodSpec
    credible_level: float = Field(default=0.9, gt=0, lt=1)
    region_size: int = Field(default=1, ge=1)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    runner: RunnerSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_foreign_fields(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        for name, why in cls.FOREIGN.items():
            if name in data and data[name] is not None and data[name] is not False:
                raise ValueError(f"{name}: {why}")
        return {k: v for k, v in data.items() if k not in cls.FOREIGN}  # null or false says nothing

    @model_validator(mode="after")
    def _paths_are_not_empty(self) -> Self:
        for field in ("input", "reference", "output"):
            value = getattr(self, field)
            if value is not None and not str(value).strip():
                raise ValueError(f"{field} is empty")
        return self

    def digest_payload(self) -> dict[str, Any]:
        """What determines the numbers; a kind adds what its fields only point to (a prior's weights)."""
        return self.model_dump(exclude=set(self.NOT_DIGESTED))

    def digest(self) -> str:
        """Digest of what determines the numbers (not where they come from or go, nor where they run)."""
        text = json.dumps(self.digest_payload(), sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def with_fields(self, **changes: Any) -> Self:
        """A validated copy with some fields replaced (a batch's per-dataset input, output, reference)."""
        return type(self).model_validate({**self.model_dump(), **changes})


CALIBRATION_OFF = ("off", "none", "no", "false")  # --set calibration=off (YAML reads off/no as false)


def calibration_setting(value: Any, stochastic: bool) -> Any:
    """A recipe's raw ``calibration`` value as the model takes it: absent means on for a method
    with uncertainty (honest intervals are the default) and off for a point estimate; ``off``,
    ``false`` or ``null`` switch it off; ``on``/``true`` ask for the defaults."""
    if value is _ABSENT:
        return {} if stochastic else None
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in CALIBRATION_OFF):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("on", "yes", "true")):
        return {}
    return value


_ABSENT = object()


class CalibrationSpec(StrictModel):
    """Conformal calibration of the credible interval on held-out pairs (simulated, or withheld
    observations for fields): on by default for every method with uncertainty.

    ``pairs``: calibration images (None: the kind's default); ``samples``: posterior draws per
    pair (None: the kind's default, a quarter of the run's; the factor is carried over to the
    run's own sample count, ``models.conformal.sample_std_factor``); ``bands``: std bands with a
    factor each (spatially adaptive intervals; 1 for one global factor).
    """

    pairs: int | None = Field(default=None, ge=1, le=100000)
    samples: int | None = Field(default=None, ge=2, le=10000)
    bands: int = Field(default=4, ge=1, le=32)
    seed: int = 7
    alpha: float | None = Field(default=None, gt=0, lt=1)


class PosteriorRecipe(RecipeBase):
    """A recipe whose method is a sampler of ``models.samplers``: posterior samples per slice (or a
    point estimate), optionally kept, and intervals calibrated on simulated pairs unless switched off."""

    DEFAULT_CALIBRATION_PAIRS: ClassVar[int] = 4
    CALIBRATION_TILES: ClassVar[int] = 4  # each pair split into tiles x tiles conformal units

    samples: int = Field(default=16, ge=1, le=10000)
    store_samples: bool = False
    calibration: CalibrationSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _calibration_by_default(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        method = data.get("method")
        name = method.get("name") if isinstance(method, Mapping) else getattr(method, "name", None)
        try:
            several = int(data.get("samples", cls.model_fields["samples"].default)) >= 2
        except (TypeError, ValueError):
            several = True  # the samples field reports its own error
        stochastic = name in REGISTRY and not REGISTRY[name].deterministic and several
        setting = calibration_setting(data.get("calibration", _ABSENT), stochastic)
        return {**data, "calibration": setting}

    @model_validator(mode="after")
    def _calibration_needs_uncertainty(self) -> Self:
        if self.calibration is not None:
            if self.point_estimate:
                raise ValueError(
                    f"calibration: method {self.method.name!r} gives a point estimate; there is no interval to "
                    "calibrate (leave calibration out, or set it off)"
                )
            alpha = self.calibration_alpha
            units = self.calibration_pairs * self.CALIBRATION_TILES ** 2
            if 1.0 / (units + 1) > alpha:
                raise ValueError(
                    f"calibration.pairs: {self.calibration_pairs} pairs ({units} conformal units) cannot certify "
                    f"alpha={alpha:g}; need at least {int(-(-1 // alpha)) - 1} units"
                )
            if self.calibration.samples is not None and self.calibration.samples > self.samples:
                raise ValueError(f"calibration.samples: {self.calibration.samples} is more than the run's "
                                 f"samples ({self.samples})")
        return self

    @property
    def calibration_pairs(self) -> int:
        pairs = self.calibration.pairs if self.calibration is not None else None
        return int(pairs or self.DEFAULT_CALIBRATION_PAIRS)

    @property
    def calibration_samples(self) -> int:
        """Posterior draws per calibration pair: as asked, else a quarter of the run's (at least 4)."""
        asked = self.calibration.samples if self.calibration is not None else None
        if asked is not None:
            return int(asked)
        return int(min(self.samples, max(4, self.samples // 4)))

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


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe path, or the name of a shipped recipe (`ct-fbp`, `htc2022-limited`, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped_dir = recipes_dir()
    for candidate in (shipped_dir / f"{name_or_path}.yaml", shipped_dir / str(name_or_path)):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in shipped_dir.glob("*.yaml")))
    raise RecipeError(f"{name_or_path}: no such recipe file, and not a shipped recipe ({shipped})")


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of settings, not data
MAX_RECIPE_NODES = 100_000  # values once YAML aliases are expanded


def expanded_size(obj: Any, limit: int = MAX_RECIPE_NODES) -> int:
    """How many values ``obj`` holds once every shared (aliased) part is counted each time it is
    used, stopping early past ``limit``. Linear in the distinct objects, so an alias bomb (a few
    lines whose expansion has billions of entries) is measured in microseconds, not expanded."""
    memo: dict[int, int] = {}

    def size(node: Any) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if isinstance(node, dict):
            total = 1 + sum(size(k) + size(v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            total = 1 + sum(size(v) for v in node)
        else:
            return 1
        memo[key] = total = min(total, limit + 1)
        return total

    return size(obj)


def _check_expansion(raw: Any, source: str) -> None:
    if expanded_size(raw) > MAX_RECIPE_NODES:
        raise RecipeError(f"{source}: expands to more than {MAX_RECIPE_NODES:,} values once its YAML aliases "
                          "are followed; a recipe is a page of settings (an alias bomb?)")


def _parse_value(text: str, source: str = "--set") -> Any:
    """`--set` values are YAML scalars: 60 is a number, true a bool, null None, else a string."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not a valid YAML value: {exc}") from None
    _check_expansion(value, source)
    return value


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    """Apply `key.sub=value` overrides to a raw recipe mapping (before validation)."""
    _check_expansion(raw, source)
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
        node[parts[-1]] = _parse_value(value, f"{source}: --set {key.strip()}")
    return data


def read_recipe_fields(name_or_path: str | Path | Mapping, overrides: list[str] | None,
                       label: str) -> tuple[dict[str, Any], str]:
    """The raw fields of a recipe (a shipped name, a path or a mapping) with ``--set`` overrides applied,
    and where they came from (for error messages); shared by every kind of recipe."""
    if isinstance(name_or_path, Mapping):
        raw, source = dict(name_or_path), label
    else:
        path = find_recipe(name_or_path)
        source = str(path)
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{source}: {path.stat().st_size:,} bytes; a recipe is at most "
                              f"{MAX_RECIPE_BYTES:,} bytes of YAML settings")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise RecipeError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{source}: expected a mapping of recipe fields at the top level")
    return apply_overrides(raw, overrides or [], source), source


def _prior_channels(config: dict[str, Any]) -> int:
    return int(config.get("architecture", {}).get("in_channels", 1))


def recipes_taking(prior: str | Path) -> list[str]:
    """The shipped reconstruction recipes a checkpoint can replace the prior of: their method takes its
    family and their own prior has its channels (a complex MR prior is no use to a CT recipe). What
    `train-prior` suggests once a prior is trained."""
    config = read_config(resolve_prior_path(prior))
    family = family_of(config).name
    names = []
    for path in sorted(recipes_dir().glob("*.yaml")):
        method = read_recipe_fields(path, [], str(path))[0].get("method") or {}
        theirs = (method.get("params") or {}).get(PRIOR_PARAM)
        if not theirs or family not in getattr(REGISTRY.get(method.get("name")), "prior_families", ()):
            continue
        try:
            if _prior_channels(read_config(resolve_prior_path(theirs))) == _prior_channels(config):
                names.append(path.stem)
        except PriorNotFound:
            continue
    return names


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem, each naming the public field once (``grid.sise``), with the closest
    known name for an unknown one."""
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        where = ".".join(loc)
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(loc[-1], _fields_at(model, loc[:-1]))
            problems.append(f"{where}: unknown field{hint}")
            continue
        message = err["msg"].removeprefix("Value error, ")
        # A validator's own message starts with the field it is about; do not name it twice.
        problems.append(message if not where or message.startswith(f"{where}") else f"{where}: {message}")
    return "; ".join(dict.fromkeys(problems))


def _fields_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The field names of the (nested) model at ``loc``, for "did you mean"."""
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return []
        nested = [a for a in (field.annotation, *typing.get_args(field.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def load_recipe(name_or_path: str | Path | Mapping | RecipeBase, overrides: list[str] | None = None,
                **fields: Any) -> RecipeBase:
    """Read, override and validate a recipe into its kind's model.

    ``name_or_path``: a shipped recipe's name, a YAML path, a mapping, or an already validated
    recipe (returned as it is unless ``overrides`` or ``fields`` change it). Keyword ``fields``
    (input, output, ...) win over the recipe's when not None.
    """
    if isinstance(name_or_path, RecipeBase):
        if not overrides and all(v is None for v in fields.values()):
            return name_or_path
        name_or_path = name_or_path.model_dump()
    raw, source = read_recipe_fields(name_or_path, overrides, "recipe")
    for key, value in fields.items():
        if value is not None:
            raw[key] = str(value) if isinstance(value, Path) else value
    tag = raw.get("kind", DEFAULT_KIND)
    if tag not in kind_names():
        raise RecipeError(f"{source}: invalid recipe: kind: expected one of {', '.join(map(repr, kind_names()))}, "
                          f"got {tag!r}")
    model = kind_named(tag).recipe_model
    try:
        return model.model_validate({**raw, "kind": tag})
    except ValidationError as exc:
        raise RecipeError(f"{source}: invalid recipe: {validation_problems(exc, model)}") from None


def recipe_union() -> Any:
    """Every registered kind's recipe model as one pydantic type, discriminated by ``kind``.

    ``TypeAdapter(recipe_union()).validate_python(raw)`` gives the same model ``load_recipe``
    does (for a raw recipe that names its kind); it is also the JSON schema of all recipes.
    """
    models = tuple(kind_named(name).recipe_model for name in kind_names())
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 - a runtime tuple of types


def recipe_schema() -> dict[str, Any]:
    """The JSON schema of every recipe kind (for editors and documentation)."""
    return TypeAdapter(recipe_union()).json_schema()
