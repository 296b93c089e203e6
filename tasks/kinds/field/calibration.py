"""Calibrating a field run's intervals on withheld spatial blocks of its own observations.

A GP's or a PINN ensemble's std is only as honest as its kernel, hyperparameters and ensemble
(issue 15 reported an exact GP covering 0.999 of withheld points at 90 %, PINN ensembles
0.73-0.82). Field runs have no simulator to draw calibration pairs from, but they have
observations: this withholds some, predicts them, and finds the conformal factors
(``models.conformal.calibrate_gaussian``, one per band of predictive std) that make the
interval of a new measurement cover ``1 - alpha`` of them (tasks/kinds/field/intervals.py says
how the factors are applied to the map and to the scores).

The scheme, and why:

* **Blocks, not points.** Withheld points are whole spatial blocks (``spatial_blocks``): tiles
  of a regular grid over the observation sites, chosen at random (seeded), every site inside a
  chosen tile withheld. A point withheld alone keeps its neighbours in the fit and looks easier
  than the gaps a map must fill; a block's inside is farther from the data. One block is one
  conformal unit (the points of a block are not exchangeable with each other; blocks are). A
  space-time fit (the heat PINN) withholds a block of sensors at every time.
* **One calibration fit, then the run's own fit of everything.** The calibration fit sees every
  observation but the blocks; the map is the fit of all observations, exactly as without
  calibration (its mean and RMSE do not change), with its intervals scaled. The factor is a
  ratio of error to std, and it carries over from a fit with a tenth fewer sites because both
  shrink together; it is looked up per band of the predictive std, so cells near the data and
  far from it each take the factor measured at their std. Blocked K-fold cross-validation would
  score every observation but costs K fits, and a PINN ensemble costs the same whatever the
  number of points: one extra fit is the price where the data allow it.
* **How many.** A fit withholds ``fraction`` (10 %) of its sites in up to ``blocks`` (200)
  blocks; where 10 % is fewer sites than blocks, one site per block; never more than
  ``MAX_FRACTION`` (a quarter) of the sites, so the calibration fit stays close to the run's.
  The spread of a conformal factor from n units is about that of the ``1 - alpha`` quantile of
  n draws: measured on the SST winters (GP, 30 % of the cells hidden), 20 to 100 units put the
  calibrated coverage of the hidden cells anywhere in 0.82-0.99 depending on which blocks were
  drawn, 150 to 300 units within 0.87-0.93. Hence many
  small blocks rather than a few large ones, and a std band only where it gets at least
  ``MIN_UNITS_PER_BAND`` units (one band below 100 units, four from 200).
* **Small studies** (tens of sensors) take more folds: further calibration fits, each withholding
  other blocks, until there are enough units to certify ``alpha`` (at most ``MAX_FOLDS``);
  with still fewer blocks than ``ceil(1/alpha - 1)`` every withheld point is its own unit and
  the record says so (``units_kind``); with fewer points than that the run stops with an error
  that says what to change.
* **A time series fitted step by step** (SST winters, PIV frames) calibrates some of its steps,
  evenly spread (``steps``; default: as many as hold ``blocks`` single-site blocks at 10 %, at
  least 2), the blocks spread over them; the factors then serve every step, each fitted on all
  its observations.

The run's random holdout (``holdout: {fraction}``) is left out of both fits and scores the
calibrated map on points the calibration never saw. The record goes to
``<store>/_inversa/calibration.json`` and the store's attrs (tasks/core/calibration.py), once per
store: a rerun of the same recipe reuses it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from inversa.data.store import ResultStore
from inversa.models.conformal import calibrate_gaussian
from inversa.tasks.core.calibration import existing_record, save_record
from inversa.tasks.kinds.field.fit import global_points, method_of
from inversa.tasks.kinds.field.intervals import predictive_std
from inversa.tasks.kinds.field.model import FieldModel
from inversa.tasks.kinds.field.problem import FieldProblem, Points, load_field_problem
from inversa.tasks.kinds.field.recipe import FieldRecipe

METHOD = "blocked holdout"
MAX_FRACTION = 0.25  # of the sites, withheld by one calibration fit at most
MIN_UNITS_PER_BAND = 50
MAX_FOLDS = 4  # calibration fits per fit at most (each withholds other blocks), for small studies
SEED_TAG = 0xB10C  # keeps the blocks' draws apart from the holdout's (seed, time index) streams


@dataclass(frozen=True)
class BlockSplit:
    """Which points a calibration fit withholds: ``withheld`` indices, the ``unit`` (block) of
    each, and each block's tile ``(xmin, xmax, ymin, ymax)``: every site inside it is withheld."""

    withheld: np.ndarray
    unit: np.ndarray
    tiles: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self.tiles.shape[0])

    def kept(self, n: int) -> np.ndarray:
        return np.setdiff1d(np.arange(n), self.withheld)


