"""Throughput of the CT projectors against scikit-image, measured in the same run.

Problem: 256 x 256 images (1 mm pixels), 180 views over 180 degrees, 363 detectors
(``ceil(256 * sqrt(2))``), batch 32, float32. Parallel beam with 1 mm detector spacing; fan beam
with the source at R = 2 * image width = 512 mm and the detector at D = R / 2 = 256 mm
(magnification 1.5, spacing 1.5 mm on the detector = 1 mm at the isocentre, so the fan covers
the image's diagonal). scikit-image's ``radon`` / ``iradon(filter_name=None)`` (parallel beam
only) run on a few of the same images on the CPU; the fan-beam ratios use those same parallel
figures, as scikit-image has no fan beam.

    python benchmarks/projectors.py [--device cpu|cuda] [--batch 32] [--repeats 5]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np
import torch
from timing import synchronize, timed

from inversa.models.physics.tomography import CTGeometry, ct_operator

SIZE, VIEWS = 256, 180
N_DET = math.ceil(SIZE * math.sqrt(2))  # 363
FAN_R, FAN_D = 2.0 * SIZE, SIZE  # mm, with 1 mm pixels


def phantom_batch(batch: int, seed: int = 0) -> np.ndarray:
    """Shepp-Logan at 256 x 256 plus a little noise per image (content does not change speed)."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    base = resize(shepp_logan_phantom(), (SIZE, SIZE), anti_aliasing=True).astype(np.float32)
    rng = np.random.default_rng(seed)
    return base[None] + 0.01 * rng.standard_normal((batch, SIZE, SIZE), dtype=np.float32)


def bench_ours(geometry: CTGeometry, images: torch.Tensor, device: torch.device, repeats: int) -> dict:
    op = ct_operator(geometry).to(device=device, dtype=torch.float32)
    t0 = time.perf_counter()
    nnz = op.cached_nnz(torch.float32, device)  # builds and caches the matrix and its transpose
    synchronize(device)
    build = time.perf_counter() - t0
    x = images.to(device)
    with torch.no_grad():
        y = op(x)
        t_fwd = timed(lambda: op(x), device, repeats)
        t_adj = timed(lambda: op.adjoint(y), device, repeats)
    batch = x.shape[0]
    return {
        "build_s": round(build, 3),
        "nnz": int(nnz),
        "matrix_mb": round(op.matrix_bytes(torch.float32) / 2**20, 1),
        "forward_s_per_batch": round(t_fwd, 4),
        "adjoint_s_per_batch": round(t_adj, 4),
        "forward_images_per_s": round(batch / t_fwd, 1),
        "adjoint_images_per_s": round(batch / t_adj, 1),
    }


def bench_skimage(images: np.ndarray, repeats: int) -> dict:
    from skimage.transform import iradon, radon

    theta = np.arange(VIEWS) * 180.0 / VIEWS
    sinos = [radon(img, theta=theta, circle=False) for img in images]  # warm-up and inputs
    assert sinos[0].shape == (N_DET, VIEWS), sinos[0].shape
    t_fwd = timed(lambda: [radon(img, theta=theta, circle=False) for img in images], torch.device("cpu"), repeats)
    t_adj = timed(lambda: [iradon(s, theta=theta, filter_name=None, circle=False, output_size=SIZE) for s in sinos],
                  torch.device("cpu"), repeats)
    n = len(images)
    return {
        "images_timed": n,
        "forward_images_per_s": round(n / t_fwd, 2),
        "adjoint_images_per_s": round(n / t_adj, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skimage-images", type=int, default=4, help="images timed with scikit-image (slow)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")

    images = phantom_batch(args.batch)
    angles = np.arange(VIEWS) * np.pi / VIEWS
    geometries = {
        "parallel": CTGeometry.parallel(angles, N_DET, det_spacing=1.0, image_size=SIZE, pixel_size=1.0),
        "fan": CTGeometry.fan(angles, N_DET, det_spacing=(FAN_R + FAN_D) / FAN_R, source_origin=FAN_R,
                              origin_detector=FAN_D, image_size=SIZE, pixel_size=1.0),
    }
    skimage_result = bench_skimage(images[: args.skimage_images], max(1, args.repeats // 2))
    result = {
        "benchmark": "ct_projectors",
        "problem": {"image": [SIZE, SIZE], "pixel_mm": 1.0, "views": VIEWS, "angular_range_deg": 180,
                    "n_det": N_DET, "batch": args.batch, "dtype": "float32",
                    "fan": {"source_origin_mm": FAN_R, "origin_detector_mm": FAN_D,
                            "det_spacing_mm": (FAN_R + FAN_D) / FAN_R}},
        "method": "Joseph sparse system matrix, CSR int32 indices, explicit CSR transpose for the adjoint",
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "skimage_parallel_cpu": skimage_result,
        "note": "scikit-image has no fan beam: fan ratios are against its parallel-beam radon/iradon",
    }
    for kind, geometry in geometries.items():
        ours = bench_ours(geometry, torch.from_numpy(images), device, args.repeats)
        ours["forward_speedup_vs_skimage"] = round(ours["forward_images_per_s"] / skimage_result["forward_images_per_s"], 1)
        ours["adjoint_speedup_vs_skimage"] = round(ours["adjoint_images_per_s"] / skimage_result["adjoint_images_per_s"], 1)
        result[kind] = ours
    result["goal_10x_met"] = all(
        result[k][f"{d}_speedup_vs_skimage"] >= 10 for k in geometries for d in ("forward", "adjoint")
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
