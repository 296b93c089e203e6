"""Conformal calibration of a run's intervals, the part every problem kind shares.

A posterior's spread is only as honest as its prior and its sampler's approximations, so a
nominal 90 % interval may cover far less. A kind that calibrates simulates held-out pairs of its
own kind in the run's own setting (geometry, mask, noise level), reconstructs them with the very
sampler and sample count of the run, and hands the means, intervals and truths to
``conformal_record``: the factor on the interval half-widths that brings the expected fraction of
uncovered pixels down to ``alpha`` (``models.uq.conformal_interval_scale``). The record goes to
``<store>/_inversa/calibration.json``; every region scales its interval by it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from inversa.data.store import ResultStore
from inversa.models.uq import conformal_interval_scale, coverage, gaussian_interval, interval_scores, scale_interval
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
        raise ValueError(f"recipe {recipe.name!r}: no calibration block; nothing to calibrate")
    return existing_record(store)


PairPosterior = Callable[[int, int], tuple[np.ndarray, np.ndarray, int]]


def pair_intervals(n_pairs: int, per_call: int, posterior: PairPosterior,
                   credible_level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Means and unscaled intervals of all pairs, ``per_call`` pairs at a time (memory grows with
    pairs times samples); ``posterior(first, stop)`` gives the mean, std and NFE of those pairs."""
    means, lowers, uppers, nfe = [], [], [], 0
    for first in range(0, n_pairs, per_call):
        stop = min(first + per_call, n_pairs)
        mean, std, calls = posterior(first, stop)
        lower, upper = gaussian_interval(mean, std, credible_level, 1.0)
        means.append(mean)
        lowers.append(lower)
        uppers.append(upper)
        nfe += int(calls)
    return np.concatenate(means), np.concatenate(lowers), np.concatenate(uppers), nfe


def conformal_record(mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, truth: np.ndarray,
                     recipe: PosteriorRecipe, **facts: Any) -> dict[str, Any]:
    """The scale that calibrates the intervals on these pairs, coverage before and after, and ``facts``."""
    alpha = recipe.calibration_alpha
    scale = conformal_interval_scale(interval_scores(mean, lower, upper, truth), alpha=alpha)
    scaled_lower, scaled_upper = scale_interval(mean, lower, upper, scale)
    return {
        "scale": float(scale),
        "alpha": alpha,
        "credible_level": recipe.credible_level,
        "pairs": recipe.calibration.pairs,
        "seed": recipe.calibration.seed,
        "samples": recipe.samples,
        "coverage_before": float(coverage(lower, upper, truth)),
        "coverage_after": float(coverage(scaled_lower, scaled_upper, truth)),
        **facts,
    }


def save_record(store: ResultStore, record: dict[str, Any]) -> dict[str, Any]:
    record = {**record, "recipe_digest": store.provenance.get("recipe_digest")}
    store.write_meta_json(CALIBRATION_FILE, record)
    store.update_attrs({"calibration": record, "interval_scale": record["scale"]})
    return record


def interval_scale(store: ResultStore, recipe: PosteriorRecipe) -> float:
    """The calibration's interval factor (1 without calibration)."""
    if recipe.calibration is None:
        return 1.0
    record = store.read_meta_json(CALIBRATION_FILE)
    if record is None or "scale" not in record:
        raise ValueError(
            f"{store.path}: the recipe asks for calibration but {CALIBRATION_FILE} is missing from the store; "
            "the calibrate task must run before the regions"
        )
    return float(record["scale"])


def calibration_summary(store: ResultStore) -> dict[str, Any]:
    """The calibration's numbers for the run summary (nothing when the run was not calibrated)."""
    record = store.read_meta_json(CALIBRATION_FILE)
    if record is None:
        return {}
    return {
        "interval_scale": record["scale"],
        "calibration_pairs": record["pairs"],
        "calibration_coverage_before": record["coverage_before"],
        "calibration_coverage_after": record["coverage_after"],
    }
