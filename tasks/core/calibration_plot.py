"""The calibration plot: do the intervals cover what they claim, before and after calibration?

A calibration record (``<store>/_inversa/calibration.json``, also the store's ``calibration``
attr) holds what the conformal step measured on its simulated pairs: the coverage at the run's
credible level before and after scaling the intervals, and, where the calibration step records
them, the whole curve (``curve``: nominal levels with the empirical coverage before and after)
and the coverage per band of posterior std (``bands``). Plotted, a reader sees at once whether
the raw intervals were too narrow (the curve below the diagonal), whether the scale fixed it,
and whether it fixed it evenly or only on average (the bands). Records without a curve (from
before curves were kept) show their one measured level.

This module reads the record and never imports the calibration code, so that code can call
``write_calibration_png`` right after it saves a record.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inversa.data.figures import FIGURE_LOCK, data_uri, figure_png, new_figure
from inversa.data.store import ResultStore

if TYPE_CHECKING:  # matplotlib itself is imported on first drawing (data/figures.py)
    from matplotlib.figure import Figure

RECORD_FILE = "calibration.json"  # tasks/core/calibration.py's CALIBRATION_FILE (a test holds them equal)
PLOT_FILE = "calibration.png"
FILE_DPI = 110
UI_DPI = 72
BEFORE_LABEL = "before calibration"
AFTER_LABEL = "after calibration"
DIAGONAL_LABEL = "nominal = empirical"


def calibration_record(store: ResultStore) -> dict[str, Any] | None:
    """The store's calibration record (its meta file, else its attrs), or None when it has none
    or one this plot cannot read (a report must not fail over a figure)."""
    record = store.read_meta_json(RECORD_FILE)
    if record is None:
        record = store.attrs.get("calibration")
    if not isinstance(record, dict):
        return None
    try:
        check_record(record)
    except (KeyError, TypeError, ValueError):
        return None
    return record


def check_record(record: dict[str, Any]) -> None:
    """Raise unless the record has what the plot draws: the scale, the coverage before and after,
    and a curve or the credible level those two were measured at."""
    missing = [k for k in ("scale", "coverage_before", "coverage_after") if k not in record]
    if "curve" not in record and "credible_level" not in record:
        missing.append("credible_level (or curve)")
    if missing:
        raise ValueError(f"calibration record: missing {', '.join(missing)}")
    coverage_curve(record)


def coverage_curve(record: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    """(levels, coverage before, coverage after): the record's curve, else its one level."""
    curve = record.get("curve")
    if isinstance(curve, dict) and curve.get("levels"):
        levels, before, after = ([float(v) for v in curve[k]] for k in ("levels", "before", "after"))
        if not len(levels) == len(before) == len(after):
            raise ValueError(f"calibration record: curve levels, before and after differ in length "
                             f"({len(levels)}, {len(before)}, {len(after)})")
        return levels, before, after
    return [float(record["credible_level"])], [float(record["coverage_before"])], [float(record["coverage_after"])]


