"""Planning a run: what will be computed, how big it is, and the store it goes into.

`inversa check` prints the plan without writing anything; the flow creates the store template
from the same plan, so what `check` promises is what `run` does.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from inversa.data.store import ResultStore, StoreConflict, StoreError
from inversa.models.physics.tomography import ct_operator
from inversa.tasks.measurement import geometry_for, grid_for, input_digest, load_measurement, load_reference, working_grid
from inversa.tasks.methods import PRIOR_PARAM, build_sampler, method_defaults, prior_of, prior_record, sampler_params
from inversa.tasks.region import INTERVAL_DESCRIPTION, INTERVAL_KIND, METRICS, OUTSIDE_VIEW_DESCRIPTION


@dataclass
class Plan:
    dataset: str
    input: str
    output: str | None
    n_slices: int
    n_angles: int
    n_det: int
    geometry: str
    angle_span_deg: float
    image_size: int
    pixel_size_mm: float
    regions: list[tuple[int, int]]
    method: str
    method_params: dict[str, Any]
    samples: int
    estimated_memory_bytes: int
    estimated_storage_bytes: int
    working_image_size: int | None = None
    working_pixel_size_mm: float | None = None
    prior: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

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


def dataset_name(path: str | None) -> str:
    if not path:
        return "no-input"
    name = Path(path).name
    if any(c in name for c in "*?["):  # a glob of frames: named after their directory
        return Path(path).parent.name or "frames"
    for suffix in (".zarr", ".nc", ".mat", ".h5", ".hdf5", ".npz", ".npy", ".vec",
                   ".csv", ".csv.gz", ".csv.xz", ".csv.bz2", ".csv.zip", ".txt", ".txt.gz", ".txt.xz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_regions(n_slices: int, region_size: int) -> list[tuple[int, int]]:
    return [(a, min(a + region_size, n_slices)) for a in range(0, n_slices, region_size)]


def is_field(recipe: dict[str, Any]) -> bool:
    return recipe.get("kind") == "field"


def make_plan(recipe: dict[str, Any]) -> Plan:
    """Validate the input (and reference) and size the run, writing nothing."""
    if is_field(recipe):
        from inversa.tasks.field_run import make_field_plan

        return make_field_plan(recipe)
    measurement = load_measurement(recipe)
    grid = grid_for(recipe, measurement)
    geometry = geometry_for(measurement, grid)
    geometry.validate()
    n_slices = int(measurement.sizes["slice"])
    if recipe.get("reference"):
        ref = load_reference(recipe["reference"], recipe.get("reference_variable"))
        if ref.shape[-2:] != (grid.size, grid.size) or ref.sizes.get("slice", 1) != n_slices:
            raise ValueError(
                f"{recipe['reference']}: variable {ref.name!r}: expected {n_slices} slice(s) of "
                f"{grid.size} x {grid.size} to match the reconstruction grid, got {tuple(ref.shape)}"
            )
    method = recipe["method"]
    params = method.get("params") or {}
    sampler = build_sampler(method["name"], params)
    if recipe.get("calibration") and sampler.deterministic:
        raise ValueError(f"recipe {recipe.get('name')!r}: calibration needs a method with uncertainty; "
                         f"{method['name']!r} gives a point estimate")
    prior = prior_of(sampler)
    work = working_grid(prior, grid) if prior is not None else grid
    if prior is not None:
        geometry = geometry_for(measurement, work)
        geometry.validate()
    samples = 1 if sampler.deterministic else int(recipe["samples"])
    region_size = int(recipe.get("region_size") or 1)
    n_angles, n_det = int(measurement.sizes["angle"]), int(measurement.sizes["detector"])
    pixels = grid.size * grid.size
    matrix = ct_operator(geometry).matrix_bytes() if sampler.uses_system_matrix else 0
    working = region_size * (work.size**2 * 2 * min(samples, 8) + pixels * (8 + min(samples, 8))
                             + 4 * n_angles * n_det) * 4
    per_image = pixels * 4
    storage = n_slices * per_image * (4 + (samples if recipe.get("store_samples") else 0))
    angles = measurement["angle"].values
    return Plan(
        dataset=dataset_name(recipe.get("input")),
        input=str(recipe["input"]),
        output=recipe.get("output"),
        n_slices=n_slices,
        n_angles=n_angles,
        n_det=n_det,
        geometry=geometry.kind,
        angle_span_deg=float(math.degrees(angles.max() - angles.min())) if len(angles) > 1 else 0.0,
        image_size=grid.size,
        pixel_size_mm=grid.pixel_size_mm,
        regions=plan_regions(n_slices, region_size),
        method=method["name"],
        method_params={**method_defaults(method["name"]), **sampler_params(sampler, params)},
        samples=samples,
        estimated_memory_bytes=int(matrix + working),
        estimated_storage_bytes=int(storage),
        working_image_size=work.size,
        working_pixel_size_mm=work.pixel_size_mm,
        prior=prior_record(params[PRIOR_PARAM]) if prior is not None else None,
        calibration=dict(recipe["calibration"]) if recipe.get("calibration") else None,
    )


def provenance(recipe: dict[str, Any], recipe_digest: str, plan: Plan) -> dict[str, Any]:
    return {
        "recipe": recipe,
        "recipe_digest": recipe_digest,
        "input": str(Path(recipe["input"]).resolve()),
        "input_digest": input_digest(recipe["input"]),
        "reference": str(Path(recipe["reference"]).resolve()) if recipe.get("reference") else None,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "seed": int(recipe.get("seed", 0)),
        "seeding": "per slice: SeedSequence([seed, slice_index])",
        "method": plan.method,
        "method_params": plan.method_params,
        "samples": plan.samples,
        "grid": {"size": plan.image_size, "pixel_size_mm": plan.pixel_size_mm},
        "working_grid": {"size": plan.working_image_size, "pixel_size_mm": plan.working_pixel_size_mm},
        "prior": plan.prior,
        "interval_kind": INTERVAL_KIND if plan.samples > 1 else None,
        "calibration": plan.calibration,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def interval_attrs(plan: Plan) -> dict[str, Any]:
    """How the store's intervals were made, as attrs a reader sees without reading provenance."""
    if plan.samples <= 1:
        return {"interval_kind": "none (point estimate: std, lower and upper are NaN)"}
    attrs = {"interval_kind": INTERVAL_KIND, "interval_definition": INTERVAL_DESCRIPTION}
    if plan.prior is not None and (plan.working_image_size, plan.working_pixel_size_mm) != (
            plan.image_size, plan.pixel_size_mm):
        attrs["resampling"] = (
            f"sampled on the prior's {plan.working_image_size} x {plan.working_image_size} grid of "
            f"{plan.working_pixel_size_mm:g} mm, bilinear to the output grid at its pixel centres; "
            + OUTSIDE_VIEW_DESCRIPTION
        )
    return attrs


