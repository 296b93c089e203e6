"""Conformal calibration of a run's intervals, the part every problem kind shares.

A posterior's spread is only as honest as its prior and its sampler's approximations, so a
nominal 90 % interval may cover far less. A kind that calibrates simulates held-out pairs of its
own kind in the run's own setting (geometry, mask, noise level), reconstructs them with the very
sampler of the run (with fewer draws per pair: the factor is carried over to the run's sample
count), and hands the means, stds and truths to ``calibration_record``. Each pair is cut into
tiles, the conformal units; the factor on the half-widths depends on the local std (one per
std band, ``models.conformal``), so the std can point at the errors. The record goes to
``<store>/_inversa/calibration.json``; every region scales its interval by ``scale_map``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from inversa.data.store import ResultStore
from inversa.models.conformal import calibrate_gaussian, sample_std_factor, scale_map
from inversa.tasks.core.calibration_plot import write_calibration_png
from inversa.tasks.core.recipe import PosteriorRecipe

CALIBRATION_FILE = "calibration.json"


def existing_record(store: ResultStore) -> dict[str, Any] | None:
    """This run's record if a previous attempt made it (the store is tied to the recipe's digest,
    which covers the calibration block)."""
    record = store.read_meta_json(CALIBRATION_FILE)
    if record is not None and record.get("recipe_digest") == store.provenance.get("recipe_digest"):
        return record
    return None


def reusable_record(store: ResultStore, recipe: PosteriorRecipe) -> dict[str, Any] | None:
    """The record a previous attempt stored for this recipe, None when the study must run, and an
    error when the recipe has nothing to calibrate."""
    if recipe.calibration is None:
        raise ValueError(f"recipe {recipe.name!r}: calibration is off; nothing to calibrate")
    return existing_record(store)


PairPosterior = Callable[[int, int], tuple[np.ndarray, np.ndarray, int]]


def pair_posteriors(n_pairs: int, per_call: int, posterior: PairPosterior) -> dict[str, Any]:
    """Means and stds of all pairs, ``per_call`` pairs at a time (memory grows with pairs times
    samples); ``posterior(first, stop)`` gives the mean, std and NFE of those pairs."""
    means, stds, nfe = [], [], 0
    for first in range(0, n_pairs, per_call):
        stop = min(first + per_call, n_pairs)
        mean, std, calls = posterior(first, stop)
        means.append(np.asarray(mean, dtype=np.float32))
        stds.append(np.asarray(std, dtype=np.float32))
        nfe += int(calls)
    return {"mean": np.concatenate(means), "std": np.concatenate(stds), "nfe": np.int64(nfe)}


def tiles(images: np.ndarray, per_side: int) -> list[np.ndarray]:
    """Each image cut into ``per_side`` x ``per_side`` tiles along its last two axes (the units
    the conformal guarantee is stated over: more units per simulated pair, fewer pairs)."""
    out = []
    for image in np.asarray(images):
        for rows in np.array_split(image, per_side, axis=-2):
            out.extend(np.array_split(rows, per_side, axis=-1))
    return out


def calibration_record(mean: np.ndarray, std: np.ndarray, truth: np.ndarray, recipe: PosteriorRecipe,
                       **facts: Any) -> dict[str, Any]:
    """The std-banded factors that calibrate these pairs' intervals, coverage before and after
    (overall, per band, along 50-95 %), and ``facts``."""
    per_side = recipe.CALIBRATION_TILES
    factor = sample_std_factor(recipe.calibration_samples, recipe.samples, recipe.credible_level)
    numbers = calibrate_gaussian(tiles(mean, per_side), tiles(std, per_side), tiles(truth, per_side),
                                 recipe.credible_level, recipe.calibration_alpha, recipe.calibration.bands,
                                 factor=factor)
    return {
        **numbers,
        "alpha": recipe.calibration_alpha,
        "credible_level": recipe.credible_level,
        "pairs": recipe.calibration_pairs,
        "tiles_per_pair": per_side * per_side,
        "seed": recipe.calibration.seed,
        "samples": recipe.calibration_samples,
        "run_samples": recipe.samples,
        "sample_count_factor": factor,
        **facts,
    }


def save_record(store: ResultStore, record: dict[str, Any]) -> dict[str, Any]:
    record = {**record, "recipe_digest": store.provenance.get("recipe_digest")}
    store.write_meta_json(CALIBRATION_FILE, record)
    store.update_attrs({"calibration": record, "interval_scale": record["scale"]})
    write_calibration_png(store, record)  # the calibration plot, beside the record
    return record


def interval_scales(store: ResultStore, recipe: PosteriorRecipe, std: np.ndarray | None
                    ) -> tuple[np.ndarray | float, float]:
    """Each pixel's interval factor and the run's global one (1 and 1 without calibration)."""
    if recipe.calibration is None or std is None:
        return 1.0, 1.0
    record = store.read_meta_json(CALIBRATION_FILE)
    if record is None or "scale" not in record:
        raise ValueError(
            f"{store.path}: the recipe asks for calibration but {CALIBRATION_FILE} is missing from the store; "
            "the calibrate task must run before the regions"
        )
    return scale_map(record, std), float(record["scale"])


def calibration_summary(store: ResultStore) -> dict[str, Any]:
    """The calibration's numbers for the run summary (nothing when the run was not calibrated)."""
    record = store.read_meta_json(CALIBRATION_FILE)
    if record is None:
        return {}
    summary = {
        "interval_scale": record["scale"],
        "calibration_pairs": record.get("pairs"),
        "calibration_coverage_before": record["coverage_before"],
        "calibration_coverage_after": record["coverage_after"],
    }
    if record.get("cached") is not None:
        summary["calibration_cached"] = bool(record["cached"])
    if record.get("bands"):
        summary["interval_band_scales"] = [round(float(b["scale"]), 4) for b in record["bands"]]
    return summary
