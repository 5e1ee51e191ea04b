"""Opening the warehouse file."""

from __future__ import annotations

from pathlib import Path

import duckdb

from quantwarehouse.paths import warehouse_path


def connect(path: Path | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating its folder when writing)."""
    target = path or warehouse_path()
    if read_only:
        if not target.exists():
            raise FileNotFoundError(
                f"no warehouse at {target}: run `python orchestrate.py ingest` first"
            )
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(target), read_only=read_only)
