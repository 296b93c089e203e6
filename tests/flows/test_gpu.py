"""GPU guards, checked on a CPU: a recipe that says `device: cuda` is all they look at."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import nullcontext

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.task_runners import ThreadPoolTaskRunner

import inversa.tasks.gpu as gpu
from inversa.tasks.core.recipe import load_recipe

ON_GPU = load_recipe("ct-fbp", ["name=gpu-recipe", "device=cuda"])
ON_CPU = load_recipe("ct-fbp", ["name=cpu-recipe", "device=cpu"])


def _in_slot(limit: str, hold: float):
    @task
    def hold_slot(index: int) -> tuple[float, float, int]:
        with gpu.gpu_slot(ON_GPU, limit=limit, timeout_seconds=60):
            start = time.monotonic()
            with get_client(sync_client=True) as client:
                active = client.read_global_concurrency_limit_by_name(limit).active_slots
            time.sleep(hold)
            return start, time.monotonic(), active

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def two_gpu_tasks():
        return [f.result() for f in [hold_slot.submit(i) for i in range(2)]]

    return two_gpu_tasks()


def test_gpu_tasks_take_turns_on_a_one_slot_limit():
    limit = f"inversa-gpu-test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
    try:
        (a_start, a_end, a_active), (b_start, b_end, b_active) = _in_slot(limit, hold=0.5)
        assert a_active == 1 and b_active == 1  # each held the one slot while it ran
        assert a_end <= b_start or b_end <= a_start  # never both at once
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(limit).active_slots == 0  # released
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(limit)


def test_without_the_limit_gpu_tasks_run_at_once_and_do_not_wait():
    limit = f"inversa-gpu-missing-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()

    @task
    def overlap(barrier: threading.Barrier) -> bool:
        with gpu.gpu_slot(ON_GPU, limit=limit):
            barrier.wait(timeout=30)  # both tasks inside the guard together, or a BrokenBarrierError
            return True

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def unthrottled():
        barrier = threading.Barrier(2)
        return [f.result() for f in [overlap.submit(barrier) for _ in range(2)]]

    assert unthrottled() == [True, True]
    assert time.monotonic() - started < 30


def test_cpu_recipes_never_ask_prefect_or_dask(monkeypatch):
    def no_api(limit):
        raise AssertionError("a CPU recipe asked the Prefect API for a GPU slot")

    monkeypatch.setattr(gpu, "_limit_exists", no_api)
    with gpu.gpu_slot(ON_CPU):
        pass
    assert isinstance(gpu.gpu_annotations(ON_CPU), nullcontext)


def test_gpu_annotations_outside_dask_do_nothing():
    assert isinstance(gpu.gpu_annotations(ON_GPU), nullcontext)  # no flow at all

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def threaded():
        return gpu.gpu_annotations(ON_GPU)

    assert isinstance(threaded(), nullcontext)


class _Client:
    def __init__(self, workers):
        self.workers = workers

    def scheduler_info(self, n_workers=5):
        assert n_workers == -1, "every worker must be looked at, not the first few"
        return {"workers": self.workers}


class _Runner:
    def __init__(self, workers):
        self.client = _Client(workers)


@pytest.mark.parametrize(
    ("workers", "declares"),
    [
        ({}, True),  # adaptive cluster, no workers yet: trust its spec
        ({"w1": {"resources": {}}, "w2": {"resources": {"GPU": 1}}}, True),
        ({"w1": {"resources": {}}, "w2": {}}, False),  # a GPU request could never be met
    ],
)
def test_gpu_request_only_where_a_worker_can_meet_it(workers, declares):
    assert gpu._cluster_declares_gpus(_Runner(workers)) is declares


def test_a_field_run_claims_a_gpu_only_when_its_solver_runs_on_one(monkeypatch):
    """The `gpu` tag, the slot and the Dask resource follow where the solver runs: the recipe's
    `device` unless `method.params.device` says otherwise (it once followed only the former,
    which field solvers ignored)."""
    import torch

    from inversa.tasks.kinds import kind_of
    from inversa.tasks.kinds.field.fit import method_of

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    auto = load_recipe("field-gp")  # device: auto
    assert kind_of(auto).uses_gpu(auto) and method_of(auto).solver_params["device"] == "cuda"
    pinned = load_recipe("field-gp", ["method.params.device=cpu"])
    assert not kind_of(pinned).uses_gpu(pinned) and method_of(pinned).solver_params["device"] == "cpu"
    on_cpu = load_recipe("field-gp", ["device=cpu"])
    assert not kind_of(on_cpu).uses_gpu(on_cpu) and method_of(on_cpu).solver_params["device"] == "cpu"
    assert isinstance(gpu.gpu_annotations(pinned), nullcontext)
