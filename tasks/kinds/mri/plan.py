"""Planning an MRI run: what will be computed, how big it is, and the store it goes into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inversa.tasks.core.inputs import dataset_name
from inversa.tasks.core.kind import Plan, StoreTemplate
from inversa.tasks.core.methods import PRIOR_PARAM, prior_of
from inversa.tasks.core.priors import prior_record
from inversa.tasks.core.stores import plan_regions
from inversa.tasks.kinds.mri.measurement import (
    SCALE_PERCENTILE, load_measurement, load_reference, maps_source, pixel_size_mm,
)
from inversa.tasks.kinds.mri.methods import MRI_METHODS
from inversa.tasks.kinds.mri.recipe import MRIRecipe
from inversa.tasks.kinds.mri.region import COMPLEX_MEAN, REFERENCE_METRICS

INTERVAL_KIND = "gaussian"
INTERVAL_DESCRIPTION = (
    "mean +- z * interval_scale * std of the magnitude |x|, z the standard normal quantile of "
    "(1 + credible_level) / 2; std is the unbiased sample standard deviation of the magnitudes of the "
    "posterior samples"
)
SCALING = (f"each slice is divided by the {SCALE_PERCENTILE:g}th percentile of its zero-filled SENSE magnitude "
           "before it is reconstructed, and multiplied back after")


@dataclass(kw_only=True)
class MRIPlan(Plan):
    coils: int
    matrix: tuple[int, int]
    acceleration: float
    sensitivities: str
    field_of_view_mm: list[float] | None = None
    prior: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    reference: bool = False


def make_plan(recipe: MRIRecipe) -> MRIPlan:
    """Read and validate the k-space (and reference) and size the run, writing nothing."""
    ds = load_measurement(recipe)
    n_slices, coils, ny, nx = (int(ds.sizes[d]) for d in ("slice", "coil", "ky", "kx"))
    reference = load_reference(recipe)
    if reference is not None and (reference.sizes.get("slice", 1) != n_slices or reference.shape[-2:] != (ny, nx)):
        raise ValueError(f"{recipe.reference or recipe.input}: reference {tuple(reference.shape)}: expected "
                         f"{n_slices} slice(s) of {ny} x {nx} (the k-space matrix)")
    if recipe.sensitivity.source == "file" and "sensitivity" not in ds:
        raise ValueError(f"{recipe.input}: sensitivity.source is 'file' but the input has no 'sensitivity' variable")
    sampler = MRI_METHODS.build(recipe.method.name, recipe.method.params, "cpu")  # loads and checks a prior
    samples = recipe.samples_drawn
    prior = prior_of(sampler)
    chunk = min(samples, 8)
    per_slice = 2 * coils * ny * nx * 8 + chunk * ny * nx * 4 * (48 if prior is not None else 8)
    storage = n_slices * ny * nx * 4 * (4 + (samples if recipe.store_samples else 0)
                                        + (2 if recipe.store_complex_mean else 0) + (1 if reference is not None else 0))
    return MRIPlan(
        kind="mri", dataset=dataset_name(recipe.input), input=str(recipe.input), output=recipe.output,
        n_slices=n_slices, leading_dim="slice", regions=plan_regions(n_slices, recipe.region_size),
        method=recipe.method.name, method_params=MRI_METHODS.provenance_params(sampler, recipe.method.params),
        samples=samples, estimated_memory_bytes=int(recipe.region_size * per_slice),
        estimated_storage_bytes=int(storage), prepare="calibrate" if recipe.calibration is not None else None,
        coils=coils, matrix=(ny, nx), acceleration=float(ds.attrs.get("acceleration", 1.0)),
        sensitivities=maps_source(recipe, ds),
        field_of_view_mm=ds.attrs.get("field_of_view_mm"),
        prior=prior_record(recipe.method.params[PRIOR_PARAM]) if prior is not None else None,
        calibration=({**recipe.calibration.model_dump(), "pairs": recipe.calibration_pairs,
                      "samples": recipe.calibration_samples} if recipe.calibration is not None else None),
        reference=reference is not None,
    )


def store_template(recipe: MRIRecipe, plan: MRIPlan) -> StoreTemplate:
    ds = load_measurement(recipe)
    metrics = ("data_residual", *REFERENCE_METRICS) if plan.reference else ("data_residual",)
    layout = {
        "n_slices": plan.n_slices,
        "image_shape": plan.matrix,
        "pixel_size_mm": pixel_size_mm(ds),
        "n_samples": plan.samples if recipe.store_samples else 0,
        "with_reference": plan.reference,
        "metric_names": metrics,
        "slice_coord": ds["slice"].values,
        "extra_images": COMPLEX_MEAN if recipe.store_complex_mean else (),
    }
    provenance = {
        "seeding": "per slice: SeedSequence([seed, slice_index])",
        "samples": plan.samples,
        "matrix": list(plan.matrix),
        "coils": plan.coils,
        "acceleration": plan.acceleration,
        "undersampling": recipe.undersampling.model_dump() if recipe.undersampling is not None else None,
        "sensitivities": plan.sensitivities,
        "scaling": SCALING,
        "prior": plan.prior,
        "interval_kind": INTERVAL_KIND if plan.samples > 1 else None,
        "calibration": plan.calibration,
    }
    attrs: dict[str, Any] = {"image": "magnitude |x| of the complex image", "units": ds.attrs.get("units", "a.u.")}
    if plan.samples <= 1:
        attrs["interval_kind"] = "none (point estimate: std, lower and upper are NaN)"
    else:
        attrs.update(interval_kind=INTERVAL_KIND, interval_definition=INTERVAL_DESCRIPTION)
    return StoreTemplate(layout=layout, provenance=provenance, attrs=attrs)


def describe(recipe: MRIRecipe, plan: MRIPlan) -> list[str]:
    ny, nx = plan.matrix
    fov = f", field of view {plan.field_of_view_mm[0]:g} x {plan.field_of_view_mm[1]:g} mm" if plan.field_of_view_mm else ""
    return [
        f"input      {plan.input}",
        f"measured   {plan.n_slices} slice(s) x {plan.coils} coil(s) x {ny} x {nx} k-space{fov}, "
        f"acceleration {plan.acceleration:.3g}",
        f"coils      sensitivities from {plan.sensitivities}",
        f"method     {plan.method} {plan.method_params}, {plan.samples} sample(s)"
        + ((f", calibrated on {plan.calibration['pairs']} simulated pairs of {plan.calibration['samples']} draws "
           "(kept on disk for reuse)") if plan.calibration else (", calibration off" if plan.samples > 1 else "")),
        f"reference  {'yes: PSNR, SSIM, NRMSE, coverage' if plan.reference else 'none (data residual only)'}",
        f"regions    {len(plan.regions)} of up to {recipe.region_size} slice(s)",
    ]
