"""Planning a field run: the output grid, the observations each fit sees, regions and sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inversa.models.solvers import FieldSolver
from inversa.tasks.core.inputs import dataset_name
from inversa.tasks.core.kind import Plan, StoreTemplate
from inversa.tasks.core.stores import plan_regions
from inversa.tasks.kinds.field.calibration import plan_calibration
from inversa.tasks.kinds.field.fit import method_of
from inversa.tasks.kinds.field.model import FieldModel
from inversa.tasks.kinds.field.problem import FieldProblem, load_field_problem
from inversa.tasks.kinds.field.recipe import FieldRecipe

INTERVAL_KIND = "gaussian"
INTERVAL_DESCRIPTION = (
    "mean +- z * scale * std, z the standard normal quantile of (1 + credible_level) / 2; std is the posterior "
    "standard deviation of the latent field (GP: exact or sparse posterior; PINN: spread of the ensemble); scale "
    "is the conformal factor of the cell's band of predictive std sqrt(std^2 + noise^2), calibrated on withheld "
    "spatial blocks of the observations (attrs calibration), 1 with calibration off"
)


@dataclass(kw_only=True)
class FieldPlan(Plan):
    input_kind: str
    grid_shape: tuple[int, int]
    coord_units: str
    units: str
    components: tuple[str, ...] | None
    n_observations: int
    n_held_out: int
    global_fit: bool
    calibration: dict[str, Any] | None = None


def _counts(problem: FieldProblem, global_fit: bool) -> tuple[int, int, int]:
    """(observations fitted, held out, the most any single fit sees)."""
    if global_fit and problem.times is not None:
        fit, held = problem.space_time()
        return fit.n, held.n, fit.n
    indices = [None] if problem.times is None else range(len(problem.times))
    fits = [problem.observations(t).n for t in indices]
    helds = [problem.held_out(t).n for t in indices]
    return sum(fits), sum(helds), max(fits)


def make_plan(recipe: FieldRecipe) -> FieldPlan:
    """Read the input, decide grid and regions, check the method on it; writes nothing."""
    problem = load_field_problem(recipe)
    method = method_of(recipe)
    model = FieldModel(method, problem)  # refuses a method that cannot model this input (vector field, no time)
    n_fit, n_held, largest = _counts(problem, model.global_fit)
    if largest < 3:
        raise ValueError(f"{problem.input}: at most {largest} observation(s) per fit after the holdout; need at least 3")
    calibration = plan_calibration(problem, recipe, model.global_fit) if recipe.calibration is not None else None
    ny, nx = problem.shape
    channels = len(problem.components or ()) or 1
    per_index = ny * nx * channels if problem.leading_dim == "time" else nx * channels
    solver: FieldSolver = model.solver
    with_ref = 5 if recipe.reference else 4
    return FieldPlan(
        kind="field", dataset=dataset_name(recipe.input), input=problem.input, output=recipe.output,
        n_slices=problem.n_leading, leading_dim=problem.leading_dim,
        regions=plan_regions(problem.n_leading, recipe.region_size), method=method.name,
        method_params=method.resolved(), samples=0,
        estimated_memory_bytes=int(solver.estimated_memory_bytes(largest) + 4 * 4 * recipe.region_size * per_index),
        estimated_storage_bytes=int(with_ref * 4 * problem.n_leading * per_index),
        prepare="fit" if model.global_fit else "calibrate" if calibration is not None else None,
        input_kind=problem.kind, grid_shape=(ny, nx), coord_units=problem.coord_units, units=problem.units,
        components=problem.components, n_observations=n_fit, n_held_out=n_held, global_fit=model.global_fit,
        calibration=None if calibration is None else {**recipe.calibration.model_dump(), **calibration},
    )


def metric_names(recipe: FieldRecipe, plan: FieldPlan) -> tuple[str, ...]:
    """Per-time-step metrics (a static field's scores are run-level: see report.summarize)."""
    if plan.leading_dim != "time":
        return ()
    names = ("rmse", "coverage") if recipe.reference else ()
    holdout = ("holdout_rmse", "holdout_coverage") if recipe.holdout is not None and not plan.global_fit else ()
    return names + holdout


def store_template(recipe: FieldRecipe, plan: FieldPlan) -> StoreTemplate:
    problem = load_field_problem(recipe)
    layout = {
        "n_slices": plan.n_slices,
        "image_shape": plan.grid_shape,
        "pixel_size_mm": float(abs(problem.xs[1] - problem.xs[0])) if len(problem.xs) > 1 else 1.0,
        "n_samples": 0,
        "with_reference": bool(recipe.reference),
        "metric_names": metric_names(recipe, plan),
        "slice_coord": problem.times,
        "leading_dim": plan.leading_dim,
        "x_coord": problem.xs,
        "y_coord": problem.ys,
        "coord_units": problem.coord_units,
        "components": problem.components,
    }
    provenance: dict[str, Any] = {
        "input_kind": plan.input_kind,
        "units": plan.units,
        "observations": {"fitted": plan.n_observations, "held_out": plan.n_held_out},
        "holdout": recipe.holdout.model_dump() if recipe.holdout is not None else None,
        "fit": "once for all regions" if plan.global_fit else "per time step",
        "interval_kind": INTERVAL_KIND,
        "calibration": plan.calibration,
        "mask": recipe.mask,
    }
    attrs = {"interval_kind": INTERVAL_KIND, "interval_definition": INTERVAL_DESCRIPTION, "units": problem.units}
    return StoreTemplate(layout=layout, provenance=provenance, attrs=attrs)


def describe(recipe: FieldRecipe, plan: FieldPlan) -> list[str]:
    ny, nx = plan.grid_shape
    comps = f", components {', '.join(plan.components)}" if plan.components else ""
    along = "time step(s)" if plan.leading_dim == "time" else "grid row(s)"
    return [
        f"input      {plan.input} ({plan.input_kind}, values in {plan.units}{comps})",
        f"observed   {plan.n_observations} point(s) to fit, {plan.n_held_out} held out for scoring",
        f"grid       {ny} x {nx} cells, coordinates in {plan.coord_units}"
        + (f", {plan.n_slices} time steps" if plan.leading_dim == "time" else ""),
        f"method     {plan.method} {plan.method_params}",
        f"fit        {'once for all regions' if plan.global_fit else 'per time step'}",
        f"intervals  {_calibration_line(plan.calibration)}",
        f"regions    {len(plan.regions)} of up to {recipe.region_size} {along}",
    ]


def _calibration_line(calibration: dict[str, Any] | None) -> str:
    if calibration is None:
        return "not calibrated (calibration: off)"
    steps = f" at time steps {calibration['steps']}" if calibration["steps"] else ""
    return (f"calibrated on {calibration['units']} {calibration['units_kind']} of withheld observations "
            f"({calibration['points']} points, {calibration['fits']} extra fit(s){steps})")
