"""`inversa demo`: small CT, MRI and field studies, end to end, in a few minutes on a laptop.

It simulates HTC2022-like discs with holes (fan beam, a 90-degree wedge, noise), an 8-coil brain
MRI study at 4x (MNI152 slices, simulated coils), and a Darcy flow field seen by sparse sensors,
writes each as a measurement file with the ground truth beside it, and runs the same
`reconstruct` flow a user runs, once per method, so the demo exercises the whole product rather
than a shortcut.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from inversa.data.synthetic import write_study
from inversa.data.synthetic_mri import write_mri_study
from inversa.flows.cli_field_study import write_field_study
from inversa.flows.reconstruct import reconstruct
from inversa.tasks.core.recipe import load_recipe

DEMO_STUDY = {
    "kind": "htc-discs",
    "n_slices": 4,
    "image_size": 128,
    "pixel_size_mm": 0.59375,  # a 76 mm field of view: the shipped prior's (64 x 1.1875 mm)
    "geometry": {
        "geometry": "fan",
        "source_origin_mm": 410.66,
        "origin_detector_mm": 143.08,
        "detector_spacing_mm": 0.6,
        "n_det": 184,
    },
    "angles_deg": (0.0, 90.0, 1.0),  # a 90-degree wedge, one view per degree (91 views)
    "noise": {"model": "gaussian", "relative_sigma": 0.01},
    "seed": 2022,
}

DEMO_METHODS = [
    ("fbp", "ct-fbp", []),
    ("tv", "ct-tv", []),
    ("gaussian", "ct-gaussian", ["samples=4"]),
    # The learned prior (priors/htc-discs-64) samples on its 64 x 64 grid; the store holds the
    # posterior on the study's 128 x 128 grid, its interval widths calibrated as every stochastic
    # run's are by default (3 simulated pairs of 4 draws, a factor per std band).
    ("dds", "ct-dds", ["samples=8"]),
]


# A short field example: a Darcy-flow study (u = sin(pi x) sin(pi y) / k, k = 1, u = 0 on the
# boundary) seen by 40 noisy sensors, gridded by a plain GP and by the GP that knows the PDE.
DEMO_FIELD_STUDY = {"n": 33, "n_sensors": 40, "coefficient": "constant", "source": "sine", "noise_sigma": 0.01,
                    "seed": 5}
DEMO_FIELD_METHODS = [
    ("gp", "field-gp", []),
    ("gp-physics", "field-gp-physics", ["method.params.source=sine", "method.params.n_collocation=128"]),
]


# A short MRI example: two brain slices (MNI152), 64 x 64, 8 simulated coils, 4x equispaced lines with
# a fully sampled centre, 1 % noise; the shipped MR prior (priors/mri-brain-64) gives DDS samples
# whose interval is calibrated by default (4 simulated brain slices, a factor per std band).
DEMO_MRI_STUDY = {"n_slices": 2, "matrix": (64, 64), "n_coils": 8, "acceleration": 4.0, "center_fraction": 0.16,
                  "relative_noise": 0.01, "seed": 7}
DEMO_MRI_METHODS = [
    ("zero-filled", "mri-zero-filled", []),
    ("cg-sense", "mri-cgsense", ["method.params.max_iter=10"]),
    ("cs", "mri-cs", []),
    ("dds", "mri-dds", ["samples=4"]),
]


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _fmt_g(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2g}"


def _timed_run(recipe) -> dict:
    """Run a recipe through the flow; its summary plus the wall time the user waited."""
    started = time.perf_counter()
    result = reconstruct(recipe, overwrite=True)
    return {**result, "wall_seconds": time.perf_counter() - started}


def _print_table(header: str, lines: list[str]) -> None:
    print()
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)
    print()


def _run_methods(methods, measurement: Path, truth: Path, output: Path, prefix: str) -> list[dict]:
    """Each (method, recipe, overrides) on one measurement, into ``<output>/<prefix><method>.zarr``."""
    rows = []
    for method, recipe_name, extra in methods:
        recipe = load_recipe(recipe_name, extra, input=str(measurement), reference=str(truth),
                             output=str(output / f"{prefix}{method}.zarr"))
        rows.append(_timed_run(recipe))
    return rows


def run_demo(output: Path) -> list[dict]:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    study = DEMO_STUDY
    angles = np.deg2rad(np.arange(study["angles_deg"][0], study["angles_deg"][1] + 1e-9, study["angles_deg"][2]))
    measurement_path, truth_path = write_study(
        output,
        name="demo-discs",
        kind=study["kind"],
        n_slices=study["n_slices"],
        image_size=study["image_size"],
        pixel_size_mm=study["pixel_size_mm"],
        geometry=study["geometry"],
        angles=angles,
        noise=study["noise"],
        seed=study["seed"],
    )
    print(f"simulated {study['n_slices']} HTC-like discs, fan beam, 90-degree wedge: {measurement_path}")
    rows = _run_methods(DEMO_METHODS, measurement_path, truth_path, output, prefix="")

    _print_table(
        f"{'method':<10} {'PSNR':>7} {'SSIM':>7} {'MCC':>7} {'cover90':>8} {'seconds':>8}  store",
        [f"{row['method']:<10} {_fmt(row.get('psnr'), 2):>7} {_fmt(row.get('ssim')):>7} "
         f"{_fmt(row.get('mcc')):>7} {_fmt(row.get('coverage')):>8} {row['wall_seconds']:>8.2f}  {row['store']}"
         for row in rows])
    print("PSNR/SSIM against the simulated truth; MCC of an Otsu segmentation (the HTC2022 score);")
    print("cover90: fraction of pixels whose truth lies in the 90 % credible interval (n/a: no uncertainty).")
    print(f"Inspect a store: inversa show {rows[-1]['store']} --png preview.png")
    return rows + run_mri_demo(output) + run_field_demo(output)


def run_mri_demo(output: Path) -> list[dict]:
    measurement, truth = write_mri_study(output, "demo-brain", **DEMO_MRI_STUDY)
    print(f"\nsimulated {DEMO_MRI_STUDY['n_slices']} brain slices, {DEMO_MRI_STUDY['n_coils']} coils, "
          f"{DEMO_MRI_STUDY['acceleration']:g}x undersampled: {measurement}")
    rows = _run_methods(DEMO_MRI_METHODS, measurement, truth, output, prefix="brain-")
    _print_table(
        f"{'method':<12} {'PSNR':>7} {'SSIM':>7} {'NRMSE':>7} {'cover90':>8} {'seconds':>8}  store",
        [f"{row['method']:<12} {_fmt(row.get('psnr'), 2):>7} {_fmt(row.get('ssim')):>7} {_fmt(row.get('nrmse')):>7} "
         f"{_fmt(row.get('coverage')):>8} {row['wall_seconds']:>8.2f}  {row['store']}" for row in rows])
    print("Magnitude images against the simulated truth; cover90 as above (the DDS interval calibrated on")
    print("simulated brain slices); maps from the file. Real scans: README, 'MRI'.")
    return rows


def run_field_demo(output: Path) -> list[dict]:
    observations, truth = write_field_study("darcy", output / "demo-darcy.nc", DEMO_FIELD_STUDY)
    print(f"\nsimulated Darcy flow seen by {DEMO_FIELD_STUDY['n_sensors']} noisy sensors: {observations}")
    rows = _run_methods(DEMO_FIELD_METHODS, observations, truth, output, prefix="darcy-")
    _print_table(
        f"{'method':<10} {'rel RMSE':>9} {'cover90':>8} {'seconds':>8}  store",
        [f"{row['method']:<10} {_fmt_g(row.get('relative_rmse')):>9} {_fmt(row.get('coverage')):>8} "
         f"{row['wall_seconds']:>8.2f}  {row['store']}" for row in rows])
    print("rel RMSE: RMSE against the exact field over the field's std; cover90 as above, over every grid cell.")
    print("The physics GP also knows -laplace(u) = f and u = 0 on the boundary, which pin the field down.")
    return rows
