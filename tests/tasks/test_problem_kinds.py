"""The problem-kind contract: every registered kind, on a tiny case, through the generic pipeline.

Plan, store template, the one-off preparation, every region (with progress), the store read
back, summary and preview, and resume: a rerun reopens the store, skips what is done, and a
region whose record is lost is redone to the same numbers. Prefect-free: the kinds are called
as the thin Prefect tasks call them. A kind registered without a case here fails
``test_every_registered_kind_has_a_contract_case``, so a new kind cannot skip the contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from inversa.data.store import LEADING_DIMS, ResultStore, StoreConflict
from inversa.flows.cli_field_study import write_field_study
from inversa.tasks.core.kind import Plan, Prepared, Preview, ProblemKind
from inversa.tasks.core.recipe import RecipeBase, load_recipe
from inversa.tasks.core.stores import check_output, create_store, make_plan
from inversa.tasks.kinds import kind_named, kind_names, kind_of
from tests.flows.helpers import tiny_mri_prior, tiny_mri_study, tiny_study


def _ct_case(directory: Path) -> RecipeBase:
    measurement, truth = tiny_study(directory, n_slices=3)
    return load_recipe("ct-gaussian", ["samples=4", "region_size=2", "calibration.pairs=10"],
                       input=str(measurement), reference=str(truth), output=str(directory / "ct.zarr"))


def _field_case(directory: Path) -> RecipeBase:
    obs, truth = write_field_study("darcy", directory / "d.nc", {"n": 9, "n_sensors": 30, "seed": 4,
                                                                 "coefficient": "constant", "source": "sine"})
    return load_recipe("field-gp", ["region_size=4", "method.params.max_iter=10", "holdout.fraction=0.2"],
                       input=str(obs), reference=str(truth), output=str(directory / "field.zarr"))


def _mri_case(directory: Path) -> RecipeBase:
    measurement, truth = tiny_mri_study(directory)
    prior = tiny_mri_prior(directory / "prior")
    return load_recipe("mri-dds", [f"method.params.prior={prior}", "method.params.n_steps=4", "samples=3",
                                   "calibration.pairs=10", "store_complex_mean=true"],
                       input=str(measurement), reference=str(truth), output=str(directory / "mri.zarr"))


CASES = {"ct": _ct_case, "field": _field_case, "mri": _mri_case}


def test_every_registered_kind_has_a_contract_case():
    assert sorted(CASES) == kind_names()


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    recipe = CASES[request.param](tmp_path_factory.mktemp(request.param))
    return request.param, recipe


def _read(store: ResultStore) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(store.path)
    return {name: ds[name].values.copy() for name in ("mean", "std", "lower", "upper")}


def test_the_kind_runs_the_generic_pipeline_and_resumes(case):
    name, recipe = case
    kind = kind_of(recipe)
    assert isinstance(kind, ProblemKind) and kind is kind_named(name) and kind.name == recipe.kind == name
    assert isinstance(recipe, kind.recipe_model)

    plan = make_plan(recipe)
    assert isinstance(plan, Plan) and plan.kind == name and plan.leading_dim in LEADING_DIMS
    starts, stops = zip(*plan.regions)
    assert starts[0] == 0 and stops[-1] == plan.n_slices and list(starts[1:]) == list(stops[:-1])
    assert plan.estimated_memory_bytes > 0 and plan.estimated_storage_bytes > 0
    lines = kind.describe(recipe, plan)
    assert lines and all(isinstance(line, str) and line for line in lines)

    digest = recipe.digest()
    store = create_store(recipe, digest, plan, overwrite=False)
    assert store.provenance["kind"] == name and store.provenance["recipe_digest"] == digest
    assert store.provenance["input_digest"] == kind.input_digest(recipe)
    assert store.layout.leading_dim == plan.leading_dim and store.layout.n_slices == plan.n_slices
    assert store.regions == [tuple(r) for r in plan.regions] and store.pending_regions() == list(range(len(plan.regions)))

    if plan.prepare:
        prepared = kind.prepare(store, recipe)
        assert isinstance(prepared, Prepared) and prepared.message
        assert kind.prepare(store, recipe).record == prepared.record  # a rerun reads it, never redoes it

    for index in store.pending_regions():
        fractions: list[float] = []
        record = kind.reconstruct_region(store, index, recipe, fractions.append)
        assert (record["index"], (record["start"], record["stop"])) == (index, store.regions[index])
        assert record["seconds"] >= 0 and index in store.done_regions()
        assert all(0 <= f <= 1 for f in fractions) and fractions == sorted(fractions)

    arrays = _read(store)
    observed = np.isfinite(arrays["mean"])
    assert observed.any()
    std = arrays["std"][observed]
    assert (std > 0).all()
    assert (arrays["lower"][observed] <= arrays["mean"][observed] + 1e-6).all()
    assert (arrays["upper"][observed] >= arrays["mean"][observed] - 1e-6).all()

    summary = kind.summarize(store)
    assert summary["regions"] == summary["regions_done"] == len(store.regions)
    preview = kind.preview(store, 0)
    assert isinstance(preview, Preview) and preview.caption and [p.label for p in preview.panels][:2] == ["mean", "std"]
    assert all(p.image.ndim == 2 for p in preview.panels)

    # Resume: the same recipe reopens the store with nothing pending and nothing rewritten.
    check_output(recipe, digest, overwrite=False)
    again = create_store(recipe, digest, make_plan(recipe), overwrite=False)
    assert again.pending_regions() == [] and [again.region_record(i)["write_count"] for i in range(len(again.regions))] \
        == [1] * len(again.regions)
    # A region whose record is lost is redone, and to the same numbers.
    last = len(store.regions) - 1
    (store.path / "_inversa" / "regions" / f"{last}.json").unlink()
    assert create_store(recipe, digest, make_plan(recipe), overwrite=False).pending_regions() == [last]
    kind.reconstruct_region(store, last, recipe)
    redone = _read(store)
    for variable, values in arrays.items():
        np.testing.assert_allclose(redone[variable], values, rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=variable)

    # Another recipe is refused on the same store.
    other = recipe.with_fields(seed=recipe.seed + 1)
    with pytest.raises(StoreConflict, match="holds another run"):
        check_output(other, other.digest(), overwrite=False)
