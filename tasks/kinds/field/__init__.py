"""The field problem kind: sparse observations of a physical field in, its posterior on a grid out.

Modules: ``recipe`` (the typed recipe), ``methods`` (solvers and their parameters),
``problem`` (observations, output grid, reference, held-out points), ``model`` (a solver fed a
problem), ``fit`` (the one-off fit a static field's regions share), ``calibration`` (conformal
factors from withheld spatial blocks) and ``intervals`` (how they scale the intervals), ``plan``,
``region`` and ``report``. ``KIND`` is what the registry (inversa.tasks.kinds) hands the generic pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from inversa.data.store import ResultStore
from inversa.tasks.core.inputs import input_digest
from inversa.tasks.core.kind import Plan, Prepared, Preview, ProblemKind, RegionProgress, StoreTemplate
from inversa.tasks.kinds.field import plan as planning
from inversa.tasks.kinds.field import report
from inversa.tasks.kinds.field.calibration import calibrate
from inversa.tasks.kinds.field.fit import ensure_fit, method_of, solver_device
from inversa.tasks.kinds.field.model import FieldModel
from inversa.tasks.kinds.field.problem import load_field_problem
from inversa.tasks.kinds.field.recipe import FieldRecipe
from inversa.tasks.kinds.field.region import reconstruct_region


class FieldKind(ProblemKind):
    name: ClassVar[str] = "field"
    recipe_model: ClassVar[type[FieldRecipe]] = FieldRecipe
    input_suffixes: ClassVar[tuple[str, ...]] = (".nc", ".zarr", ".csv", ".csv.gz", ".csv.xz", ".csv.bz2", ".vec")
    table_metrics: ClassVar[tuple[str, ...]] = ("rmse", "coverage", "holdout_rmse", "holdout_coverage")

    def plan(self, recipe: FieldRecipe) -> Plan:
        return planning.make_plan(recipe)

    def input_digest(self, recipe: FieldRecipe) -> str:
        return input_digest(recipe.input)

    def store_template(self, recipe: FieldRecipe, plan: Plan) -> StoreTemplate:
        return planning.store_template(recipe, plan)

    def prepare(self, store: ResultStore, recipe: FieldRecipe) -> Prepared:
        """The calibration (when on) and then, where one fit serves every region, that fit: its
        held-out scores use the calibrated interval. Each is saved in the store and reused."""
        global_fit = FieldModel(method_of(recipe), load_field_problem(recipe)).global_fit
        record: dict[str, Any] = {}
        lines = []
        if recipe.calibration is not None:
            record["calibration"] = cal = calibrate(store, recipe, global_fit)
            lines.append(f"intervals calibrated on {cal['units']} {cal['units_kind'].split(' (')[0]} "
                         f"({cal['withheld_points']} withheld observations, {cal['seconds']:.1f} s): coverage "
                         f"{cal['coverage_before']:.3f} -> {cal['coverage_after']:.3f}, factor {cal['scale']:.3g}")
        if global_fit:
            record["fit"] = fit = ensure_fit(store, recipe)
            lines.insert(0, f"{recipe.method.name} fitted once for all regions in {fit['seconds']:.1f} s")
        return Prepared(record, "; ".join(lines))

    def reconstruct_region(self, store: ResultStore, index: int, recipe: FieldRecipe,
                           progress: RegionProgress | None = None) -> dict[str, Any]:
        return reconstruct_region(store, index, recipe, progress)

    def summarize(self, store: ResultStore) -> dict[str, Any]:
        return report.summarize(store)

    def uses_gpu(self, recipe: FieldRecipe) -> bool:
        return solver_device(recipe).startswith("cuda")

    def describe(self, recipe: FieldRecipe, plan: Plan) -> list[str]:
        return planning.describe(recipe, plan)

    def preview(self, store: ResultStore, index: int = 0) -> Preview:
        return report.preview(store, index)


KIND = FieldKind()
