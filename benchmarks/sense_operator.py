"""Throughput of the SENSE operator and the time of ESPIRiT, against SigPy in the same run.

Problem: 15 coils, 320 x 320, batch 8, float32/complex64; smooth synthetic coil maps with
``sum_c |S_c|^2 = 1``; a random Cartesian mask at 4x (80 of 320 phase-encode lines: the 24
central lines plus 56 drawn at random), the same for every image; random complex images (their
content does not change the speed). Ours (``inversa.models.physics.mri.SenseOperator``, torch)
runs on the CPU with torch's default thread count and with one thread (on a shared machine the
intra-op threads of small FFT calls can wait longer than they compute), and on CUDA with
``--device cuda``. SigPy's ``sigpy.mri.linop.Sense`` (NumPy FFT, CPU, one image per call: it has
no batch axis) gets the same maps, mask and images, and both k-spaces are compared.

On CUDA the report adds the fraction of the GPU's memory bandwidth reached: the compulsory
traffic per image (forward: read the image, write C k-space images, plus 1/B of the maps;
adjoint: the reverse) times images/s, over the bandwidth of a device-to-device copy measured
in the same run (bytes read + bytes written per second).

ESPIRiT (``espirit_maps`` vs ``sigpy.mri.app.EspiritCalib``, default parameters: calibration 24,
kernel 6, threshold 0.02, crop 0.95, 100 power iterations) runs on the SigPy brain file
``../shared/data/mri/sigpy_cartesian_brain/cartesian_ksp.npy`` (8 coils, 230 x 180) when present,
with the agreement of the two sets of maps.

    python benchmarks/sense_operator.py [--device cpu|cuda] [--batch 8] [--coils 15] [--size 320] [--repeats 5]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from timing import timed

from inversa.models.physics.espirit import espirit_maps
from inversa.models.physics.mri import DEFAULT_CHUNK_ELEMENTS, SenseOperator

BRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mri" / "sigpy_cartesian_brain" / "cartesian_ksp.npy"


def problem(coils: int, size: int, batch: int, seed: int = 0):
    """Smooth complex Gaussian coil maps around the FOV (normalised), a 4x line mask, images."""
    rng = np.random.default_rng(seed)
    y = (np.arange(size) - size // 2) / size
    yy, xx = np.meshgrid(y, y, indexing="ij")
    maps = []
    for c in range(coils):
        a = 2 * np.pi * c / coils
        cy, cx = 0.6 * np.sin(a), 0.6 * np.cos(a)
        magnitude = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.4 ** 2))
        phase = a + 2 * np.pi * (0.4 * (yy - cy) * np.cos(a) + 0.3 * (xx - cx) * np.sin(a))
        maps.append(magnitude * np.exp(1j * phase))
    maps = np.stack(maps)
    maps = (maps / np.linalg.norm(maps, axis=0, keepdims=True)).astype(np.complex64)
    lines = np.zeros(size, dtype=bool)
    lines[size // 2 - 12:size // 2 + 12] = True
    others = np.flatnonzero(~lines)
    lines[rng.choice(others, size // 4 - lines.sum(), replace=False)] = True
    mask = np.repeat(lines[:, None], size, axis=1)  # phase-encode lines (rows), full readout
    images = (rng.standard_normal((batch, size, size)) + 1j * rng.standard_normal((batch, size, size))).astype(np.complex64)
    return maps, mask, images


def bench_ours(maps, mask, images, device: torch.device, repeats: int, threads: int | None = None) -> tuple[dict, torch.Tensor]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        op = SenseOperator(torch.from_numpy(maps), torch.from_numpy(mask)).to(device)
        x = torch.view_as_real(torch.from_numpy(images)).permute(0, 3, 1, 2).contiguous().to(device)  # (B, 2, H, W)
        batch = x.shape[0]
        with torch.no_grad():
            y = op(x)
            t_fwd = timed(lambda: op(x), device, repeats)
            t_adj = timed(lambda: op.adjoint(y), device, repeats)
            t_nrm = timed(lambda: op.normal(x), device, repeats)
            memory = {}
            if device.type == "cuda":
                for name, fn in (("forward", lambda: op(x)), ("adjoint", lambda: op.adjoint(y)),
                                 ("normal", lambda: op.normal(x))):
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                    fn()
                    torch.cuda.synchronize(device)
                    memory[f"{name}_peak_extra_mib"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
        result = {
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "coil_chunk": op._chunk(batch),
            "forward_s_per_batch": round(t_fwd, 4),
            "adjoint_s_per_batch": round(t_adj, 4),
            "normal_s_per_batch": round(t_nrm, 4),
            "forward_images_per_s": round(batch / t_fwd, 1),
            "adjoint_images_per_s": round(batch / t_adj, 1),
            "normal_images_per_s": round(batch / t_nrm, 1),
            **memory,
        }
        return result, torch.view_as_complex(y.cpu().contiguous())
    finally:
        torch.set_num_threads(previous)


def bench_sigpy(maps, mask, images, repeats: int) -> tuple[dict, np.ndarray, np.ndarray]:
    import sigpy as sp
    import sigpy.mri

    op = sp.mri.linop.Sense(maps, weights=mask.astype(np.float32))  # weights enter as sqrt(w): a 0/1 mask
    ksp = np.stack([op * img for img in images])
    t_fwd = timed(lambda: [op * img for img in images], torch.device("cpu"), repeats)
    t_adj = timed(lambda: [op.H * k for k in ksp], torch.device("cpu"), repeats)
    adj = np.stack([op.H * k for k in ksp])
    n = len(images)
    return {
        "images_timed": n,
        "forward_images_per_s": round(n / t_fwd, 1),
        "adjoint_images_per_s": round(n / t_adj, 1),
        "dtype": str(ksp.dtype),
    }, ksp, adj


def copy_bandwidth(device: torch.device, mib: int = 1024, repeats: int = 10) -> float:
    """Device-to-device copy: (bytes read + bytes written) per second."""
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device, repeats)
    return 2 * src.numel() * 4 / t


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def bench_espirit(device: torch.device, repeats: int) -> dict:
    if not BRAIN.exists():
        return {"skipped": f"file not present: {BRAIN.resolve()}"}
    import sigpy.mri

    ksp = np.load(BRAIN)
    t0 = time.perf_counter()
    ref = sigpy.mri.app.EspiritCalib(ksp, show_pbar=False).run()
    t_sigpy = time.perf_counter() - t0
    result = {"file": "sigpy_cartesian_brain/cartesian_ksp.npy", "shape": list(ksp.shape), "dtype": str(ksp.dtype),
              "sigpy_s": round(t_sigpy, 3)}
    runs = [("cpu", None), ("cpu", 1)] + ([("cuda", None)] if device.type == "cuda" else [])
    ours = None
    for dev, threads in runs:
        d = torch.device(dev)
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            k = torch.from_numpy(ksp).to(d)
            t = timed(lambda k=k: espirit_maps(k), d, max(1, repeats // 2))
            maps = espirit_maps(k).cpu().numpy()
        finally:
            torch.set_num_threads(previous)
        label = f"ours_{dev}_s" if threads is None else f"ours_{dev}_{threads}thread_s"
        result[label] = round(t, 3)
        if dev == "cpu" and threads is None:
            ours = maps
            result["speedup_cpu_vs_sigpy"] = round(t_sigpy / t, 2)
        else:
            result[f"{label[:-2]}_rel_diff_vs_ours_cpu"] = float(f"{_rel(maps, ours):.2e}")
    s_ours, s_ref = np.abs(ours).sum(0) > 0, np.abs(ref).sum(0) > 0
    both = s_ours & s_ref
    inner = np.abs((ours.astype(np.complex128) * ref.conj()).sum(0))[both]
    result["agreement"] = {
        "support_pixels_ours": int(s_ours.sum()),
        "support_pixels_sigpy": int(s_ref.sum()),
        "support_pixels_differing": int((s_ours != s_ref).sum()),
        "median_abs_inner_product": float(f"{np.median(inner):.8f}"),
        "min_abs_inner_product": float(f"{inner.min():.8f}"),
        "relative_difference_of_maps": float(f"{_rel(ours[:, both], ref[:, both]):.2e}"),
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu; cuda also runs the CPU figures)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--coils", type=int, default=15)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-espirit", action="store_true", help="skip the ESPIRiT comparison")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")

    maps, mask, images = problem(args.coils, args.size, args.batch)
    sigpy_result, ksp_sigpy, adj_sigpy = bench_sigpy(maps, mask, images, max(1, args.repeats // 2))
    result = {
        "benchmark": "sense_operator",
        "problem": {"coils": args.coils, "image": [args.size, args.size], "batch": args.batch, "dtype": "float32/complex64",
                    "mask": "4x Cartesian: 24 central + random phase-encode lines", "sampled_fraction": float(mask.mean()),
                    "maps": "smooth Gaussian coil profiles, sum_c |S_c|^2 = 1"},
        "method": "real view of SENSE; centring shifts folded into phases (input per image, output in the mask); "
                  f"coils in chunks of <= {DEFAULT_CHUNK_ELEMENTS} complex elements",
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "sigpy_cpu": sigpy_result,
    }
    runs = [("cpu", torch.device("cpu"), None), ("cpu_1thread", torch.device("cpu"), 1)]
    if device.type == "cuda":
        runs.append(("cuda", device, None))
    for label, dev, threads in runs:
        ours, ksp = bench_ours(maps, mask, images, dev, args.repeats, threads)
        ksp = ksp.numpy()
        ours["kspace_rel_diff_vs_sigpy"] = float(f"{_rel(ksp, ksp_sigpy):.2e}")
        op = SenseOperator(torch.from_numpy(maps), torch.from_numpy(mask))
        with torch.no_grad():
            adj = op.adjoint_complex(torch.from_numpy(ksp_sigpy)).numpy()
        ours["adjoint_rel_diff_vs_sigpy"] = float(f"{_rel(adj, adj_sigpy):.2e}")
        ours["agrees_with_sigpy_float32"] = ours["kspace_rel_diff_vs_sigpy"] < 1e-5 and ours["adjoint_rel_diff_vs_sigpy"] < 1e-5
        ours["forward_speedup_vs_sigpy"] = round(ours["forward_images_per_s"] / sigpy_result["forward_images_per_s"], 2)
        ours["adjoint_speedup_vs_sigpy"] = round(ours["adjoint_images_per_s"] / sigpy_result["adjoint_images_per_s"], 2)
        if dev.type == "cuda":
            bandwidth = copy_bandwidth(dev)
            pixels, coils, batch = args.size * args.size, args.coils, args.batch
            per_image = 8 * pixels * (1 + coils + coils / batch)  # complex64 bytes: image, k-space, maps / B
            ours["copy_bandwidth_gb_s"] = round(bandwidth / 1e9, 1)
            ours["compulsory_bytes_per_image"] = int(per_image)
            for d in ("forward", "adjoint"):
                ours[f"{d}_bandwidth_fraction"] = round(per_image * ours[f"{d}_images_per_s"] / bandwidth, 3)
            ours["gpu"] = torch.cuda.get_device_name(dev)
        result[f"ours_{label}"] = ours
    if not args.no_espirit:
        result["espirit"] = bench_espirit(device, args.repeats)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
