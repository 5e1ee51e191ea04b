"""One writer at a time, between real processes; a dead holder's lock is recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantwarehouse.lock import WarehouseLockedError, WriterLock, current_writer, lock_path_for

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from quantwarehouse.lock import WriterLock
    with WriterLock(Path(sys.argv[1]), "holder-run", "test-holder"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def start_holder(warehouse: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_writer_fails_at_once_naming_the_holder(warehouse):
    holder = start_holder(warehouse)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError) as error, WriterLock(warehouse, "me", "test"):
            pass
        assert time.monotonic() - started < 1.0
        message = str(error.value)
        assert "holder-run" in message and str(holder.pid) in message and "test-holder" in message
        who = current_writer(warehouse)
        assert who is not None and who.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_lock_left_by_a_killed_process_is_recovered(warehouse):
    holder = start_holder(warehouse)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path_for(warehouse).exists()
    assert current_writer(warehouse) is None
    with WriterLock(warehouse, "next", "test"):
        assert current_writer(warehouse) is not None


def test_cli_writer_fails_while_another_process_writes(warehouse, tmp_path):
    from tests.conftest import run_cli

    holder = start_holder(warehouse)
    try:
        result = run_cli(
            "ingest",
            "--source",
            "synthetic",
            "--preset",
            "tiny",
            env={"QWH_DATA_DIR": str(warehouse.parent)},
        )
        assert result.returncode == 3
        assert "holder-run" in result.stderr.strip().splitlines()[-1]
        assert not warehouse.exists()
    finally:
        holder.kill()
        holder.wait()
