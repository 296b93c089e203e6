"""A real Prefect server, a served cron deployment of the batch flow, runs triggered through the API.

What users rely on: the schedule is stored and the server turns it into scheduled runs; a run of
the deployment completes and leaves its metrics table and progress in the API; and a later run
over the same watched directory reconstructs only what is new.
"""

from __future__ import annotations

import json
import time
from datetime import timezone

import pytest

from inversa.data.store import ResultStore
from tests.server.conftest import CRON, DEPLOYMENT, RECIPE, sync_client, trigger_and_wait, write_scan

pytestmark = pytest.mark.server


def _artifacts(info, flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with sync_client(info) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def _rows(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_served_deployment_holds_its_cron_schedule_and_watched_inputs(served_deployment):
    with sync_client(served_deployment.info) as client:
        deployment = client.read_deployment(served_deployment.deployment_id)
        flow = client.read_flow(deployment.flow_id)
    assert (flow.name, deployment.name) == ("batch", DEPLOYMENT)
    assert deployment.entrypoint.startswith("inversa.flows.batch")
    [schedule] = deployment.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (CRON, "UTC")
    assert deployment.parameters["inputs"] == [str(served_deployment.watched)]
    assert deployment.parameters["output"] == str(served_deployment.output)
    assert deployment.parameters["recipe"]["name"] == RECIPE
    assert deployment.parameters["recipe"]["input"] is None


def test_server_turns_the_schedule_into_runs_at_two_in_the_morning(served_deployment):
    """The scheduler service must create the upcoming runs; a broken one still shows the schedule."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    wanted = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[served_deployment.deployment_id]))
    scheduled = []
    deadline = time.monotonic() + 30
    with sync_client(served_deployment.info) as client:
        while not scheduled and time.monotonic() < deadline:
            # runs the scheduler made (not ones triggered by hand or by another test)
            scheduled = [r for r in client.read_flow_runs(flow_run_filter=wanted) if r.auto_scheduled]
            time.sleep(0.5)
    log = served_deployment.info.log
    assert scheduled, f"no scheduled runs created for the cron deployment; see the server log {log}"
    starts = {r.expected_start_time.astimezone(timezone.utc) for r in scheduled}
    assert all((t.hour, t.minute, t.second) == (2, 0, 0) for t in starts), sorted(starts)
    assert len(starts) == len(scheduled)  # one run per night, no duplicates


def test_triggered_run_completes_with_metrics_table_and_progress(finished_run):
    served = finished_run.deployment
    with sync_client(served.info) as client:
        run = client.read_flow_run(finished_run.flow_run_id)
    assert run.state.is_completed()
    assert str(run.deployment_id) == served.deployment_id

    artifacts = _artifacts(served.info, run.id)
    store = ResultStore.open(served.output / "scan-a.zarr")
    assert not store.pending_regions()

    metrics = artifacts[f"{RECIPE}-scan-a-metrics"]
    assert metrics.type == "table"
    table = {row["metric"]: row["value"] for row in _rows(metrics)}
    assert table["slices"] == "2"
    assert float(table["psnr"]) == pytest.approx(store.summary["psnr"], rel=1e-3)

    progress = artifacts[f"batch-{RECIPE}-progress"]
    assert progress.type == "progress"
    assert float(progress.data) == pytest.approx(100.0)

    [row] = _rows(artifacts[f"batch-{RECIPE}"])
    assert (row["dataset"], row["status"]) == ("scan-a", "done")


def test_next_run_over_the_watched_directory_reconstructs_only_the_new_input(finished_run):
    served = finished_run.deployment
    first_store = ResultStore.open(served.output / "scan-a.zarr")
    before = first_store.summary
    write_scan(served.watched, "scan-b", seed=11)

    run = trigger_and_wait(served)

    rows = {r["dataset"]: r["status"] for r in _rows(_artifacts(served.info, run.id)[f"batch-{RECIPE}"])}
    assert rows == {"scan-a": "skipped", "scan-b": "done"}
    assert ResultStore.open(served.output / "scan-a.zarr").summary == before
    assert not ResultStore.open(served.output / "scan-b.zarr").pending_regions()
