"""Planning a CT run: what will be computed, how big it is, and the store it goes into."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inversa.models.physics.tomography import ct_operator
from inversa.tasks.core.devices import resolve_device
from inversa.tasks.core.inputs import dataset_name
from inversa.tasks.core.kind import Plan, StoreTemplate
from inversa.tasks.core.priors import prior_record
from inversa.tasks.core.stores import plan_regions
from inversa.tasks.kinds.ct.measurement import load_measurement, load_reference
from inversa.tasks.kinds.ct.methods import PRIOR_PARAM, sampler_params
from inversa.tasks.kinds.ct.recipe import CTRecipe
from inversa.tasks.kinds.ct.region import METRICS
from inversa.tasks.kinds.ct.setup import setup_for, validated

INTERVAL_KIND = "gaussian"  # see tasks/kinds/ct/region.py; recorded in the store's attrs
INTERVAL_DESCRIPTION = (
    "mean +- z * interval_scale * std, z the standard normal quantile of (1 + credible_level) / 2; "
    "std is the unbiased sample standard deviation of the posterior samples on the output grid"
)
OUTSIDE_VIEW_DESCRIPTION = (
    "output pixels beyond the prior's field of view: mean, samples 0 (the operator had no pixels "
    "there); std the nearest in-view value (the data said nothing there; 0 would claim certainty)"
)


@dataclass(kw_only=True)
class CTPlan(Plan):
    n_angles: int
    n_det: int
    geometry: str
    angle_span_deg: float
    image_size: int
    pixel_size_mm: float
    working_image_size: int | None = None
    working_pixel_size_mm: float | None = None
    prior: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None


def make_plan(recipe: CTRecipe) -> CTPlan:
    """Validate the input (and reference) and size the run, writing nothing."""
    setup = setup_for(recipe, resolve_device("cpu"))  # the network is checked, not used: no GPU needed
    measurement, grid = setup.measurement, setup.grid
    validated(measurement, grid, recipe)
    n_slices = int(measurement.sizes["slice"])
    if recipe.reference:
        ref = load_reference(recipe.reference, recipe.reference_variable)
        if ref.shape[-2:] != (grid.size, grid.size) or ref.sizes.get("slice", 1) != n_slices:
            raise ValueError(
                f"{recipe.reference}: variable {ref.name!r}: expected {n_slices} slice(s) of "
                f"{grid.size} x {grid.size} to match the reconstruction grid, got {tuple(ref.shape)}"
            )
    sampler = setup.sampler
    samples = recipe.samples_drawn
    n_angles, n_det = int(measurement.sizes["angle"]), int(measurement.sizes["detector"])
    pixels = grid.size * grid.size
    matrix = ct_operator(setup.geometry).matrix_bytes() if sampler.uses_system_matrix else 0
    working = recipe.region_size * (setup.work.size**2 * 2 * min(samples, 8) + pixels * (8 + min(samples, 8))
                                    + 4 * n_angles * n_det) * 4
    storage = n_slices * pixels * 4 * (4 + (samples if recipe.store_samples else 0))
    angles = measurement["angle"].values
    return CTPlan(
        kind="ct",
        dataset=dataset_name(recipe.input),
        input=str(recipe.input),
        output=recipe.output,
        n_slices=n_slices,
        leading_dim="slice",
        regions=plan_regions(n_slices, recipe.region_size),
        method=recipe.method.name,
        method_params=sampler_params(sampler, recipe.method.params),
        samples=samples,
        estimated_memory_bytes=int(matrix + working),
        estimated_storage_bytes=int(storage),
        prepare="calibrate" if recipe.calibration is not None else None,
        n_angles=n_angles,
        n_det=n_det,
        geometry=setup.geometry.kind,
        angle_span_deg=float(math.degrees(angles.max() - angles.min())) if len(angles) > 1 else 0.0,
        image_size=grid.size,
        pixel_size_mm=grid.pixel_size_mm,
        working_image_size=setup.work.size,
        working_pixel_size_mm=setup.work.pixel_size_mm,
        prior=prior_record(recipe.method.params[PRIOR_PARAM]) if setup.prior is not None else None,
        calibration=({**recipe.calibration.model_dump(), "pairs": recipe.calibration_pairs,
                      "samples": recipe.calibration_samples} if recipe.calibration is not None else None),
    )


UNITS = "1/mm"  # linear attenuation, what every CT reader converts to


def interval_attrs(plan: CTPlan) -> dict[str, Any]:
    """How the store's intervals were made, as attrs a reader sees without reading provenance."""
    if plan.samples <= 1:
        return {"interval_kind": "none (point estimate: std, lower and upper are NaN)", "units": UNITS}
    attrs = {"interval_kind": INTERVAL_KIND, "interval_definition": INTERVAL_DESCRIPTION, "units": UNITS}
    if (plan.working_image_size, plan.working_pixel_size_mm) != (plan.image_size, plan.pixel_size_mm):
        whose = "the prior's" if plan.prior is not None else "the recipe's working"
        attrs["resampling"] = (
            f"sampled on {whose} {plan.working_image_size} x {plan.working_image_size} grid of "
            f"{plan.working_pixel_size_mm:g} mm, bilinear to the output grid at its pixel centres; "
            + OUTSIDE_VIEW_DESCRIPTION
        )
    return attrs


def store_template(recipe: CTRecipe, plan: CTPlan) -> StoreTemplate:
    measurement = load_measurement(recipe)
    layout = {
        "n_slices": plan.n_slices,
        "image_shape": (plan.image_size, plan.image_size),
        "pixel_size_mm": plan.pixel_size_mm,
        "n_samples": plan.samples if recipe.store_samples else 0,
        "with_reference": bool(recipe.reference),
        "metric_names": METRICS if recipe.reference else (),
        "slice_coord": measurement["slice"].values if "slice" in measurement.coords else None,
    }
    provenance = {
        "seeding": "per slice: SeedSequence([seed, slice_index])",
        "samples": plan.samples,
        "grid": {"size": plan.image_size, "pixel_size_mm": plan.pixel_size_mm},
        "working_grid": {"size": plan.working_image_size, "pixel_size_mm": plan.working_pixel_size_mm},
        "prior": plan.prior,
        "interval_kind": INTERVAL_KIND if plan.samples > 1 else None,
        "calibration": plan.calibration,
    }
    attrs = interval_attrs(plan)
    if recipe.reference:  # a segmentation scores the MCC only: previews draw it, not an error against it
        attrs["reference_kind"] = load_reference(recipe.reference, recipe.reference_variable).attrs.get("kind", "image")
    return StoreTemplate(layout=layout, provenance=provenance, attrs=attrs)


def describe(recipe: CTRecipe, plan: CTPlan) -> list[str]:
    return [
        f"input      {plan.input}",
        f"measured   {plan.n_slices} slice(s) x {plan.n_angles} views ({plan.angle_span_deg:.1f} deg) "
        f"x {plan.n_det} detectors, {plan.geometry} beam",
        f"grid       {plan.image_size} x {plan.image_size} at {plan.pixel_size_mm:.4g} mm",
        f"method     {plan.method} {plan.method_params}, {plan.samples} sample(s)"
        + ((f", calibrated on {plan.calibration['pairs']} simulated pairs of {plan.calibration['samples']} draws "
           "(kept on disk for reuse)") if plan.calibration else (", calibration off" if plan.samples > 1 else "")),
        f"regions    {len(plan.regions)} of up to {recipe.region_size} slice(s)",
    ]

