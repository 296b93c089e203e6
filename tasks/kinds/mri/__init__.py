"""The MRI problem kind: multi-coil (or single-coil) Cartesian k-space in, a posterior magnitude
image per slice out.

Modules: ``recipe`` (the typed recipe: undersampling for studies, where the coil sensitivities
come from), ``methods`` (zero-filled, CG-SENSE, compressed sensing, the diffusion samplers),
``measurement`` (k-space, maps, noise level and scale per slice), ``posterior`` (draws as
magnitudes, the data residual), ``plan``, ``calibration`` (the optional conformal step on
simulated brain slices) and ``region``. ``KIND`` is what the registry (inversa.tasks.kinds)
hands the generic pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from inversa.data.store import ResultStore
from inversa.tasks.core.inputs import input_digest
from inversa.tasks.core.kind import Plan, Prepared, Preview, ProblemKind, RegionProgress, StoreTemplate
from inversa.tasks.core.summaries import slice_preview, slice_summary
from inversa.tasks.kinds.mri import plan as planning
from inversa.tasks.kinds.mri.calibration import calibrate
from inversa.tasks.kinds.mri.recipe import MRIRecipe
from inversa.tasks.kinds.mri.region import reconstruct_region


class MRIKind(ProblemKind):
    name: ClassVar[str] = "mri"
    recipe_model: ClassVar[type[MRIRecipe]] = MRIRecipe
    input_suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5", ".mat", ".npy", ".npz", ".cfl")
    table_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim", "nrmse", "coverage", "data_residual")

    def plan(self, recipe: MRIRecipe) -> Plan:
        return planning.make_plan(recipe)

    def input_digest(self, recipe: MRIRecipe) -> str:
        return input_digest(recipe.input)

    def store_template(self, recipe: MRIRecipe, plan: Plan) -> StoreTemplate:
        return planning.store_template(recipe, plan)

    def prepare(self, store: ResultStore, recipe: MRIRecipe) -> Prepared:
        record = calibrate(store, recipe)
        return Prepared(record, f"interval scale {record['scale']:.3g} from {record['pairs']} simulated brain slices "
                                f"(coverage {record['coverage_before']:.3f} -> {record['coverage_after']:.3f} on them)")

    def reconstruct_region(self, store: ResultStore, index: int, recipe: MRIRecipe,
                           progress: RegionProgress | None = None) -> dict[str, Any]:
        return reconstruct_region(store, index, recipe, progress)

    def summarize(self, store: ResultStore) -> dict[str, Any]:
        return slice_summary(store)

    def describe(self, recipe: MRIRecipe, plan: Plan) -> list[str]:
        return planning.describe(recipe, plan)

    def preview(self, store: ResultStore, index: int = 0) -> Preview:
        return slice_preview(store, index, ", magnitude")


KIND = MRIKind()