def calibration_figure(record: dict[str, Any]) -> Figure:
    """Nominal vs empirical coverage with the diagonal, and, if the record has bands, the coverage
    per std band before and after against the credible level."""
    check_record(record)
    from matplotlib.ticker import PercentFormatter

    levels, before, after = coverage_curve(record)
    bands = [b for b in record.get("bands") or [] if isinstance(b, dict)]
    scale = float(record.get("scale", math.nan))
    level = float(record.get("credible_level", levels[-1]))
    with FIGURE_LOCK:
        fig = new_figure(4.4 * (2 if bands else 1), 3.9)
        ax = fig.add_subplot(1, 2 if bands else 1, 1)
        low = min(0.4, min(levels), min(before), min(after)) - 0.05
        ax.plot([low, 1.0], [low, 1.0], ls="--", color="0.55", lw=1, label=DIAGONAL_LABEL)
        ax.plot(levels, before, "o-", color="tab:orange", label=BEFORE_LABEL)
        ax.plot(levels, after, "s-", color="tab:blue", label=f"{AFTER_LABEL} (x{scale:.3g})")
        ax.axvline(level, color="0.8", lw=0.8, zorder=0)
        ax.set_xlim(max(low, 0.0), 1.0)
        ax.set_ylim(max(low, 0.0), 1.02)
        ax.set_xlabel("nominal coverage of the interval")
        ax.set_ylabel("empirical coverage (simulated pairs)")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        pairs = record.get("pairs")
        ax.set_title(f"Interval calibration{f' on {pairs} pairs' if pairs else ''}\n"
                     f"at {level:.0%}: {record['coverage_before']:.1%} -> {record['coverage_after']:.1%}",
                     fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        if bands:
            _draw_bands(fig.add_subplot(1, 2, 2), bands, level)
    return fig


def _draw_bands(ax, bands: list[dict[str, Any]], level: float) -> None:
    from matplotlib.ticker import PercentFormatter

    x = np.arange(len(bands))
    width = 0.38
    before = [float(b["coverage_before"]) for b in bands]
    after = [float(b["coverage_after"]) for b in bands]
    ax.bar(x - width / 2, before, width, color="tab:orange", label=BEFORE_LABEL)
    ax.bar(x + width / 2, after, width, color="tab:blue", label=AFTER_LABEL)
    ax.axhline(level, ls="--", color="0.4", lw=1, label=f"nominal {level:.0%}")
    ax.set_xticks(x, [_band_name(b) for b in bands], fontsize=7)
    ax.set_ylim(0.0, 1.25)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("posterior std band (share of values, interval scale)", fontsize=8)
    ax.set_ylabel("empirical coverage", fontsize=8)
    ax.set_title("Coverage per std band", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper center", ncols=3)


def _band_name(band: dict[str, Any]) -> str:
    """``>= 0.001`` / ``< 0.0015`` on two lines (narrow enough for several bands side by side),
    then the band's share of values and its interval scale."""
    low, high = band.get("std_low"), band.get("std_high")
    bounds = [f">= {float(low):.3g}" if low else None, f"< {float(high):.3g}" if high is not None else None]
    span = "\n".join(b for b in bounds if b) or "all"
    facts = [f"{float(band['fraction']):.0%}" if band.get("fraction") is not None else None,
             f"x{float(band['scale']):.3g}" if band.get("scale") is not None else None]
    return span + "\n" + ", ".join(f for f in facts if f)


def calibration_figure_png(record: dict[str, Any], dpi: float = FILE_DPI) -> bytes:
    """The calibration plot of ``record`` as PNG bytes."""
    with FIGURE_LOCK:
        return figure_png(calibration_figure(record), dpi)


def write_calibration_png(store: ResultStore, record: dict[str, Any] | None = None) -> Path | None:
    """Save the plot as ``<store>/_inversa/calibration.png`` (atomically) and return its path;
    ``record`` defaults to the store's own; None, writing nothing, when there is no record."""
    record = calibration_record(store) if record is None else record
    if record is None:
        return None
    return store.write_meta_bytes(PLOT_FILE, calibration_figure_png(record))


def save_calibration_png(record: dict[str, Any], path: str | Path) -> Path:
    """The plot as a PNG file anywhere (``inversa show --png`` writes it beside the preview)."""
    path = Path(path)
    path.write_bytes(calibration_figure_png(record))
    return path


def calibration_markdown(record: dict[str, Any], title: str = "Calibration") -> str:
    """A markdown section with the plot embedded as a data URI, for the run's report artifact."""
    levels, _, _ = coverage_curve(record)
    curve = (f"at nominal levels {', '.join(f'{v:.0%}' for v in levels)}" if len(levels) > 1
             else f"at the credible level {levels[0]:.0%}")
    bands = "; right: the same per band of posterior std" if record.get("bands") else ""
    return (f"### {title}\n\nEmpirical coverage of the intervals on the calibration's simulated pairs {curve}, "
            f"before and after scaling them by {float(record['scale']):.3g} (dashed: ideal){bands}.\n\n"
            f"![calibration]({data_uri(calibration_figure_png(record, UI_DPI))})\n")
