"""CG-SENSE and L1-wavelet CS against SigPy's SenseRecon and L1WaveletRecon, on the same data in the same run.

Data: the fully sampled 16-coil 2-D brain slice of Chiew (``/work/shared/data/mri/chiew_sense16/
raw_data.mat``, 96 x 96, centred k-space, DC at index 48), retrospectively undersampled along the
phase-encode axis (rows, ``ky``) with fastMRI's equispaced line mask (``EquispacedMaskFractionFunc``:
a fully sampled centre band of ``round(center_fraction * 96)`` lines, the rest equispaced so that
the overall acceleration is 4x or 8x; ``inversa.data.undersampling.equispaced_mask`` where it
exists, else the local copy below).

Maps: SigPy's ``EspiritCalib`` (24 x 24 calibration region of the fully sampled k-space, as from a
separate calibration scan; kernel 6, threshold 0.02, crop 0.95), normalised so that
``sum_c |S_c|^2 = 1`` on their support. The same maps go to every method, ours and SigPy's.
Reference: the fully sampled coil-combined image ``sum_c conj(S_c) F^H k_c`` with those maps;
metrics (PSNR with the reference's peak, SSIM, NRMSE) are of the magnitude images.

Matching: CG-SENSE runs ``--cg-iter`` CG iterations in both (ours with ``tol`` at 1e-12 so the
count is the same, SigPy's ``ConjugateGradient`` with ``tol=0``), ``lam = 0``. CS runs ``--cs-iter``
FISTA iterations in both (SigPy's ``GradientMethod`` with Nesterov acceleration and step
``1 / max_eig(A^H A)``, ours with step ``1 / ||A||^2``), db4 wavelets, the same number of levels
(PyWavelets' ``dwt_max_level``, 3 here). Regularisation: ours takes ``lam`` relative to the peak
of the zero-filled image, its objective weight is ``lam_abs = lam * max|A^H y| / ||A||^2 * ||A||^2``
(``L1WaveletCS.weight``), and SigPy gets ``lamda = lam_abs``: both minimise
``0.5 ||P F S x - y||^2 + lamda ||W x||_1``. The wavelets differ at the borders only: ours is
the orthonormal periodised transform, SigPy's PyWavelets' zero-padded (slightly redundant) one,
whose ``W^H soft(W x)`` SigPy uses as the prox. Where no coil sees (outside the cropped maps,
where the reference is 0) ours returns 0 (``zero_unseen``) and SigPy the regulariser's smooth
extension of the object, so SigPy's result is scored as it is and also zeroed there. A sweep of ``lam`` (same values for both) is
reported so that neither is judged at a value that suits only the other; choosing the best
from it uses the reference (an oracle choice, said so in the output).

    python benchmarks/mri_baselines.py [--device cpu|cuda] [--repeats 3] [--cg-iter 30] [--cs-iter 100]

Prints one JSON document. Wall times are medians of ``--repeats`` calls on one slice after a
warm-up call (SigPy on the CPU, NumPy; ours with torch on ``--device``, ``--threads`` intra-op
threads, 1 by default like NumPy's FFT), ESPIRiT excluded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from inversa.models.physics.base import LinearOperator
from inversa.models.samplers import CGSense, L1WaveletCS, ZeroFilled

DATA = Path(os.environ.get("INVERSA_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
FILE = DATA / "mri" / "chiew_sense16" / "raw_data.mat"
SETTINGS = {4: 0.08, 8: 0.04}  # acceleration -> fastMRI centre fraction
CALIB = 24
LAM_SWEEP = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)


# ---------------------------------------------------------------------------------------------- data
def load_kspace(path: Path = FILE) -> np.ndarray:
    """Complex k-space ``(coil, ky, kx)`` = ``(16, 96, 96)``, centred (DC at ``[48, 48]``)."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f["raw"][()]
    k = (raw["real"] + 1j * raw["imag"]).transpose()  # (x, y, z, coil)
    return np.ascontiguousarray(k[:, :, 0, :].transpose(2, 1, 0))  # (coil, y, x)


