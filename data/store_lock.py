"""One writer per result store: an advisory lock that a crashed run cannot leave stuck.

Two runs writing the same store would each skip the regions the other has recorded and race on
the template and the summary; the second one is therefore refused at once, with a message that
names the run holding the store.

How it works, and why:

- The lock is ``fcntl.flock`` on a small file next to the store, ``<parent>/.<name>.inversa-lock``.
  Next to it, not inside, because the store directory may not exist yet when a run starts and
  ``ResultStore.create`` replaces the directory with ``--overwrite``.
- The kernel drops a ``flock`` when the last descriptor of the lock's open file is closed, which
  includes the holder being killed (SIGKILL, OOM killer, a node reboot for a local disk). So a
  crashed run never leaves the store locked, and nothing has to judge whether a lock is "stale".
- The holder writes who it is (host, pid, start time, command line) into the file, only for the
  refusal message. The file itself is never deleted: a file left behind after a run holds no
  lock and is harmless; deleting it on release would open a race (a waiter could lock the old,
  unlinked file while a third run locks a new one). Do not delete it while a run is going.
- ``flock`` locks belong to an open file description, not to a process: two ``StoreLock``
  objects for the same store refuse each other even in two threads of one process (each opens
  the file itself). The descriptor is close-on-exec, so programs a run starts do not inherit the
  lock; a child made by a plain ``fork`` (multiprocessing's fork start method) does share it,
  and the store stays locked until that child exits too, which is right while it writes.

Network file systems: on NFS, Linux turns ``flock`` into a POSIX byte-range lock that the server
arbitrates, so the lock still works between hosts, but (a) it is then per process, not per
open file, so two threads of one process no longer exclude each other there, and (b) the lock
of a crashed *client machine* is only freed when the server's lease expires (NFSv4: about 90 s)
or its lock daemon notices the reboot (NFSv3). Lustre mounted with ``localflock`` gives locks
that other nodes do not see; with ``noflock``, ``flock`` fails and the run is refused with a
message saying so. On such systems run one writer per store by other means (e.g. one job per
store) or write the store on a file system with working locks.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from inversa.data.store import StoreError

__all__ = ["StoreLock", "StoreLocked", "check_unlocked", "lock_path_for", "store_holder"]

LOCK_SUFFIX = ".inversa-lock"
_MAX_HOLDER_BYTES = 16384


class StoreLocked(StoreError):
    """Another run holds the store; retrying at once would only be refused again."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder


def lock_path_for(store_path: str | os.PathLike) -> Path:
    """``<parent>/.<name>.inversa-lock``, the parent resolved so every spelling of a path agrees."""
    path = Path(store_path).expanduser()
    if not path.name or path.name in (".", ".."):
        raise StoreError(f"{store_path}: a store path must end in a directory name, got {str(store_path)!r}")
    return path.absolute().parent.resolve() / f".{path.name}{LOCK_SUFFIX}"


class StoreLock:
    """An exclusive, non-blocking lock on one result store, for the length of a run.

    ``with StoreLock(path): ...`` or ``acquire()`` / ``release()``. ``acquire`` never waits: it
    raises :class:`StoreLocked` naming the holder. Not re-entrant: acquiring twice through the
    same object is a programming error; a second object for the same store is refused like
    another process would be.
    """

    def __init__(self, store_path: str | os.PathLike):
        self.store_path = Path(store_path)
        self.lock_path = lock_path_for(store_path)
        self._fd: int | None = None
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "StoreLock":
        with self._guard:
            if self._fd is not None:
                raise RuntimeError(f"{self.store_path}: this StoreLock is already held; it is not re-entrant")
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_lock_file(self.lock_path, os.O_RDWR | os.O_CREAT, self.store_path)
            try:
                if not _try_flock(fd, fcntl.LOCK_EX, self.lock_path, self.store_path):
                    holder = _read_holder(fd)
                    raise StoreLocked(_refusal(self.store_path, self.lock_path, holder), holder)
                _write_holder(fd, _this_holder())
            except BaseException:
                os.close(fd)  # closing the only descriptor also drops a lock we may have taken
                raise
            self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (a no-op when not held); the holder details are cleared first."""
        with self._guard:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # the lock is what matters; stale details are only shown while locked
            finally:
                os.close(fd)

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"StoreLock({str(self.store_path)!r}, held={self.held})"


def store_holder(store_path: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the store's lock right now (host, pid, since, command), or None if nobody.

    Cheap and side-effect free: it creates no file or directory. For an early refusal, e.g.
    before an orchestrator starts; the run itself must still ``acquire``. The probe is a shared
    lock held for microseconds: a run that tries to acquire in that instant is refused (and is
    told the holder may be starting), never let in twice.
    """
    lock_path = lock_path_for(store_path)
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{lock_path}: cannot open the lock file of store {store_path} ({exc.strerror})") from exc
    try:
        if _try_flock(fd, fcntl.LOCK_SH, lock_path, Path(store_path)):
            return None  # nobody holds it exclusively; the shared probe is dropped on close
        return _read_holder(fd) or {}
    finally:
        os.close(fd)


def check_unlocked(store_path: str | os.PathLike) -> None:
    """Raise :class:`StoreLocked` (the same message ``acquire`` gives) if a run holds the store."""
    holder = store_holder(store_path)
    if holder is not None:
        raise StoreLocked(_refusal(Path(store_path), lock_path_for(store_path), holder), holder)



# --------------------------------------------------------------------------------------------


def _open_lock_file(lock_path: Path, flags: int, store_path: Path) -> int:
    try:
        return os.open(lock_path, flags | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(
            f"{lock_path}: cannot open the lock file of store {store_path} ({exc.strerror}); "
            "the store's parent directory must be writable"
        ) from exc


def _try_flock(fd: int, kind: int, lock_path: Path, store_path: Path) -> bool:
    """True if taken; False if another open file holds a conflicting lock."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise StoreError(
            f"{lock_path}: the file system does not support locking (flock: {exc.strerror}), so inversa "
            f"cannot make sure one run at a time writes store {store_path}; write the store on a file "
            "system with working locks (a local disk, NFS with a lock service, Lustre mounted with "
            "'flock')"
        ) from exc
    return True


def _this_holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else sys.executable,
        "thread": threading.current_thread().name,
    }


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    data = json.dumps(holder).encode()[:_MAX_HOLDER_BYTES]
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The holder's details; None when not (yet) written or unreadable (they are only a courtesy)."""
    try:
        data = os.pread(fd, _MAX_HOLDER_BYTES, 0)
        holder = json.loads(data.decode())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _refusal(store_path: Path, lock_path: Path, holder: dict[str, Any] | None) -> str:
    if holder:
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {holder.get('since', '?')}"
        if holder.get("command"):
            who += f", command: {holder['command']}"
    else:
        who = "a run whose details are not written yet (it may be starting)"
    return (
        f"{store_path}: another run is writing this result store ({who}). Wait for it to finish, or stop "
        f"it and rerun to resume from its finished regions. A run that died holds no lock: the operating "
        f"system releases it (lock file {lock_path})."
    )
