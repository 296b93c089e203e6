"""A field run's credible intervals, calibrated or not: one rule for the map and the scores.

The store keeps the posterior of the latent field: ``mean`` and ``std``. What a withheld
observation can check is the interval of a *new measurement*, whose spread is the latent std and
the observation noise together, ``sqrt(std^2 + noise^2)`` (the predictive std). The calibration
(tasks/kinds/field/calibration.py) finds, from withheld observations, a factor per band of that
predictive std. Every interval of the run applies it the same way:

* the stored interval of the field is ``mean -+ z * factor * std``, the factor looked up at
  each cell's predictive std (``models.conformal.scale_map``), so cells far from the data,
  whose std is large, take the factor of the blocks whose std was large;
* a held-out point is scored against ``mean -+ z * factor * sqrt(std^2 + noise^2)``, the very
  interval the factor was calibrated for.

Why one factor on the whole predictive spread and not on the latent part alone: measurements
cannot tell the two parts apart, and where the noise dominates (PIV: noise about twice the latent
std) a latent-only factor is barely determined: coverage hardly moves as it changes, so a
small excess of coverage drives it to zero, a small shortfall to several times the std. Scaling
both keeps the factor stable; it trusts the estimated noise as much as the estimated std.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inversa.data.store import ResultStore
from inversa.models.conformal import scale_map
from inversa.models.uq import gaussian_interval
from inversa.tasks.core.calibration import CALIBRATION_FILE, existing_record
from inversa.tasks.kinds.field.recipe import FieldRecipe


def predictive_std(std, noise_variance) -> np.ndarray:
    """The std of a new measurement: latent std and observation noise (per component) together."""
    return np.sqrt(np.square(np.asarray(std, dtype=np.float64)) + np.asarray(noise_variance, dtype=np.float64))


def calibration_record(store: ResultStore, recipe: FieldRecipe) -> dict[str, Any] | None:
    """The store's calibration record; None with calibration off; an error when it should exist
    but the preparation that makes it has not run."""
    if recipe.calibration is None:
        return None
    record = existing_record(store)
    if record is None:
        raise ValueError(f"{store.path}: the recipe asks for calibrated intervals but {CALIBRATION_FILE} is "
                         "missing from the store; the run's prepare step (calibrate) must run before its regions")
    return record


def interval_factor(record: dict[str, Any] | None, std, noise_variance) -> np.ndarray | float:
    """Each point's factor on its interval half-width (1 without calibration)."""
    if record is None:
        return 1.0
    return scale_map(record, predictive_std(std, noise_variance))


def field_interval(mean, std, noise_variance, level: float,
                   record: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """The stored interval of the latent field, ``mean -+ z * factor * std`` (float32)."""
    std = np.asarray(std, dtype=np.float64)
    return gaussian_interval(mean, std, level, interval_factor(record, std, noise_variance))
