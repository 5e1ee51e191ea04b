"""EMAs over the anchored calendar bars on ISO weeks (bars_cal_anchor_iso).

One row per (symbol, tf, period, bar_date); the logic lives in quantwarehouse/ema_models.py
(what a run reads and writes) and quantwarehouse/ema.py (the computation).
"""

from typing import Any

import duckdb
import pyarrow as pa

from quantwarehouse.ema_models import ema_model


def model(dbt: Any, session: duckdb.DuckDBPyConnection) -> pa.Table:
    # dbt makes a Python model a table unless the model itself says otherwise; the rest of the
    # incremental contract is set for the folder in dbt_project.yml.
    dbt.config(materialized="incremental")
    # The periods come from var ema_periods through the model's YAML config.
    periods = dbt.config.get("ema_periods")
    return ema_model(dbt, session, dbt.ref("bars_cal_anchor_iso"), periods, daily=False)