def withheld_sites(n_sites: int, blocks: int, fraction: float) -> int:
    """How many sites a calibration fit withholds: ``fraction`` of them, or one per block where
    that is more, but at most ``MAX_FRACTION`` of them (see the module docstring)."""
    return int(min(max(round(fraction * n_sites), blocks), math.floor(MAX_FRACTION * n_sites)))


def spatial_blocks(xy: np.ndarray, blocks: int, fraction: float, rng: np.random.Generator,
                   folds: int = 1) -> BlockSplit | list[BlockSplit]:
    """Withhold about ``withheld_sites`` of the sites of ``xy`` (n, 2) in up to ``blocks`` tiles.

    Sites are distinct ``(x, y)``; points sharing a site (a sensor read at several times) go
    together. Square tiles tile the sites' bounding box, sized so that a tile holds the withheld
    sites over ``blocks`` on average; occupied tiles are drawn at random until ``blocks`` are
    chosen or they hold the sites wanted (a tile that would overshoot ``MAX_FRACTION`` is passed).
    With ``folds`` > 1, a list: fold ``k`` takes the next tiles of the same draw (disjoint blocks,
    for extra calibration fits when one fit withholds too few).
    """
    xy = np.asarray(xy, dtype=np.float64)
    sites, site_of = np.unique(xy, axis=0, return_inverse=True)
    site_of = site_of.reshape(-1)
    n_sites = sites.shape[0]
    target = withheld_sites(n_sites, blocks, fraction)
    per_fit = max(1, min(blocks, target))
    tiles = max(per_fit, round(per_fit * n_sites / max(target, 1)))
    low, high = sites.min(axis=0), sites.max(axis=0)
    span = high - low
    if span.min() > 0:
        side = math.sqrt(span[0] * span[1] / tiles)
        nx, ny = (max(1, math.ceil(s / side)) for s in span)
    else:  # sites on a line
        nx, ny = (tiles, 1) if span[0] > 0 else (1, tiles)
    width = np.where(span > 0, span / np.array([nx, ny]), 1.0)
    ix = np.clip(np.floor((sites[:, 0] - low[0]) / width[0]).astype(np.int64), 0, nx - 1)
    iy = np.clip(np.floor((sites[:, 1] - low[1]) / width[1]).astype(np.int64), 0, ny - 1)
    tile_of_site = iy * nx + ix
    occupied, counts = np.unique(tile_of_site, return_counts=True)
    cap = math.floor(MAX_FRACTION * n_sites)
    order = list(rng.permutation(occupied.size))
    splits = []
    for _ in range(folds):
        chosen, taken, passed = [], 0, []
        while order and target > 0 and len(chosen) < per_fit and taken < target:
            i = order.pop(0)
            if taken + counts[i] <= cap:
                chosen.append(int(occupied[i]))
                taken += int(counts[i])
            else:
                passed.append(i)
        order = passed + order
        unit_of_tile = {tile: u for u, tile in enumerate(chosen)}
        unit_of_point = np.array([unit_of_tile.get(int(t), -1) for t in tile_of_site], dtype=np.int64)[site_of]
        withheld = np.flatnonzero(unit_of_point >= 0)
        bounds = np.array([[low[0] + (t % nx) * width[0], low[0] + (t % nx + 1) * width[0],
                            low[1] + (t // nx) * width[1], low[1] + (t // nx + 1) * width[1]] for t in chosen])
        splits.append(BlockSplit(withheld, unit_of_point[withheld], bounds.reshape(-1, 4)))
    return splits[0] if folds == 1 else splits


def needed_units(alpha: float) -> int:
    """The fewest units that can certify ``alpha`` (models.conformal.risk_controlled_scale)."""
    return int(math.ceil(1.0 / alpha - 1.0 - 1e-9))


def calibration_steps(problem: FieldProblem, blocks: int, fraction: float, steps: int | None) -> list[int]:
    """The time steps a series fitted step by step calibrates on, evenly spread: as many as the
    recipe says, else as many as hold ``blocks`` units at one site per block (at least 2)."""
    n = len(problem.times)
    if steps is None:
        per_step = max(1, round(fraction * problem.observations(0).n))
        steps = max(2, math.ceil(blocks / per_step))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, steps))})


