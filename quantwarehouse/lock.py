"""One writer at a time: an advisory lock beside the warehouse file that names its holder.

The lock is an `flock` on `<warehouse>.lock`, so the kernel releases it when the holder dies; the
file keeps the holder's run id, pid, command and start time so a second writer can say who is in
the way. A lock left by a dead process is therefore recovered by simply acquiring it again.

Long read-only users (sleeve production runs) take the same file's lock shared (`ReaderLock`): any
number of readers at once, and a writer fails at once while one reads (and the other way round).
Each reader also registers itself in `<warehouse>.readers/` (a file it keeps locked), so a writer
can name the runs in its way; an entry left by a dead reader is unlocked and is ignored and removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self


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


def readers_dir_for(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".readers")


def _new_holder(run_id: str, command: str) -> LockHolder:
    return LockHolder(
        run_id=run_id,
        pid=os.getpid(),
        command=command,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host=socket.gethostname(),
    )


def read_holder(lock_file: Path) -> LockHolder | None:
    try:
        payload = json.loads(lock_file.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        return LockHolder(**payload)
    except TypeError:
        return None


class _CommandLock:
    """A lock held for the duration of a command (`with ...:`); subclasses acquire and release."""

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class WriterLock(_CommandLock):
    """Context manager holding the warehouse writer lock for the duration of a command."""

    def __init__(self, warehouse: Path, run_id: str, command: str) -> None:
        self.warehouse = warehouse
        self.lock_file = lock_path_for(warehouse)
        self.holder = _new_holder(run_id, command)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            readers = current_readers(self.warehouse)
            if readers:
                raise WarehouseLockedError(
                    f"the warehouse {self.warehouse} is being read by {_describe_all(readers)}; "
                    "a writer needs it alone: wait for them to finish or stop them"
                ) from None
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


class ReaderLock(_CommandLock):
    """Context manager for a long read-only user of the warehouse (a sleeve production run): it
    shares the lock with other readers and keeps writers out until it is released."""

    def __init__(self, warehouse: Path, run_id: str, command: str) -> None:
        self.warehouse = warehouse
        self.lock_file = lock_path_for(warehouse)
        self.holder = _new_holder(run_id, command)
        self._entry: Path | None = None
        self._entry_fd: int | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        # Registered before the shared lock is taken: a writer that finds the lock shared can then
        # always name the readers.
        self._register()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._unregister()
            holder = read_holder(self.lock_file)
            who = holder.describe() if holder else "an unknown process"
            raise WarehouseLockedError(
                f"the warehouse {self.warehouse} is locked for writing by {who}; a read-only run "
                "cannot start while it writes: wait for it to finish or stop it"
            ) from None
        self._fd = fd

    def _register(self) -> None:
        folder = readers_dir_for(self.warehouse)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        # Locked under a temporary name, then renamed: a listed entry is always a locked one
        # while its reader lives.
        temporary = folder / f".{name}.tmp"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, json.dumps(self.holder.__dict__).encode(), 0)
        self._entry = folder / f"{name}.json"
        os.replace(temporary, self._entry)
        self._entry_fd = fd

    def _unregister(self) -> None:
        if self._entry is not None:
            self._entry.unlink(missing_ok=True)
            self._entry = None
        if self._entry_fd is not None:
            os.close(self._entry_fd)
            self._entry_fd = None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        self._unregister()


def current_readers(warehouse: Path) -> list[LockHolder]:
    """The live readers registered for the warehouse (entries of dead readers are removed)."""
    folder = readers_dir_for(warehouse)
    if not folder.is_dir():
        return []
    readers = []
    for entry in sorted(folder.glob("*.json")):
        try:
            fd = os.open(entry, os.O_RDONLY)
        except FileNotFoundError:  # released meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(entry)
            readers.append(holder or LockHolder("unknown", -1, "unknown", "unknown", "unknown"))
        else:
            entry.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return readers


def _describe_all(holders: list[LockHolder]) -> str:
    return "; ".join(holder.describe() for holder in holders)
