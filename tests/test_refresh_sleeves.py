"""`orchestrate.py refresh-sleeves`: the data refreshed once, then four isolated sleeve runs in
parallel; a daily-refresh started meanwhile fails at once naming them (the shared reader lock of
quantwarehouse.lock), and the warehouse is not changed by the sleeves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from quantwarehouse.lock import (
    ReaderLock,
    WarehouseLockedError,
    WriterLock,
    current_readers,
    readers_dir_for,
)
from quantwarehouse.paths import REPO_ROOT
from quantwarehouse.sleeves.audit import read_records
from tests.conftest import run_cli
from tests.test_production import last_line, make_profile, sha256, tiny_warehouse

SLEEVES = (
    "binance_spot_rating_all_long",
    "binance_spot_rating_all_short",
    "binance_spot_rating_ma_long",
    "binance_spot_rating_ma_short",
)
REFRESH_CONFIG = "source:\n  name: synthetic\n  options:\n    preset: tiny\n"


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    profiles: list[Path]
    refresh_config: Path

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def env(self) -> dict[str, str]:
        return {"QWH_DATA_DIR": str(self.data_dir)}

    def sleeve_runs(self) -> list[Path]:
        runs = self.data_dir / "runs"
        if not runs.is_dir():
            return []
        return sorted(p for p in runs.iterdir() if (p / "run.duckdb").exists())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    folder = tmp_path_factory.mktemp("sleeves")
    data_dir = folder / "data"
    data_dir.mkdir()
    (data_dir / "warehouse.duckdb").write_bytes(tiny_warehouse(tmp_path_factory).read_bytes())
    profiles = [make_profile(folder / "profiles", name) for name in SLEEVES]
    config = folder / "refresh.yml"
    config.write_text(REFRESH_CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_DATA_DIR", str(data_dir))
        patch.delenv("QWH_WAREHOUSE", raising=False)
        yield Workspace(data_dir, profiles, config)


def orchestrate(*args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "orchestrate.py"), *args]


def wait_for_readers(warehouse: Path, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not current_readers(warehouse):
        assert process.poll() is None, "refresh-sleeves ended before any sleeve read"
        assert time.monotonic() < deadline, "no sleeve run started reading"
        time.sleep(0.2)


def test_four_sleeves_run_isolated_in_parallel_and_keep_writers_out(workspace):
    process = subprocess.Popen(
        orchestrate(
            "refresh-sleeves",
            "--profiles",
            ",".join(str(p) for p in workspace.profiles),
            "--refresh-config",
            str(workspace.refresh_config),
            "--parallel",
            "4",
            "--skip-validation",
            "--skip-analysis",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        wait_for_readers(workspace.warehouse, process, timeout=600)
        # The refresh is over and the sleeves read: the file must not change from here on.
        during = sha256(workspace.warehouse)
        writer = run_cli("daily-refresh", "--all", "--config", str(workspace.refresh_config))
        stdout, stderr = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stdout[-4000:] + stderr[-4000:]

    assert writer.returncode == 3, writer.stdout + writer.stderr
    refused = last_line(writer.stderr)
    assert "is being read by" in refused and "refresh-sleeves" in refused
    assert "a writer needs it alone" in refused

    assert sha256(workspace.warehouse) == during
    batch = re.search(r"refresh-sleeves (\S+): 4 sleeve runs", stdout)
    assert batch is not None, stdout[-3000:]
    names = [p.stem for p in workspace.profiles]
    run_dirs = workspace.sleeve_runs()
    assert [p.name for p in run_dirs] == sorted(f"{batch.group(1)}_{n}" for n in names)
    for name, run_dir in zip(sorted(names), run_dirs, strict=True):
        assert f"{name}: success" in stdout
        manifest = json.loads((run_dir / "run_manifest.json").read_text())
        assert manifest["status"] == "success" and manifest["profile"] == name
        assert (run_dir / "dbt" / "target" / "manifest.json").is_file()
        outcomes = [r for r in read_records(run_dir / "audit.jsonl") if r["kind"] == "outcome"]
        assert {r["status"] for r in outcomes} == {"success", "skipped"}
        assert [r["step"] for r in outcomes if r["status"] == "skipped"] == [
            "validation",
            "post_analysis",
        ]
        assert run_cli("audit", "verify", str(run_dir)).returncode == 0
        with duckdb.connect(str(run_dir / "run.duckdb"), read_only=True) as con:
            sleeves = {row[0] for row in con.execute("select sleeve from sleeve_atoms").fetchall()}
            scanners = {
                r[0] for r in con.execute("select scanner from sleeve_candidates").fetchall()
            }
        assert sleeves == {name}
        assert scanners == {name.replace("tiny_", "binance_spot_rating_")}
    assert not current_readers(workspace.warehouse)


def test_a_failed_refresh_runs_no_sleeve(workspace):
    before = workspace.sleeve_runs()
    with WriterLock(workspace.warehouse, "other-writer", "ingest"):
        result = run_cli(
            "refresh-sleeves",
            "--profiles",
            str(workspace.profiles[0]),
            "--refresh-config",
            str(workspace.refresh_config),
        )
    assert result.returncode == 1
    message = last_line(result.stderr)
    assert message.startswith("error: the data refresh failed, so no sleeve ran:")
    assert "other-writer" in message
    assert workspace.sleeve_runs() == before


def test_an_unknown_profile_is_refused_before_anything_runs(workspace):
    started = time.monotonic()
    result = run_cli("refresh-sleeves", "--profiles", "binance_spot_rating_all_long,nope")
    assert result.returncode == 2
    assert "unknown profile 'nope'; available: binance_spot_rating_all_long" in last_line(
        result.stderr
    )
    assert time.monotonic() - started < 30  # no refresh ran


def test_parallel_must_be_at_least_one(workspace):
    result = run_cli("refresh-sleeves", "--parallel", "0")
    assert result.returncode == 2
    assert "expected a whole number of at least 1, got '0'" in result.stderr


# -- the reader lock, between processes ------------------------------------------------------------

READER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from quantwarehouse.lock import ReaderLock
    with ReaderLock(Path(sys.argv[1]), sys.argv[2], "production --profile test"):
        print("reading", flush=True)
        time.sleep(60)
    """
)


