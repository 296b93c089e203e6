"""The store lock: a second writer is refused at once, by name, and a dead holder frees it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from inversa.data.store import StoreError
from inversa.data.store_lock import StoreLock, StoreLocked, check_unlocked, lock_path_for, store_holder

REPO = Path(__file__).resolve().parents[2]


def test_second_lock_is_refused_with_the_holder_named(tmp_path):
    store = tmp_path / "run.zarr"
    with StoreLock(store):
        with pytest.raises(StoreLocked) as refused:
            StoreLock(store).acquire()
    message = str(refused.value)
    assert str(store) in message
    assert f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "since 20" in message  # an ISO date
    assert "command:" in message and "Wait for it to finish" in message
    assert refused.value.holder["pid"] == os.getpid()
    assert isinstance(refused.value, StoreError)


def test_lock_lives_next_to_the_store_so_a_missing_store_can_be_locked(tmp_path):
    store = tmp_path / "deep" / "run.zarr"
    with StoreLock(store) as lock:
        assert lock.lock_path == tmp_path / "deep" / ".run.zarr.inversa-lock"
        assert lock.lock_path.is_file() and not store.exists()


def test_other_spellings_of_the_path_share_the_lock(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with StoreLock(tmp_path / "run.zarr"):
        with pytest.raises(StoreLocked):
            StoreLock("../run.zarr").acquire()


def test_released_on_exit_and_on_error(tmp_path):
    store = tmp_path / "run.zarr"
    with StoreLock(store):
        pass
    with pytest.raises(ZeroDivisionError):
        with StoreLock(store):
            1 / 0
    lock = StoreLock(store).acquire()
    assert lock.held and store_holder(store)["pid"] == os.getpid()
    lock.release()
    lock.release()  # idempotent
    assert not lock.held and store_holder(store) is None


def test_not_reentrant_through_one_object(tmp_path):
    lock = StoreLock(tmp_path / "run.zarr").acquire()
    try:
        with pytest.raises(RuntimeError, match="not re-entrant"):
            lock.acquire()
    finally:
        lock.release()


def test_threads_of_one_process_exclude_each_other(tmp_path):
    """flock belongs to the open file, not the process: a lock taken in one thread refuses another."""
    store = tmp_path / "run.zarr"
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            StoreLock(store).acquire()
            outcome["got"] = True
        except StoreLocked as exc:
            outcome["refused"] = exc

    with StoreLock(store):
        thread = threading.Thread(target=second, name="second-run")
        thread.start()
        thread.join()
    assert "got" not in outcome and "refused" in outcome
    assert outcome["refused"].holder["thread"] == threading.current_thread().name


def test_stale_lock_file_is_harmless(tmp_path):
    store = tmp_path / "run.zarr"
    lock_path_for(store).write_text('{"host": "gone", "pid": 1, "since": "yesterday"}')
    assert store_holder(store) is None
    check_unlocked(store)
    with StoreLock(store):
        assert store_holder(store)["pid"] == os.getpid()
    lock_path_for(store).write_bytes(b"\x00garbage")
    with StoreLock(store):
        pass


def test_check_creates_nothing(tmp_path):
    store = tmp_path / "nowhere" / "run.zarr"
    assert store_holder(store) is None
    check_unlocked(store)
    assert not (tmp_path / "nowhere").exists()


def test_lock_of_a_killed_holder_is_released(tmp_path):
    store = tmp_path / "run.zarr"
    holder_code = (
        "import sys, time\n"
        "from data.store_lock import StoreLock\n"
        "lock = StoreLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", holder_code, str(store)], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked) as refused:
            check_unlocked(store)
        assert refused.value.holder["pid"] == child.pid
        assert f"pid {child.pid}" in str(refused.value) and "-c" in str(refused.value)
        with pytest.raises(StoreLocked):
            StoreLock(store).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert store_holder(store) is None
    with StoreLock(store):  # not stuck
        assert store_holder(store)["pid"] == os.getpid()


def test_a_path_without_a_name_is_refused(tmp_path):
    with pytest.raises(StoreError, match="directory name"):
        StoreLock("/")