def create_store(recipe: dict[str, Any], recipe_digest: str, plan: Plan, overwrite: bool) -> ResultStore:
    if is_field(recipe):
        from inversa.tasks.field_run import create_field_store

        return create_field_store(recipe, recipe_digest, plan, overwrite)
    store = _create_store(recipe, recipe_digest, plan, overwrite)
    attrs = interval_attrs(plan)
    if any(store.attrs.get(k) != v for k, v in attrs.items()):
        store.update_attrs(attrs)
    return store


def _create_store(recipe: dict[str, Any], recipe_digest: str, plan: Plan, overwrite: bool) -> ResultStore:
    measurement = load_measurement(recipe)
    return ResultStore.create(
        recipe["output"],
        n_slices=plan.n_slices,
        image_shape=(plan.image_size, plan.image_size),
        pixel_size_mm=plan.pixel_size_mm,
        region_size=int(recipe.get("region_size") or 1),
        provenance=provenance(recipe, recipe_digest, plan),
        credible_level=float(recipe.get("credible_level", 0.9)),
        n_samples=plan.samples if recipe.get("store_samples") else 0,
        with_reference=bool(recipe.get("reference")),
        metric_names=METRICS if recipe.get("reference") else (),
        slice_coord=measurement["slice"].values if "slice" in measurement.coords else None,
        overwrite=overwrite,
    )


def check_output(recipe: dict[str, Any], recipe_digest: str, overwrite: bool) -> None:
    """Refuse, before anything runs, an output that holds something other than this run's store."""
    path = Path(recipe["output"])
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
    if is_field(recipe):
        from inversa.tasks.field_run import field_input_digest

        digest = field_input_digest(recipe["input"])
    else:
        digest = input_digest(recipe["input"])
    if stored.get("input_digest") != digest:
        differ.append(f"input digest {str(stored.get('input_digest'))[:19]} != {digest[:19]}")
    if differ:
        raise StoreConflict(
            f"{path}: holds another run ({'; '.join(differ)}); pass --overwrite to replace it, "
            "or choose another --output"
        )