def _fits(problem: FieldProblem, recipe: FieldRecipe, global_fit: bool) -> list[tuple[int | None, Points]]:
    """(time index or None, the points of one fit) for each calibration fit."""
    if global_fit:
        return [(None, global_points(problem)[0])]
    spec = recipe.calibration
    return [(t, problem.observations(t)) for t in calibration_steps(problem, spec.blocks, spec.fraction, spec.steps)]


def _rng(seed: int, t: int | None) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SEED_TAG, 0 if t is None else t + 1]))


def plan_calibration(problem: FieldProblem, recipe: FieldRecipe, global_fit: bool) -> dict[str, Any]:
    """What the calibration will withhold, without fitting anything (for ``inversa check``);
    raises when the observations are too few to calibrate at the recipe's alpha."""
    spec = recipe.calibration
    need = needed_units(recipe.calibration_alpha)
    jobs = _calibration_fits(_fits(problem, recipe, global_fit), spec.blocks, spec.fraction, spec.seed, need)
    units = sum(split.n_units for _, _, split in jobs)
    points = sum(split.withheld.size for _, _, split in jobs)
    if units < need and points < need:
        raise ValueError(
            f"{problem.input}: calibration: {points} withheld observation(s) cannot calibrate alpha="
            f"{recipe.calibration_alpha:g} (at least {need} are needed); raise calibration.fraction, "
            "or set calibration=off")
    return {"fits": len(jobs), "steps": sorted({t for t, _, _ in jobs if t is not None}), "units": units,
            "points": points, "units_kind": "spatial blocks" if units >= need else "points"}


def _calibration_fits(fits: Sequence[tuple[int | None, Points]], blocks: int, fraction: float, seed: int,
                      need: int) -> list[tuple[int | None, Points, BlockSplit]]:
    """(time index, points, split) of each calibration fit: one per fit of ``fits``, plus further
    folds (other blocks of the same fits) while the units are fewer than ``need`` (small studies:
    a quarter of 24 sensors is 6 blocks, a second fold makes 12)."""
    per_fit = math.ceil(blocks / len(fits))
    folds = [spatial_blocks(points.xy, per_fit, fraction, _rng(seed, t), folds=MAX_FOLDS) for t, points in fits]
    jobs, units = [], 0
    for k in range(MAX_FOLDS):
        for (t, points), splits in zip(fits, folds):
            if k == 0 or (units < need and splits[k].n_units):
                jobs.append((t, points, splits[k]))
                units += splits[k].n_units
    return jobs


class FittedField(Protocol):
    """What the calibration asks of a fit: a ``FieldModel``, or any solver adapter like it."""

    def predict(self, points: Points) -> tuple[np.ndarray, np.ndarray]: ...

    def noise_variance(self) -> np.ndarray: ...


