"""features_matrix: TradingView-style technical ratings per (bar_date, symbol), point in time.

Thin on purpose: indicators, votes and ratings live in quantwarehouse.features (unit-tested).
Incremental (`symbol_range`): a dirty symbol's indicators are recomputed over its whole history
(EMA-type indicators have infinite memory) and its rows are emitted from dirty_from on, so they
equal a full rebuild's; rows before dirty_from depend only on older bars and stay as they are.
"""

from typing import Any

import duckdb
import pyarrow as pa

from quantwarehouse.features import BAR_COLUMNS, features_table
from quantwarehouse.incremental import dirty_symbols


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pa.Table:
    # dbt makes a Python model a table unless the model itself says otherwise; the rest of the
    # incremental contract (symbol_range on bar_date, update_state() post-hook) is set for the
    # folder in dbt_project.yml.
    dbt.config(materialized="incremental")
    bars = dbt.ref("bars_1d").select(", ".join(BAR_COLUMNS))
    emit_from = None
    if dbt.is_incremental:
        dirty = dirty_symbols(
            session,
            bars,
            dbt.this,
            "bar_date",
            only_symbols=dbt.vars["symbols"],
            exclude_symbols=dbt.vars["exclude_symbols"],
        )
        emit_from = dict(dirty.fetchall())
        bars = bars.join(dirty, "symbol", how="semi")
    frame = bars.order("symbol, bar_date").df()
    return features_table(frame, dbt.invocation_id, emit_from)