def local_equispaced_mask(shape, acceleration: float, center_fraction: float, seed: int = 0) -> np.ndarray:
    """fastMRI's ``EquispacedMaskFractionFunc`` on rows (``ky``): ``(ny, nx)`` bool, True = sampled."""
    ny, nx = shape
    n_low = round(ny * center_fraction)
    lines = np.zeros(ny, dtype=bool)
    pad = (ny - n_low + 1) // 2
    lines[pad:pad + n_low] = True
    adjusted = (acceleration * (n_low - ny)) / (n_low * acceleration - ny)
    offset = np.random.default_rng(seed).integers(0, round(adjusted))
    lines[np.around(np.arange(offset, ny - 1, adjusted)).astype(np.int64)] = True
    return np.repeat(lines[:, None], nx, axis=1)


def make_mask(shape, acceleration: float, center_fraction: float, seed: int = 0) -> tuple[np.ndarray, str]:
    try:
        from inversa.data.undersampling import equispaced_mask
    except ImportError:
        return local_equispaced_mask(shape, acceleration, center_fraction, seed), "benchmarks/mri_baselines.py"
    return np.asarray(equispaced_mask(shape, acceleration, center_fraction, seed=seed), dtype=bool), \
        "inversa.data.undersampling.equispaced_mask"


def noise_sigma_estimate(kspace: np.ndarray, corner: int = 12) -> float:
    """The std of the real and imaginary parts of k-space noise, robustly (MAD) from the four corners' samples.

    The corners of a fully sampled 96 x 96 brain k-space hold next to no signal.
    """
    c = corner
    parts = [kspace[:, :c, :c], kspace[:, :c, -c:], kspace[:, -c:, :c], kspace[:, -c:, -c:]]
    values = np.concatenate([np.concatenate([p.real.ravel(), p.imag.ravel()]) for p in parts])
    return float(np.median(np.abs(values - np.median(values))) / 0.6745)


def espirit_maps(kspace: np.ndarray) -> np.ndarray:
    import sigpy.mri

    maps = sigpy.mri.app.EspiritCalib(kspace, calib_width=CALIB, thresh=0.02, kernel_width=6, crop=0.95,
                                      show_pbar=False).run()
    maps = np.asarray(maps)
    energy = np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return np.where(energy > 0, maps / np.where(energy > 0, energy, 1), 0).astype(np.complex64)


class LocalSense(LinearOperator):
    """Real-view SENSE (docs/conventions.md), used only when ``models.physics.mri`` is not there."""

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        c, h, w = maps.shape
        super().__init__((2, h, w), (c, h, w, 2), dtype=torch.float32, device=maps.device)
        self.maps, self.mask = maps, mask.to(torch.float32)

    def _forward(self, x):
        image = torch.complex(x[:, 0], x[:, 1])
        k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(self.maps * image[:, None], dim=(-2, -1)),
                                              norm="ortho"), dim=(-2, -1))
        return torch.view_as_real(self.mask * k).contiguous()

    def _adjoint(self, y):
        k = self.mask * torch.view_as_complex(y.contiguous())
        coil = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        image = (self.maps.conj() * coil).sum(1)
        return torch.stack([image.real, image.imag], 1)


def sense_operator(maps: np.ndarray, mask: np.ndarray, device: torch.device):
    m = torch.from_numpy(maps).to(device)
    w = torch.from_numpy(mask).to(device)
    try:
        from inversa.models.physics.mri import SenseOperator
    except ImportError:
        return LocalSense(m, w), "benchmarks/mri_baselines.py LocalSense"
    return SenseOperator(m[None], w), "inversa.models.physics.mri.SenseOperator"


# ---------------------------------------------------------------------------------------------- metrics
def metrics(estimate: np.ndarray, reference: np.ndarray) -> dict:
    from skimage.metrics import structural_similarity

    est, ref = np.abs(estimate).astype(np.float64), np.abs(reference).astype(np.float64)
    peak = float(ref.max())
    mse = float(np.mean((est - ref) ** 2))
    return {
        "psnr_db": round(10 * math.log10(peak**2 / mse), 2),
        "ssim": round(float(structural_similarity(ref, est, data_range=peak)), 4),
        "nrmse": round(float(np.linalg.norm(est - ref) / np.linalg.norm(ref)), 4),
    }


