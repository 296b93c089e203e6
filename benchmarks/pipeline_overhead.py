"""Pipeline overhead: `inversa run` (Prefect flow, zarr store, metrics, artifacts) versus a plain
Python loop over the same slices calling the same model code and saving one .npy file.

Prints one JSON document. The flow is timed twice: in-process after Prefect has started (what a
batch of runs, a deployment or a notebook pays per run) and as the `inversa run` command in a
fresh process (which also pays Python and Prefect start-up).

    python benchmarks/pipeline_overhead.py [--slices 256] [--size 256] [--views 180] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import numpy as np  # noqa: E402
import torch  # noqa: E402


from inversa.data.readers import read_measurement  # noqa: E402
from inversa.data.schema import default_grid  # noqa: E402
from inversa.data.synthetic import write_study  # noqa: E402
from inversa.models.physics.tomography import CTGeometry, ct_operator  # noqa: E402
from inversa.models.samplers import REGISTRY  # noqa: E402


def plain_loop(measurement_path: Path, out: Path, region_size: int, size: int) -> float:
    """What a user would write without inversa: read, reconstruct slice blocks, save."""
    started = time.perf_counter()
    ds = read_measurement(measurement_path)
    _, pixel = default_grid(ds)
    geometry = CTGeometry(
        kind=ds.attrs["geometry"], angles=ds["angle"].values, n_det=ds.sizes["detector"],
        det_spacing=ds.attrs["detector_spacing_mm"], det_offset=ds.attrs.get("detector_offset_mm", 0.0),
        image_size=size, pixel_size=pixel,
    )
    operator = ct_operator(geometry)
    sampler = REGISTRY["fbp"](filter="hann")
    sino = ds.sinogram.values
    images = np.empty((sino.shape[0], size, size), np.float32)
    with torch.no_grad():
        for start in range(0, sino.shape[0], region_size):
            y = torch.from_numpy(np.ascontiguousarray(sino[start : start + region_size]))
            images[start : start + region_size] = sampler.sample(y, operator, None, 1, None).samples[0].numpy()
    np.save(out, images)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=180)
    parser.add_argument("--region-size", type=int, default=None, help="default: the ct-fbp recipe's")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from inversa.tasks.core.recipe import load_recipe
    from inversa.flows.reconstruct import reconstruct
    from inversa.flows.runtime import local_run_settings

    if args.region_size is None:
        args.region_size = load_recipe("ct-fbp").region_size

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_det = int(np.ceil(args.size * 1.5))
        measurement, _ = write_study(
            tmp, name="overhead", kind="htc-discs", n_slices=args.slices, image_size=args.size,
            pixel_size_mm=80.0 / args.size,
            geometry={"geometry": "parallel", "n_det": n_det, "detector_spacing_mm": 80.0 / args.size},
            angles=np.linspace(0, np.pi, args.views, endpoint=False),
            noise={"model": "gaussian", "relative_sigma": 0.01}, seed=1,
        )
        sets = [f"region_size={args.region_size}", "method.params.filter=hann", "grid.size=%d" % args.size]

        def flow_once(i: int) -> float:
            import inversa.tasks.kinds.ct.measurement as cached  # a fresh run reads and builds everything anew

            cached._cached_measurement.cache_clear()
            cached._operators.clear()
            recipe = load_recipe("ct-fbp", sets, input=str(measurement), output=str(tmp / f"flow{i}.zarr"))
            with local_run_settings():  # what `inversa run` uses
                started = time.perf_counter()
                reconstruct(recipe, overwrite=True)
                return time.perf_counter() - started

        flow_once(-1)  # start Prefect's ephemeral server and warm caches
        plain_loop(measurement, tmp / "warm.npy", args.region_size, args.size)
        flow_times, loop_times = [], []
        for i in range(args.repeats):  # interleaved, so load on the machine hits both alike
            loop_times.append(plain_loop(measurement, tmp / f"loop{i}.npy", args.region_size, args.size))
            flow_times.append(flow_once(i))

        mean_flow = np.asarray(__import__("xarray").open_zarr(tmp / "flow0.zarr")["mean"].values)
        same = bool(np.allclose(mean_flow, np.load(tmp / "loop0.npy"), atol=1e-6))

        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        cli = [sys.executable, "-m", "inversa.flows.cli", "run", "ct-fbp", "--input", str(measurement),
               "--output", str(tmp / "cli.zarr"), "--overwrite", *sum((["--set", s] for s in sets), [])]
        started = time.perf_counter()
        proc = subprocess.run(cli, env=env, capture_output=True, text=True)
        cli_seconds = time.perf_counter() - started

        # The same command while `inversa server` runs: no ephemeral server to start per command.
        from inversa.flows.server import start_server, stop_server

        home = tmp / "inversa-home"
        start_server(port=0, home=home)
        try:
            served_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"} | {"INVERSA_HOME": str(home)}
            def served(name: str) -> list[str]:
                return [str(tmp / name) if arg == str(tmp / "cli.zarr") else arg for arg in cli]

            subprocess.run(served("warm.zarr"), env=served_env, capture_output=True, text=True)  # database warm-up
            started = time.perf_counter()
            served_proc = subprocess.run(served("served.zarr"), env=served_env, capture_output=True, text=True)
            served_seconds = time.perf_counter() - started
        finally:
            stop_server(home=home)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import flows.reconstruct"], env=env, check=True)
        import_seconds = time.perf_counter() - started

    best_flow, best_loop = min(flow_times), min(loop_times)
    print(json.dumps({
        "benchmark": "pipeline_overhead",
        "workload": {"slices": args.slices, "image": f"{args.size}x{args.size}", "views": args.views,
                     "geometry": "parallel", "method": "fbp (hann)", "region_size": args.region_size},
        "torch_threads": torch.get_num_threads(),
        "plain_loop_seconds": loop_times,
        "flow_in_process_seconds": flow_times,
        "ratio_flow_in_process_vs_loop": round(best_flow / best_loop, 3),
        "goal_ratio_at_most": 1.10,
        "goal_met": best_flow / best_loop <= 1.10,
        "same_images": same,
        "cli_fresh_process_seconds": round(cli_seconds, 2),
        "cli_exit_code": proc.returncode,
        "python_import_seconds": round(import_seconds, 2),
        "ratio_cli_fresh_process_vs_loop": round(cli_seconds / best_loop, 3),
        "cli_with_inversa_server_seconds": round(served_seconds, 2),
        "cli_with_inversa_server_exit_code": served_proc.returncode,
        "ratio_cli_with_inversa_server_vs_loop": round(served_seconds / best_loop, 3),
        "note": ("the CLI figures include Python start-up and imports; the fresh one also Prefect's ephemeral "
                 "server start (~10 s), which a running `inversa server` removes"),
    }, indent=2))


if __name__ == "__main__":
    main()