def start_reader(warehouse: Path, run_id: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(warehouse), run_id], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "reading"
    return process


def stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def test_readers_share_the_warehouse_and_a_writer_fails_naming_them(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    first, second = start_reader(warehouse, "sleeve-a"), start_reader(warehouse, "sleeve-b")
    try:
        with ReaderLock(warehouse, "sleeve-c", "production"):  # a third one is welcome
            assert {h.run_id for h in current_readers(warehouse)} == {
                "sleeve-a",
                "sleeve-b",
                "sleeve-c",
            }
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError) as error, WriterLock(warehouse, "w", "refresh"):
            pass
        assert time.monotonic() - started < 1.0
        message = str(error.value)
        assert "is being read by run sleeve-a" in message and "run sleeve-b" in message
        assert str(first.pid) in message and str(second.pid) in message
    finally:
        stop(first, second)
    with WriterLock(warehouse, "w", "refresh"):  # readers gone: the writer gets in
        pass


def test_a_reader_fails_at_once_while_a_writer_holds_the_lock(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with WriterLock(warehouse, "refresh-run", "daily-refresh"):
        with pytest.raises(WarehouseLockedError) as error, ReaderLock(warehouse, "s", "x"):
            pass
        assert "locked for writing by run refresh-run" in str(error.value)
        assert "a read-only run cannot start while it writes" in str(error.value)
        assert list(readers_dir_for(warehouse).glob("*")) == []  # no registration left behind


def test_a_killed_readers_entry_is_ignored_and_removed(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    reader = start_reader(warehouse, "killed-sleeve")
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait()
    assert len(list(readers_dir_for(warehouse).glob("*.json"))) == 1
    assert current_readers(warehouse) == []
    assert list(readers_dir_for(warehouse).glob("*.json")) == []
    with WriterLock(warehouse, "w", "refresh"):
        pass
