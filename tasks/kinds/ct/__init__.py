"""The CT problem kind: sinograms in, a posterior image per slice out.

Modules: ``recipe`` (the typed recipe), ``methods`` (samplers and their parameters),
``measurement`` (input, grid, operator, reference), ``setup`` (all of those for one run),
``plan``, ``calibration`` (the optional conformal step before the regions) and ``region`` (one
block of slices); summaries and previews are tasks/core/summaries.py's. ``KIND`` is what the registry
(inversa.tasks.kinds) hands the generic pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from inversa.data.store import ResultStore
from inversa.tasks.core.inputs import input_digest
from inversa.tasks.core.summaries import slice_preview, slice_summary
from inversa.tasks.core.kind import Plan, Prepared, Preview, ProblemKind, RegionProgress, StoreTemplate
from inversa.tasks.kinds.ct import plan as planning
from inversa.tasks.kinds.ct.calibration import calibrate
from inversa.tasks.kinds.ct.recipe import CTRecipe
from inversa.tasks.kinds.ct.region import reconstruct_region


class CTKind(ProblemKind):
    name: ClassVar[str] = "ct"
    recipe_model: ClassVar[type[CTRecipe]] = CTRecipe
    input_suffixes: ClassVar[tuple[str, ...]] = (".nc", ".h5", ".hdf5", ".mat", ".npy", ".npz", ".zarr")
    table_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim", "mcc", "coverage")

    def plan(self, recipe: CTRecipe) -> Plan:
        return planning.make_plan(recipe)

    def input_digest(self, recipe: CTRecipe) -> str:
        return input_digest(recipe.input)

    def store_template(self, recipe: CTRecipe, plan: Plan) -> StoreTemplate:
        return planning.store_template(recipe, plan)

    def prepare(self, store: ResultStore, recipe: CTRecipe) -> Prepared:
        record = calibrate(store, recipe)
        return Prepared(record, f"interval scale {record['scale']:.3g} from {record['pairs']} simulated pairs "
                                f"(coverage {record['coverage_before']:.3f} -> {record['coverage_after']:.3f} on them)")

    def reconstruct_region(self, store: ResultStore, index: int, recipe: CTRecipe,
                           progress: RegionProgress | None = None) -> dict[str, Any]:
        return reconstruct_region(store, index, recipe, progress)

    def summarize(self, store: ResultStore) -> dict[str, Any]:
        return slice_summary(store)

    def describe(self, recipe: CTRecipe, plan: Plan) -> list[str]:
        return planning.describe(recipe, plan)

    def preview(self, store: ResultStore, index: int = 0) -> Preview:
        return slice_preview(store, index)


KIND = CTKind()
