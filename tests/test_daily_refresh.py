"""`orchestrate.py daily-refresh` as a user runs it: targets, order, dry run, lock, failures, and
the published returns matrix against returns_daily."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantwarehouse.lock import lock_path_for
from quantwarehouse.paths import REAL_SAMPLE_DIR, REPO_ROOT, logs_dir
from tests.conftest import run_cli

SYMBOLS = ("BTCUSDT", "ETHUSDT", "NEOBTC")


@dataclass(frozen=True)
class Workspace:
    data_dir: Path

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def matrix(self) -> Path:
        return self.data_dir / "lakehouse" / "returns_matrix.parquet"

    @property
    def env(self) -> dict[str, str]:
        return {"QWH_DATA_DIR": str(self.data_dir), "QWH_WAREHOUSE": str(self.warehouse)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env)

    def refresh(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli("daily-refresh", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def tables(self) -> set[str]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            rows = con.execute("select schema_name || '.' || table_name from duckdb_tables()")
            return {name for (name,) in rows.fetchall()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, dbt_workdir: Path) -> Workspace:
    """The real daily sample of three symbols loaded through the CLI; nothing built yet."""
    if not REAL_SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample not found at {REAL_SAMPLE_DIR}")
    space = Workspace(tmp_path_factory.mktemp("refresh") / "data")
    space.data_dir.mkdir()
    loaded = space.cli(
        "ingest",
        "--source",
        "files",
        "--path",
        str(REAL_SAMPLE_DIR),
        "--interval",
        "1d",
        "--symbols",
        "BTCUSDT,ETHUSDT,NEOBTC",
        "--quiet",
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    return space


def test_no_target_is_an_error_listing_the_targets(workspace):
    result = workspace.cli("daily-refresh")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: no target given; choose one or more of --bars, --returns, --all"


def test_symbols_with_full_refresh_is_refused(workspace):
    result = workspace.cli("daily-refresh", "--bars", "--full-refresh", "--symbols", "BTCUSDT")
    assert result.returncode == 2
    assert "--symbols cannot be combined with --full-refresh" in result.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(workspace):
    before = digest(workspace.warehouse)
    result = workspace.refresh("--all", "--dry-run")
    assert digest(workspace.warehouse) == before
    assert not workspace.matrix.exists()
    out = result.stdout
    assert "step 1/3: build bars" in out
    assert "bars_1d (incremental): first build, every symbol" in out
    assert "step 3/3: publish returns matrix" in out
    assert "nothing is changed" in out


def test_bars_then_returns(workspace):
    bars = workspace.refresh("--bars")
    assert "main.bars_1d" in workspace.tables()
    assert "main.returns_daily" not in workspace.tables()
    daily_bars = sum(
        len(pd.read_csv(path))
        for symbol in SYMBOLS
        for path in REAL_SAMPLE_DIR.glob(f"{symbol}_1d_*.csv")
    )
    assert f"bars_1d: success, {daily_bars} rows written" in bars.stdout
    assert "skipped target --returns: not requested" in bars.stdout
    assert "OHLC repairs in daily bars written:" in bars.stdout
    assert "rejects in load batches 1..1: 0" in bars.stdout

    returns = workspace.refresh("--returns")
    assert {"main.returns_daily", "main.kline_gaps", "state.returns_daily"} <= workspace.tables()
    assert f"returns_daily: success, {daily_bars} rows written" in returns.stdout
    assert "gaps flagged: 0 kline gaps (0 missing bars)" in returns.stdout
    assert f"wrote {workspace.matrix}: " in returns.stdout
    assert "skipped target --bars: not requested" in returns.stdout

    log_file = logs_dir() / f"refresh-{datetime.now(UTC):%Y-%m-%d}.log"
    run_id = returns.stdout.splitlines()[0].split()[1]
    assert run_id in log_file.read_text()


def test_matrix_matches_returns_daily(workspace):
    if not workspace.matrix.exists():
        workspace.refresh("--all")
    table = pq.read_table(workspace.matrix)
    assert table.schema.names == ["bar_date", *sorted(SYMBOLS)]
    assert table.schema.metadata[b"quantwarehouse.source_model"] == b"returns_daily"
    with duckdb.connect(str(workspace.warehouse), read_only=True) as con:
        rows = con.execute(
            "select bar_date, symbol, simple_return, is_first_bar or spans_missing_days "
            "from main.returns_daily"
        ).fetchall()
    dates = table.column("bar_date").to_pylist()
    assert dates == sorted({row[0] for row in rows})
    cells = {(d, s): (value, empty) for d, s, value, empty in rows}
    for symbol in table.schema.names[1:]:
        for bar_date, cell in zip(dates, table.column(symbol).to_pylist(), strict=True):
            value, empty = cells.get((bar_date, symbol), (None, True))
            if empty:
                assert cell is None or np.isnan(cell), (symbol, bar_date)
            else:
                assert cell == value, (symbol, bar_date)


def test_second_run_is_incremental_and_dry_run_after_it_changes_nothing(workspace):
    if "main.returns_daily" not in workspace.tables():
        workspace.refresh("--all")
    result = workspace.refresh("--all", "--quiet")  # nothing new since the last run
    assert "bars_1d: success, 0 rows written" in result.stdout
    assert "skipped recomputation of returns_daily: no load batch after its watermark" in (
        result.stdout
    )
    assert "step 1/3" not in result.stdout  # --quiet: summary only

    before = digest(workspace.warehouse)
    plan = workspace.refresh("--all", "--dry-run")
    assert digest(workspace.warehouse) == before
    assert "bars_1d (incremental): 3 partitions at batches 1..1" in plan.stdout


@pytest.fixture
def lock_holder(workspace: Workspace) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the writer lock until it is stopped."""
    code = (
        "import sys, time; from pathlib import Path; from quantwarehouse.lock import WriterLock\n"
        "with WriterLock(Path(sys.argv[1]), 'holder-run', 'test'):\n"
        "    print('locked', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(workspace.warehouse)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    yield holder
    holder.kill()
    holder.wait()


def test_lock_held_by_another_process_fails_clearly(workspace, lock_holder):
    before = digest(workspace.warehouse)
    result = workspace.cli("daily-refresh", "--bars")
    assert result.returncode == 3
    last = result.stderr.strip().splitlines()[-1]
    assert "locked for writing by run holder-run" in last
    assert f"pid {lock_holder.pid}" in last
    assert digest(workspace.warehouse) == before
    assert lock_path_for(workspace.warehouse).exists()


def test_failing_step_stops_the_run_with_the_reason_last(data_dir, warehouse, dbt_workdir):
    space = Workspace(data_dir)
    loaded = space.cli("ingest", "--source", "synthetic", "--preset", "tiny", "--quiet")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    result = space.cli("daily-refresh", "--returns")  # the bars were never built
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: daily-refresh failed at step 'build returns and marts'")
    assert "bars_1d" in last
    assert "skipped step publish returns matrix: an earlier step failed" in result.stdout
    assert not space.matrix.exists()