def blocked_record(fits: Sequence[tuple[int | None, Points]], fit: Callable[[Points], FittedField], *,
                   blocks: int, fraction: float, bands: int, seed: int, alpha: float,
                   credible_level: float, source: str = "observations") -> dict[str, Any]:
    """The calibration record of ``fits`` (time index or None, the points of one fit): each fit
    withholds its blocks, ``fit`` is called on the rest, and the withheld points are predicted.

    The study itself, without a store: the kind's ``calibrate`` and the benchmarks both use it.
    """
    started = time.perf_counter()
    need = needed_units(alpha)
    jobs = _calibration_fits(fits, blocks, fraction, seed, need)
    means, stds, truths, sizes, withheld_share = [], [], [], [], []
    for t, points, split in jobs:
        try:
            model = fit(points.take(split.kept(points.n)))
        except (ValueError, RuntimeError) as exc:
            where = "" if t is None else f" of time step {t}"
            kind = ValueError if isinstance(exc, ValueError) else RuntimeError
            raise kind(f"{source}: the calibration fit{where} (without {split.withheld.size} withheld "
                       f"observations) failed: {exc}; set calibration=off to skip calibration") from exc
        held = points.take(split.withheld)
        mean, std = (np.asarray(a, dtype=np.float64) for a in model.predict(held))
        spread = predictive_std(std, model.noise_variance())
        values = np.asarray(held.values, dtype=np.float64)
        for unit in range(split.n_units):
            sel = split.unit == unit
            means.append(mean[sel])
            stds.append(spread[sel])
            truths.append(values[sel])
        sizes.append(split.n_units)
        withheld_share.append(split.withheld.size / max(points.n, 1))
    n_points = int(sum(m.shape[0] for m in means))
    units_kind = "spatial blocks"
    if len(means) < need:
        units_kind = f"points (fewer than {need} blocks: each withheld point is a unit)"
        means, stds, truths = ([row for unit in arrays for row in unit] for arrays in (means, stds, truths))
    if len(means) < need:
        raise ValueError(
            f"{source}: calibration: {len(means)} withheld observation(s) cannot calibrate alpha={alpha:g} "
            f"(at least {need} are needed); raise calibration.fraction, or set calibration=off")
    used_bands = max(1, min(bands, len(means) // MIN_UNITS_PER_BAND))
    record = calibrate_gaussian(means, stds, truths, credible_level, alpha, used_bands)
    record.update({
        "method": METHOD,
        "alpha": alpha,
        "credible_level": credible_level,
        "pairs": record["units"],  # the shared run summary's name for the number of units
        "units_kind": units_kind,
        "blocks": int(sum(sizes)),
        "withheld_points": n_points,
        "withheld_fraction": float(np.mean(withheld_share)),
        "fits": len(jobs),
        "steps": sorted({t for t, _, _ in jobs if t is not None}) or None,
        "bands_asked": bands,
        "seed": seed,
        "std": "predictive: sqrt(latent std^2 + observation noise variance) at each point",
        "seconds": round(time.perf_counter() - started, 3),
    })
    return record


def calibrate(store: ResultStore, recipe: FieldRecipe, global_fit: bool) -> dict[str, Any]:
    """Run the calibration once per store; returns (and stores) its record."""
    existing = existing_record(store)
    if existing is not None:
        return existing
    problem, method = load_field_problem(recipe), method_of(recipe)

    def fit(points: Points) -> FieldModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            return FieldModel(method, problem).fit(points)

    spec = recipe.calibration
    record = blocked_record(_fits(problem, recipe, global_fit), fit, blocks=spec.blocks, fraction=spec.fraction,
                            bands=spec.bands, seed=spec.seed, alpha=recipe.calibration_alpha,
                            credible_level=recipe.credible_level, source=problem.input)
    return save_record(store, record)
