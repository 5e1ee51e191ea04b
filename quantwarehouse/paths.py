"""Where things live: one answer whatever the current directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
CONFIG_DIR = REPO_ROOT / "configs"
SHARED_DIR = REPO_ROOT.parent / "shared"
REAL_SAMPLE_DIR = SHARED_DIR / "data" / "binance_spot_real_2017_2018"

WAREHOUSE_ENV = "QWH_WAREHOUSE"
DATA_DIR_ENV = "QWH_DATA_DIR"
LOGS_DIR_ENV = "QWH_LOGS_DIR"


def data_dir() -> Path:
    """Runtime data (warehouse, runs, exports, lakehouse): `QWH_DATA_DIR` or `<repo>/data`."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override).resolve() if override else REPO_ROOT / "data"


def warehouse_path() -> Path:
    """The warehouse file: `QWH_WAREHOUSE` if set, else `<data dir>/warehouse.duckdb`."""
    override = os.environ.get(WAREHOUSE_ENV)
    return Path(override).resolve() if override else data_dir() / "warehouse.duckdb"


def lakehouse_dir() -> Path:
    return data_dir() / "lakehouse"


def export_dir() -> Path:
    return data_dir() / "export"


def runs_dir() -> Path:
    return data_dir() / "runs"


def logs_dir() -> Path:
    """Daily log files: `QWH_LOGS_DIR` or `<repo>/.logs`."""
    override = os.environ.get(LOGS_DIR_ENV)
    return Path(override).resolve() if override else REPO_ROOT / ".logs"
