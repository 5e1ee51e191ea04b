"""One writer at a time: an advisory lock beside the warehouse file that names its holder.

The lock is an `flock` on `<warehouse>.lock`, so the kernel releases it when the holder dies; the
file keeps the holder's run id, pid, command and start time so a second writer can say who is in
the way. A lock left by a dead process is therefore recovered by simply acquiring it again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType


class WarehouseLockedError(RuntimeError):
    """Another live process holds the writer lock."""


@dataclass(frozen=True)
class LockHolder:
    run_id: str
    pid: int
    command: str
    started_at: str
    host: str

    def describe(self) -> str:
        return (
            f"run {self.run_id} (pid {self.pid} on {self.host}, command '{self.command}', "
            f"started {self.started_at})"
        )


def lock_path_for(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".lock")


def read_holder(lock_file: Path) -> LockHolder | None:
    try:
        payload = json.loads(lock_file.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        return LockHolder(**payload)
    except TypeError:
        return None


class WriterLock:
    """Context manager holding the warehouse writer lock for the duration of a command."""

    def __init__(self, warehouse: Path, run_id: str, command: str) -> None:
        self.lock_file = lock_path_for(warehouse)
        self.holder = LockHolder(
            run_id=run_id,
            pid=os.getpid(),
            command=command,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            host=socket.gethostname(),
        )
        self._fd: int | None = None

    def acquire(self) -> None:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.lock_file)
            who = holder.describe() if holder else "an unknown process"
            raise WarehouseLockedError(
                f"the warehouse {self.lock_file.with_suffix('')} is locked for writing by {who}; "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder.__dict__).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def current_writer(warehouse: Path) -> LockHolder | None:
    """The live holder of the writer lock, or None when no writer is running."""
    lock_file = lock_path_for(warehouse)
    if not lock_file.exists():
        return None
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(lock_file) or LockHolder("unknown", -1, "unknown", "unknown", "unknown")
    finally:
        os.close(fd)
    return None
