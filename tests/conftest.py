"""Shared fixtures: a temporary warehouse per test, the CLI as users run it, the real sample."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from quantwarehouse.paths import REAL_SAMPLE_DIR, REPO_ROOT

# Fixtures that live in their own modules (a local Binance-format server: `binance_server`; a
# local alert receiver: `alert_server`).
pytest_plugins = ["tests.binance_server", "tests.alert_server"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh runtime data folder (warehouse, runs, exports) for this test only."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("QWH_DATA_DIR", str(folder))
    monkeypatch.delenv("QWH_WAREHOUSE", raising=False)
    return folder


@pytest.fixture
def warehouse(data_dir: Path) -> Path:
    return data_dir / "warehouse.duckdb"


@pytest.fixture
def con(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    from ingest.raw_schema import ensure_raw_schema

    connection = duckdb.connect(str(warehouse))
    ensure_raw_schema(connection)
    yield connection
    connection.close()


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 600,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python orchestrate.py ...` in a subprocess, as a user would (`stdin`: text piped in)."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "orchestrate.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"orchestrate.py {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@pytest.fixture
def real_sample() -> Path:
    """The real Binance candles in ../shared/data; skipped where ../shared is absent."""
    if not REAL_SAMPLE_DIR.is_dir():
        pytest.skip(
            f"real sample not found at {REAL_SAMPLE_DIR} (../shared is not beside the "
            "checkout, as in a user's clone)"
        )
    return REAL_SAMPLE_DIR


@pytest.fixture(scope="module")
def dbt_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Private dbt target and log folders for one test module (DBT_TARGET_PATH, DBT_LOG_PATH).

    Other dbt runs may use the same project tree at the same time; dbt in-process and the CLI in a
    subprocess both read these variables.
    """
    folder = tmp_path_factory.mktemp("dbt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_TARGET_PATH", str(folder / "target"))
        patch.setenv("DBT_LOG_PATH", str(folder / "logs"))
        yield folder


@pytest.fixture(scope="session")
def dbt_manifest(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The dbt project parsed once per session, for `run_dbt(..., manifest=...)` on warehouses
    named `warehouse.duckdb` (the manifest names relations after the file's stem)."""
    from quantwarehouse.dbt import parse_project

    folder = tmp_path_factory.mktemp("dbt-parse")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_WAREHOUSE", str(folder / "warehouse.duckdb"))
        return parse_project(target_path=folder / "target")


@pytest.fixture(scope="module")
def module_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse path shared by one test module (QWH_WAREHOUSE points at it meanwhile)."""
    warehouse = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_WAREHOUSE", str(warehouse))
        yield warehouse


def load_real_sample(warehouse: Path, *intervals: str) -> None:
    """Load the real sample's files at these intervals through the `files` source, one batch
    each; skip the test where ../shared is absent."""
    from ingest.loader import run_load
    from ingest.options import IngestOptions
    from ingest.raw_store import RawStore
    from ingest.sources import build_source

    if not REAL_SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample not found at {REAL_SAMPLE_DIR}")
    with duckdb.connect(str(warehouse)) as connection:
        for interval in intervals:
            source = build_source("files", IngestOptions(path=REAL_SAMPLE_DIR, interval=interval))
            summary = run_load(source, RawStore(connection), workers=1)
            assert summary.status == "success", "\n".join(summary.lines())


# Columns of the raw tables that hold the wall-clock time of a load, not what it loaded.
RAW_CLOCK_COLUMNS = {
    "load_batches": "started_at, finished_at",
    "klines": "loaded_at",
    "symbols": "loaded_at",
    "rejects": "rejected_at",
    "loaded_files": "loaded_at",
    "symbol_loads": "loaded_at",
}


def raw_rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every raw table's rows, sorted, without the wall-clock columns: what two loads of the same
    data must agree on."""
    return {
        table: con.sql(f"select * exclude ({clock}) from raw.{table} order by all").fetchall()
        for table, clock in RAW_CLOCK_COLUMNS.items()
    }
