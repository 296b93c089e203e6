"""The registry of problem kinds: a recipe's ``kind`` (and a store's) names one of these.

Each kind is a package beside this file implementing ``inversa.tasks.core.kind.ProblemKind``;
the generic pipeline (plan, store, regions, report), ``check``, ``show``, ``batch`` and
``serve`` reach a kind only through this registry. Adding a kind is a new package plus one
line in ``BUILTIN`` (docs/adding-a-problem-kind.md); another distribution can add one without
touching inversa through the ``inversa.problem_kinds`` entry-point group, with the same
``"module:attribute"`` value.

Kinds are imported when first asked for, not here: a CT run never pays for the Gaussian-process
libraries a field kind imports.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inversa.tasks.core.kind import ProblemKind

BUILTIN: dict[str, str] = {
    "ct": "inversa.tasks.kinds.ct:KIND",
    "field": "inversa.tasks.kinds.field:KIND",
    "mri": "inversa.tasks.kinds.mri:KIND",
}
DEFAULT_KIND = "ct"  # recipes written before kinds existed have no `kind:` field, and were CT
ENTRY_POINT_GROUP = "inversa.problem_kinds"


class UnknownKind(ValueError):
    """A recipe or store names a problem kind that is not registered."""


@lru_cache(maxsize=1)
def _targets() -> dict[str, str]:
    targets = dict(BUILTIN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(point.name, point.value)
    return targets


def kind_names() -> list[str]:
    """Every registered kind's name, sorted."""
    return sorted(_targets())


@lru_cache(maxsize=None)
def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def kind_named(name: str) -> "ProblemKind":
    """The kind registered as ``name``."""
    targets = _targets()
    if name not in targets:
        raise UnknownKind(f"problem kind {name!r} is not registered; known kinds: {', '.join(kind_names())}")
    kind = _load(targets[name])
    if kind.name != name:
        raise UnknownKind(f"{targets[name]} registers kind {kind.name!r} under the name {name!r}")
    return kind


def kind_of(recipe: Any) -> "ProblemKind":
    """The kind of a validated recipe."""
    return kind_named(recipe.kind)


def kind_of_provenance(provenance: dict[str, Any]) -> "ProblemKind":
    """The kind that wrote a store, from its provenance (stores from before kinds were recorded
    name it inside their recipe, or are CT)."""
    name = provenance.get("kind") or (provenance.get("recipe") or {}).get("kind") or DEFAULT_KIND
    return kind_named(name)
