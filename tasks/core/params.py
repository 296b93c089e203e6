"""Method parameters checked and coerced by the types of the constructor that will receive them.

A recipe names a method and gives keyword parameters; the method's constructor (a sampler's or
a field solver's) is the single source of truth for what it accepts, its defaults and its types.
``ParameterSchema`` turns that signature into a pydantic model, so ``max_iter: "300"`` (from
``--set``) and ``max_iter: 300`` become the same integer, and so the same recipe digest, and a
value of the wrong type fails at ``inversa check`` with the parameter's public name.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

_KINDS = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(str(name), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class ParameterSchema:
    """The keyword parameters of one method: types and defaults from a constructor, plus extras.

    ``extra``: parameters the pipeline consumes itself rather than the constructor (a prior's
    path, a PDE's right-hand side), as ``name -> (type, default)``; ``...`` marks a required one.
    """

    method: str
    model: type[BaseModel]

    @classmethod
    def of(cls, method: str, constructor: Callable, skip: Iterable[str] = (),
           extra: Mapping[str, tuple[Any, Any]] | None = None) -> "ParameterSchema":
        hints = typing.get_type_hints(constructor)
        fields: dict[str, tuple[Any, Any]] = {}
        for name, parameter in inspect.signature(constructor).parameters.items():
            if name == "self" or name in skip or parameter.kind not in _KINDS:
                continue
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hints.get(name, Any), default)
        fields.update(extra or {})
        config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        model = create_model(f"{method}_parameters", __config__=config, **fields)
        return cls(method, model)

    @classmethod
    def declared(cls, method: str, fields: Mapping[str, tuple[Any, Any]]) -> "ParameterSchema":
        """Parameters with no constructor behind them: ``name -> (type, default)``."""
        return cls.of(method, _no_parameters, extra=fields)

    @property
    def names(self) -> list[str]:
        return sorted(self.model.model_fields)

    def defaults(self) -> dict[str, Any]:
        """Every parameter that has a default, with it (what provenance records beside the recipe's)."""
        return {name: f.default for name, f in self.model.model_fields.items() if not f.is_required()}

    def coerce(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a recipe gave, each converted to its declared type; nothing added.

        Raises ``ValueError`` naming ``method.params.NAME`` for an unknown name (with the closest
        known one) or a value of the wrong type.
        """
        unknown = sorted(set(params) - set(self.model.model_fields))
        if unknown:
            hints = "".join(did_you_mean(name, self.model.model_fields) for name in unknown[:1])
            raise ValueError(
                f"method {self.method!r} has no parameter {', '.join(map(repr, unknown))}{hints}; "
                f"accepted: {', '.join(self.names) or 'none'}"
            )
        try:
            parsed = self.model.model_validate(dict(params))
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"method.params.{where}: {err['msg']} (got {err.get('input')!r})"
                                if where else err["msg"])
            raise ValueError(f"method {self.method!r}: " + "; ".join(problems)) from None
        return {name: getattr(parsed, name) for name in params}


def _no_parameters() -> None:
    """A signature without parameters, for schemas made of declared ones only."""