def to_complex(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu().double().numpy()
    return x[0] + 1j * x[1]


def median_time(fn, repeats: int, sync=lambda: None) -> tuple[float, object]:
    out = fn()  # warm-up (builds caches: wavelet matrices, FFT plans)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# ---------------------------------------------------------------------------------------------- one setting
def run_setting(kspace: np.ndarray, maps: np.ndarray, reference: np.ndarray, acceleration: int, args,
                device: torch.device, sigma: float) -> dict:
    import sigpy.mri

    shape = kspace.shape[1:]
    mask, mask_source = make_mask(shape, acceleration, SETTINGS[acceleration], seed=0)
    y_np = (kspace * mask[None]).astype(np.complex64)
    op, op_source = sense_operator(maps, mask, device)
    y = torch.view_as_real(torch.from_numpy(y_np)).to(device)[None].contiguous()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    norm = op.norm()
    out = {
        "acceleration_nominal": acceleration,
        "center_fraction": SETTINGS[acceleration],
        "lines_sampled": int(mask[:, 0].sum()),
        "acceleration_actual": round(mask.size / mask.sum(), 3),
        "mask_from": mask_source,
        "operator": op_source,
        "operator_norm": round(norm, 6),
    }
    weights = mask.astype(np.float32)
    support = np.abs(maps).sum(0) > 0

    with torch.no_grad():
        zf = ZeroFilled().sample(y, op).samples[0, 0]
    out["zero_filled"] = metrics(to_complex(zf), reference)

    # ---- CG-SENSE
    ours_cg = CGSense(lam=0.0, max_iter=args.cg_iter, tol=1e-12)
    with torch.no_grad():
        t_ours, res = median_time(lambda: ours_cg.sample(y, op), args.repeats, sync)
    x_ours = to_complex(res.samples[0, 0])
    t_sp, x_sp = median_time(lambda: np.asarray(sigpy.mri.app.SenseRecon(
        y_np, maps, lamda=0, weights=weights, max_iter=args.cg_iter, tol=0, show_pbar=False).run()), args.repeats)
    out["cg_sense"] = {
        "iterations": {"ours": res.iterations, "sigpy": args.cg_iter},
        "ours": {**metrics(x_ours, reference), "wall_s_per_slice": round(t_ours, 4), "nfe": res.nfe,
                 "final_relative_residual": float(f"{res.residual:.3g}")},
        "sigpy": {**metrics(x_sp, reference), "wall_s_per_slice": round(t_sp, 4)},
        "relative_difference_ours_vs_sigpy": float(f"{np.linalg.norm(x_ours - x_sp) / np.linalg.norm(x_sp):.3g}"),
    }

    # ---- CS: a sweep of lam, the same objective weight for both
    sweep = []
    for lam in sorted(set(LAM_SWEEP) | {args.lam}):
        cs = L1WaveletCS(lam=lam, max_iter=args.cs_iter, tol=0.0)
        with torch.no_grad():
            lamda = float(cs.weight(y, op)[0])
            timed = lam == args.lam
            if timed:
                t_ours, res = median_time(lambda cs=cs: cs.sample(y, op), args.repeats, sync)
            else:
                res = cs.sample(y, op)
        x_ours = to_complex(res.samples[0, 0])

        def sigpy_cs(lamda=lamda):
            return np.asarray(sigpy.mri.app.L1WaveletRecon(y_np, maps, lamda, weights=weights, wave_name="db4",
                                                           max_iter=args.cs_iter, show_pbar=False).run())

        if timed:
            t_sp, x_sp = median_time(sigpy_cs, args.repeats)
        else:
            x_sp = sigpy_cs()
        x_sp_seen = x_sp * support  # as ours with zero_unseen: nothing where no coil sees
        row = {"lam": lam, "sigpy_lamda": float(f"{lamda:.6g}"),
               "lam_in_noise_sd": round(lamda / norm**2 * norm / sigma, 3),  # reference="noise" equivalent
               "ours": metrics(x_ours, reference), "sigpy": metrics(x_sp, reference),
               "sigpy_zeroed_outside_maps": metrics(x_sp_seen, reference),
               "relative_difference_ours_vs_sigpy_zeroed": float(
                   f"{np.linalg.norm(x_ours - x_sp_seen) / np.linalg.norm(x_sp_seen):.3g}")}
        if timed:
            row["ours"]["wall_s_per_slice"] = round(t_ours, 4)
            row["sigpy"]["wall_s_per_slice"] = round(t_sp, 4)
            row["ours"]["nfe"] = res.nfe
            row["ours"]["steps"] = res.steps
            out["cs"] = {"iterations": args.cs_iter, "wavelet": "db4",
                         "level": L1WaveletCS().transform(op).level, **row}
        sweep.append(row)
    out["cs_lam_sweep_psnr_ssim"] = [
        {"lam": r["lam"], "sigpy_lamda": r["sigpy_lamda"], "lam_in_noise_sd": r["lam_in_noise_sd"],
         "ours": [r["ours"]["psnr_db"], r["ours"]["ssim"]], "sigpy": [r["sigpy"]["psnr_db"], r["sigpy"]["ssim"]],
         "sigpy_zeroed_outside_maps": [r["sigpy_zeroed_outside_maps"]["psnr_db"],
                                       r["sigpy_zeroed_outside_maps"]["ssim"]]} for r in sweep]
    best = {key: max(sweep, key=lambda r: r[key]["psnr_db"]) for key in ("ours", "sigpy", "sigpy_zeroed_outside_maps")}
    out["cs_best_in_sweep_oracle"] = {key: {"lam": r["lam"], **r[key]} for key, r in best.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cg-iter", type=int, default=30)
    parser.add_argument("--cs-iter", type=int, default=100)
    parser.add_argument("--lam", type=float, default=L1WaveletCS().lam, help="CS lam (relative to the peak)")
    parser.add_argument("--accelerations", default="4,8")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: like SigPy's NumPy, and no spinning on a shared machine)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    import sigpy

    t_start = time.perf_counter()
    kspace = load_kspace()
    sigma = noise_sigma_estimate(kspace)
    t0 = time.perf_counter()
    maps = espirit_maps(kspace)
    t_espirit = time.perf_counter() - t0
    full, _ = sense_operator(maps, np.ones(kspace.shape[1:], dtype=bool), torch.device("cpu"))
    y_full = torch.view_as_real(torch.from_numpy(kspace.astype(np.complex64)))[None].contiguous()
    reference = to_complex(full.adjoint(y_full)[0])
    rss = np.sqrt((np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"),
                                          axes=(-2, -1))) ** 2).sum(0))
    doc = {
        "benchmark": "mri_baselines",
        "data": {"file": str(FILE.resolve()), "coils": int(kspace.shape[0]), "matrix": list(kspace.shape[1:]),
                 "kspace_peak": float(f"{np.abs(kspace).max():.6g}"), "noise": "the scan's own (nothing added)",
                 "noise_sigma_estimate": float(f"{sigma:.4g}"),
                 "noise_sigma_from": "MAD of the real and imaginary parts in the 12 x 12 k-space corners, all coils"},
        "maps": {"method": "sigpy.mri.app.EspiritCalib", "calib_width": CALIB, "from": "fully sampled k-space centre",
                 "thresh": 0.02, "kernel_width": 6, "crop": 0.95, "seconds": round(t_espirit, 2),
                 "support_fraction": round(float((np.abs(maps).sum(0) > 0).mean()), 3)},
        "reference": "fully sampled coil-combined image sum_c conj(S_c) F^H k_c (same maps), zero outside the "
                     "maps' support; metrics on magnitudes over the whole 96 x 96 image",
        "reference_vs_rss_nrmse_inside_support": round(float(
            np.linalg.norm((np.abs(reference) - rss)[np.abs(maps).sum(0) > 0])
            / np.linalg.norm(rss[np.abs(maps).sum(0) > 0])), 4),
        "lam_mapping": "sigpy lamda = L1WaveletCS.weight(y, A) = lam * max|A^H y| / ||A||^2 * ||A||^2 (per slice); "
                       "lam_in_noise_sd = lamda / ||A|| / noise_sigma, the lam of reference='noise'",
        "settings": [run_setting(kspace, maps, reference, int(a), args, device, sigma)
                     for a in args.accelerations.split(",")],
        "environment": {"device": str(device), "torch": torch.__version__, "sigpy": sigpy.__version__,
                        "numpy": np.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "platform": platform.platform(), "repeats": args.repeats},
        "total_seconds": None,
    }
    doc["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
