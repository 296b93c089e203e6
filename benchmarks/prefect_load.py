"""Prefect load of a large batch: 2,000 one-slice FBP regions on a local SQLite Prefect server.

Starts `prefect server start` on a free 127.0.0.1 port in a subprocess (its own PREFECT_HOME,
hence its own SQLite database, in a temporary directory), points this process at it with
PREFECT_API_URL, simulates DATASETS tiny studies of SLICES slices each, and runs the `batch`
flow over them with `region_size=1`. Reported: task runs and flow runs the server holds for the
batch, wall time, regions per second, and whether every region of every store is recorded.

Peer, in the same run and on the same server: the old scheduling (one task run per region) on a
smaller batch (`--peer-regions`, default 200; 0 skips it), by making every work unit one region.

    python benchmarks/prefect_load.py [--datasets 16] [--slices 125] [--peer-regions 200]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, timeout: float = 180.0) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}; see {home / 'server.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise TimeoutError(f"prefect server on port {port} did not answer within {timeout:.0f} s")


def simulate(folder: Path, datasets: int, slices: int) -> list[str]:
    import numpy as np

    from inversa.data.synthetic import write_study

    paths = []
    for k in range(datasets):
        measurement, _ = write_study(
            folder, name=f"scan{k:02d}", kind="htc-discs", n_slices=slices, image_size=32, pixel_size_mm=2.4,
            geometry={"geometry": "parallel", "n_det": 48, "detector_spacing_mm": 1.6},
            angles=np.linspace(0, np.pi, 40, endpoint=False), noise={"model": "gaussian", "relative_sigma": 0.01},
            seed=k,
        )
        (folder / f"scan{k:02d}_truth.nc").unlink()  # no reference: the load, not the metrics, is measured
        paths.append(str(measurement))
    return paths


def count_task_runs(client, flow_filter, page: int = 200) -> int:
    """This Prefect client has no count endpoint for task runs: page through them."""
    total = 0
    while True:
        runs = client.read_task_runs(flow_run_filter=flow_filter, limit=page, offset=total)
        total += len(runs)
        if len(runs) < page:
            return total


def run_batch(inputs: list[str], output: Path, one_task_per_region: bool) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    import inversa.flows.scheduling as scheduling
    from inversa.data.store import ResultStore
    from inversa.flows.batch import batch
    from inversa.tasks.core.recipe import load_recipe
    from inversa.tasks.core.work_units import work_units

    if one_task_per_region:
        scheduling.work_units = lambda pending, workers, max_units=None: work_units(
            pending, workers, units_per_worker=len(pending) or 1)
    try:
        recipe = load_recipe("ct-fbp", ["region_size=1", "grid.size=32"])
        started = time.perf_counter()
        result = batch(recipe, inputs, str(output))
        wall = time.perf_counter() - started
    finally:
        scheduling.work_units = work_units
    stores = [ResultStore.open(row["store"]) for row in result["datasets"]]
    regions = sum(len(s.regions) for s in stores)
    done = sum(len(s.done_regions()) for s in stores)
    with get_client(sync_client=True) as client:
        flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[result["flow_run_id"]]))
        deadline = time.monotonic() + 60
        task_runs = count_task_runs(client, flow_filter)
        while time.monotonic() < deadline:  # task run records reach the server as events, shortly after
            time.sleep(2)
            again = count_task_runs(client, flow_filter)
            if again == task_runs:
                break
            task_runs = again
        flow_runs = client.count_flow_runs()
        state = client.read_flow_run(result["flow_run_id"]).state
    return {
        "datasets": len(stores),
        "regions": regions,
        "regions_recorded": done,
        "all_regions_completed": done == regions and all(r["status"] == "done" for r in result["datasets"]),
        "task_runs": task_runs,
        "flow_runs_on_server": flow_runs,
        "flow_state": state.name if state else None,
        "wall_seconds": round(wall, 2),
        "regions_per_second": round(regions / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=16)
    parser.add_argument("--slices", type=int, default=125, help="slices (= one-slice regions) per dataset")
    parser.add_argument("--peer-regions", type=int, default=200,
                        help="regions of the one-task-per-region peer run (0: skip it)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="inversa-prefect-load-") as tmp:
        tmp = Path(tmp)
        (tmp / "home").mkdir()
        port = free_port()
        t0 = time.perf_counter()
        server = start_server(tmp / "home", port)
        startup = time.perf_counter() - t0
        os.environ.update({"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(tmp / "home"),
                           "PREFECT_LOGGING_LEVEL": "WARNING"})
        try:
            # Warm-up (imports, readers, FBP filters) so neither measured run pays for it.
            run_batch(simulate(tmp / "warm-inputs", 1, 2), tmp / "warm-out", one_task_per_region=False)
            inputs = simulate(tmp / "inputs", args.datasets, args.slices)
            report = {
                "benchmark": "prefect_load",
                "server": f"prefect server start (SQLite) on 127.0.0.1:{port}, started in {startup:.1f} s",
                "recipe": "ct-fbp, region_size=1, 32 x 32 grid, 40 views",
                "workers": "ThreadPoolTaskRunner(max_workers=2)",
                "work_units": run_batch(inputs, tmp / "out", one_task_per_region=False),
            }
            if args.peer_regions:
                peer_inputs = simulate(tmp / "peer-inputs", 1, args.peer_regions)
                report["peer_one_task_per_region"] = run_batch(peer_inputs, tmp / "peer-out", one_task_per_region=True)
                ours, peer = report["work_units"], report["peer_one_task_per_region"]
                report["regions_per_second_ratio"] = round(ours["regions_per_second"] / peer["regions_per_second"], 2)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
