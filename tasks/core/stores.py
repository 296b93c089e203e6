"""A run's plan and its store, for any problem kind: the generic half of plan -> store.

The kind decides what its store holds (``ProblemKind.store_template``); this module adds what
every store records (recipe, digests, code version, seed, when) and refuses, before anything is
written, an output that holds something other than this run's store.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from inversa.data.store import ResultStore, StoreConflict, StoreError
from inversa.tasks.core.inputs import input_location
from inversa.tasks.core.kind import Plan
from inversa.tasks.core.limits import check_fits_machine
from inversa.tasks.core.recipe import RecipeBase
from inversa.tasks.kinds import kind_of


def plan_regions(n: int, region_size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` blocks of ``region_size`` along the region axis."""
    return [(a, min(a + region_size, n)) for a in range(0, n, region_size)]


def make_plan(recipe: RecipeBase) -> Plan:
    """Validate the input (and reference) and size the run, writing nothing."""
    if not recipe.input:
        raise ValueError(f"recipe {recipe.name!r}: no input; give one with --input PATH")
    plan = kind_of(recipe).plan(recipe)
    check_fits_machine(plan, recipe.output)
    return plan


def code_version() -> str:
    """The installed version, plus the git commit when running from a checkout."""
    try:
        v = version("inversa")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{v}+g{commit}" if commit else v


def provenance(recipe: RecipeBase, recipe_digest: str, plan: Plan, extra: dict[str, Any]) -> dict[str, Any]:
    """What every store records about its run, with the kind's own entries (``extra``) after it."""
    kind = kind_of(recipe)
    return {
        "kind": kind.name,
        "recipe": recipe.model_dump(),
        "recipe_digest": recipe_digest,
        "input": input_location(recipe.input),
        "input_digest": kind.input_digest(recipe),
        "reference": str(Path(recipe.reference).resolve()) if recipe.reference else None,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "seed": recipe.seed,
        "method": plan.method,
        "method_params": plan.method_params,
        **extra,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def create_store(recipe: RecipeBase, recipe_digest: str, plan: Plan, overwrite: bool) -> ResultStore:
    """Create the run's store from the kind's template, or reopen it to resume the same run."""
    template = kind_of(recipe).store_template(recipe, plan)
    store = ResultStore.create(
        recipe.output,
        provenance=provenance(recipe, recipe_digest, plan, template.provenance),
        credible_level=recipe.credible_level,
        region_size=recipe.region_size,
        overwrite=overwrite,
        **template.layout,
    )
    if any(store.attrs.get(k) != v for k, v in template.attrs.items()):
        store.update_attrs(template.attrs)
    return store


def check_output(recipe: RecipeBase, recipe_digest: str, overwrite: bool) -> None:
    """Refuse, before anything runs, an output that holds something other than this run's store."""
    path = Path(recipe.output)
    if not path.exists():
        return
    try:
        store = ResultStore.open(path)
    except StoreError:
        raise StoreConflict(
            f"{path}: exists and is not an inversa result store; refusing to write into it "
            "(choose another --output; --overwrite never deletes data inversa did not write)"
        ) from None
    if overwrite:
        return
    stored = store.provenance
    differ = []
    if stored.get("recipe_digest") != recipe_digest:
        differ.append(f"recipe digest {str(stored.get('recipe_digest'))[:19]} != {recipe_digest[:19]}")
    digest = kind_of(recipe).input_digest(recipe)
    if stored.get("input_digest") != digest:
        differ.append(f"input digest {str(stored.get('input_digest'))[:19]} != {digest[:19]}")
    if differ:
        raise StoreConflict(
            f"{path}: holds another run ({'; '.join(differ)}); pass --overwrite to replace it, "
            "or choose another --output"
        )
