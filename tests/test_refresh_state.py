"""What daily-refresh reads from the state tables (quantwarehouse/refresh/state.py), on small
hand-made warehouses whose answers are worked out by hand below."""

from __future__ import annotations

import json
from datetime import date
from types import SimpleNamespace

import duckdb
import pytest

from quantwarehouse.incremental import dirty_symbols
from quantwarehouse.refresh.state import (
    RAW_KLINES,
    Model,
    ModelGraph,
    Pending,
    count_symbol_rows,
    delete_symbols,
    load_batches_like,
    pending_symbols,
    stale_symbols,
    state_fingerprint,
)

BARS_1D = Model("bars_1d", "main.bars_1d", ("symbol",), (RAW_KLINES,))
MULTI_TF = Model("bars_multi_tf", "main.bars_multi_tf", ("symbol", "tf"), ("bars_1d",))
EMAS = Model("emas_multi_tf", "main.emas_multi_tf", ("symbol", "tf", "period"), ("bars_multi_tf",))

STATE_COLUMNS = "last_source_ts date, last_batch_id bigint, earliest_ts date, row_count bigint, "
STATE_COLUMNS += "updated_at timestamp"


@pytest.fixture
def warehouse() -> duckdb.DuckDBPyConnection:
    """raw: A batches 1-2 up to Jan 3, B batch 1 up to Jan 2, C new in batch 2, D weekly only.
    bars_1d processed batch 1 for A and B (up to Jan 2); bars_multi_tf has B's 3d bar behind."""
    con = duckdb.connect()
    con.execute("create schema raw; create schema state")
    con.execute(
        "create table raw.klines (symbol varchar, interval varchar, open_time timestamp, "
        "batch_id bigint)"
    )
    con.execute(
        """insert into raw.klines values
        ('A', '1d', '2025-01-01', 1), ('A', '1d', '2025-01-02', 1), ('A', '1d', '2025-01-03', 2),
        ('A', '4h', '2025-01-03 04:00', 2),
        ('B', '1d', '2025-01-01', 1), ('B', '1d', '2025-01-02', 1),
        ('C', '1d', '2025-01-03', 2),
        ('D', '1w', '2025-01-06', 3)"""
    )
    con.execute(f"create table state.bars_1d (symbol varchar, {STATE_COLUMNS})")
    con.execute(
        """insert into state.bars_1d values
        ('A', '2025-01-02', 1, '2025-01-01', 2, '2025-01-02 10:00'),
        ('B', '2025-01-02', 1, '2025-01-01', 2, '2025-01-02 10:00')"""
    )
    con.execute(f"create table state.bars_multi_tf (symbol varchar, tf varchar, {STATE_COLUMNS})")
    con.execute(
        """insert into state.bars_multi_tf values
        ('A', '2d', '2025-01-02', 1, '2025-01-01', 2, '2025-01-02 10:00'),
        ('A', '3d', '2025-01-02', 1, '2025-01-01', 2, '2025-01-02 10:00'),
        ('B', '2d', '2025-01-02', 1, '2025-01-01', 2, '2025-01-02 10:00'),
        ('B', '3d', '2024-12-30', 0, '2024-12-30', 1, '2024-12-30 10:00')"""
    )
    con.execute("create table main.bars_1d (symbol varchar, bar_date date)")
    con.execute(
        "insert into main.bars_1d values ('A', '2025-01-01'), ('A', '2025-01-02'), "
        "('B', '2025-01-01'), ('B', '2025-01-02')"
    )
    return con


def test_pending_follows_the_dirty_rule(warehouse):
    assert pending_symbols(warehouse, BARS_1D) == {
        "A": Pending("A", date(2025, 1, 3), date(2025, 1, 2)),
        "C": Pending("C", date(2025, 1, 3), None),
    }  # B is current; D has no daily-source kline (weekly only)
    assert pending_symbols(warehouse, BARS_1D)["A"].days_behind == 1
    assert list(pending_symbols(warehouse, BARS_1D, only=["A", "B"])) == ["A"]
    # B's 3d partition is at batch 0 while bars_1d holds batch 1 for B.
    assert pending_symbols(warehouse, MULTI_TF) == {
        "B": Pending("B", date(2025, 1, 2), date(2024, 12, 30))
    }


def test_before_its_first_build_every_upstream_symbol_is_pending(warehouse):
    assert pending_symbols(warehouse, EMAS) == {
        "A": Pending("A", date(2025, 1, 2), None),
        "B": Pending("B", date(2025, 1, 2), None),
    }
    gone = Model("x", "main.x", ("symbol",), ("never_built",))
    assert pending_symbols(warehouse, gone) == {}


def test_stale_symbols_lag_more_than_the_threshold(warehouse):
    stale = stale_symbols(warehouse, [BARS_1D, MULTI_TF], max_days_behind=1)
    assert sorted(stale) == ["B", "C"]
    assert (
        stale["C"].reason
        == "bars_1d has no rows for it yet (its upstream has data up to 2025-01-03)"
    )
    assert stale["B"].reason == (
        "bars_multi_tf stale: last bar 2024-12-30, 3 days behind its upstream (2025-01-02; "
        "threshold 1)"
    )
    assert sorted(stale_symbols(warehouse, [BARS_1D], max_days_behind=0)) == ["A", "C"]
    assert sorted(stale_symbols(warehouse, [MULTI_TF], max_days_behind=3)) == []


def test_delete_symbols_removes_rows_and_state_together(warehouse):
    before = state_fingerprint(warehouse, [BARS_1D, MULTI_TF])
    assert count_symbol_rows(warehouse, [BARS_1D, MULTI_TF], ["A"]) == {"bars_1d": 2}
    assert delete_symbols(warehouse, [BARS_1D, MULTI_TF], ["A"]) == {"bars_1d": 2}
    rows = warehouse.execute("select symbol, count(*) from main.bars_1d group by 1").fetchall()
    assert rows == [("B", 2)]
    assert warehouse.execute("select symbol from state.bars_1d").fetchall() == [("B",)]
    # bars_multi_tf has a state but no table here: left alone, as dbt would find it.
    assert warehouse.execute("select count(*) from state.bars_multi_tf").fetchone()[0] == 4
    after = state_fingerprint(warehouse, [BARS_1D, MULTI_TF])
    assert after["bars_1d"] != before["bars_1d"]
    assert after["bars_multi_tf"] == before["bars_multi_tf"]
    assert pending_symbols(warehouse, BARS_1D)["A"] == Pending("A", date(2025, 1, 3), None)


def test_delete_symbols_removes_the_carry_of_a_model_that_keeps_one(warehouse):
    warehouse.execute("create table main.emas_multi_tf (symbol varchar, tf varchar)")
    warehouse.execute("insert into main.emas_multi_tf values ('A', '2d'), ('B', '2d')")
    for table in ("emas_multi_tf", "emas_multi_tf__carry"):
        warehouse.execute(f"create table state.{table} (symbol varchar, tf varchar)")
        warehouse.execute(f"insert into state.{table} values ('A', '2d'), ('B', '2d')")
    assert delete_symbols(warehouse, [EMAS], ["A"]) == {"emas_multi_tf": 1}
    for table in ("main.emas_multi_tf", "state.emas_multi_tf", "state.emas_multi_tf__carry"):
        assert warehouse.execute(f"select symbol from {table}").fetchall() == [("B",)], table


def test_a_failed_delete_changes_nothing(warehouse):
    broken = Model("broken", "main.bars_1d", ("symbol",), ())
    warehouse.execute("create table state.broken (other varchar)")  # no symbol column
    with pytest.raises(duckdb.BinderException):
        delete_symbols(warehouse, [BARS_1D, broken], ["A"])
    assert warehouse.execute("select count(*) from main.bars_1d").fetchone()[0] == 4
    assert warehouse.execute("select count(*) from state.bars_1d").fetchone()[0] == 2


def test_the_same_load_is_found_by_source_and_parameters(warehouse):
    warehouse.execute(
        "create table raw.load_batches (batch_id bigint, source varchar, parameters json, "
        "status varchar)"
    )
    params = {"preset": "tiny", "until": "2025-06-24"}
    warehouse.execute(
        "insert into raw.load_batches values (1, 'synthetic', ?, 'success'), "
        "(2, 'synthetic', ?, 'failed'), (3, 'files', ?, 'success')",
        [json.dumps(params), json.dumps({**params, "until": "2025-06-25"}), json.dumps(params)],
    )
    assert load_batches_like(warehouse, "synthetic", params) == 1
    assert load_batches_like(warehouse, "synthetic", {**params, "until": "2025-06-25"}) is None
    assert load_batches_like(warehouse, "binance-api", params) is None


def node(name: str, materialized: str, *parents: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        alias=name,
        schema="main",
        resource_type="model",
        config=SimpleNamespace(materialized=materialized, get=lambda key: None),
        depends_on=SimpleNamespace(nodes=list(parents)),
    )


def test_upstreams_are_found_through_views():
    models = {
        "model.q.stg_klines": node("stg_klines", "view", "source.q.raw.klines"),
        "model.q.bars_1d": node("bars_1d", "incremental", "model.q.stg_klines"),
        "model.q.bars_multi_tf": node("bars_multi_tf", "incremental", "model.q.bars_1d"),
        "model.q.emas_multi_tf": node("emas_multi_tf", "incremental", "model.q.bars_multi_tf"),
        "model.q.dim_symbols": node("dim_symbols", "table", "model.q.bars_1d"),
    }
    sources = {"source.q.raw.klines": SimpleNamespace(schema="raw", identifier="klines")}
    graph = ModelGraph(SimpleNamespace(nodes=models, sources=sources))
    assert sorted(graph.models) == ["bars_1d", "bars_multi_tf", "emas_multi_tf"]
    assert graph.models["bars_1d"].upstreams == (RAW_KLINES,)
    assert graph.models["emas_multi_tf"].upstreams == ("bars_multi_tf",)
    assert [m.name for m in graph.ancestors(["emas_multi_tf"])] == ["bars_1d", "bars_multi_tf"]
    assert graph.ancestors(["bars_1d", "bars_multi_tf"]) == []


def test_dirty_detection_of_python_models_honours_symbols_and_exclude_symbols(warehouse):
    """The Python twin of the dirty_symbols macro (quantwarehouse/incremental.py), for a model
    `bars_1d` over the raw klines: A and C are dirty (see the fixture), B is current."""
    database = warehouse.execute("select current_database()").fetchone()[0]
    this = SimpleNamespace(database=database, identifier="bars_1d")
    upstream = warehouse.sql(
        "select symbol, open_time, batch_id from raw.klines where interval = '1d'"
    )

    def dirty(**filters: list[str]) -> dict[str, object]:
        found = dirty_symbols(warehouse, upstream, this, "open_time", "batch_id", **filters)
        return dict(found.fetchall())

    assert sorted(dirty()) == ["A", "C"]
    assert str(dirty()["A"]) == "2025-01-03 00:00:00"
    assert sorted(dirty(exclude_symbols=["C"])) == ["A"]
    assert sorted(dirty(only_symbols=["B", "C"])) == ["C"]
    assert dirty(only_symbols=["A", "C"], exclude_symbols=["A", "C"]) == {}


def test_dirty_detection_narrowed_by_the_upstream_state_finds_the_same_symbols():
    """With the upstream model's state, dirty_symbols reads only the rows of recent batches and
    that state, and answers as the full scan does. X is behind its watermark, Y is current, Z was
    never built (its rows older than every watermark, as after --full-refresh --symbols)."""
    con = duckdb.connect()
    con.execute("create schema state")
    con.execute("create table main.up (symbol varchar, bar_date date, source_batch_id bigint)")
    con.execute(
        """insert into main.up values
        ('X', '2025-01-01', 1), ('X', '2025-01-02', 3), ('X', '2025-01-03', 4),
        ('Y', '2025-01-01', 2), ('Y', '2025-01-02', 3),
        ('Z', '2024-12-30', 1), ('Z', '2025-01-03', 2)"""
    )
    con.execute(
        f"create table state.up (symbol varchar, {STATE_COLUMNS}); insert into state.up "
        "select symbol, max(bar_date), max(source_batch_id), min(bar_date), count(*), now() "
        "from main.up group by symbol"
    )
    con.execute(f"create table state.model (symbol varchar, tf varchar, {STATE_COLUMNS})")
    con.execute(
        """insert into state.model values
        ('X', '1d', '2025-01-02', 3, '2025-01-01', 2, now()),
        ('X', '2d', '2025-01-02', 3, '2025-01-01', 2, now()),
        ('Y', '1d', '2025-01-02', 3, '2025-01-01', 2, now())"""
    )
    database = con.execute("select current_database()").fetchone()[0]
    this = SimpleNamespace(database=database, identifier="model")
    upstream = con.sql("select * from main.up")
    for filters in ({}, {"only_symbols": ["Y", "Z"]}, {"exclude_symbols": ["Z"]}):
        scanned = dirty_symbols(con, upstream, this, "bar_date", **filters).fetchall()
        narrowed = dirty_symbols(
            con, upstream, this, "bar_date", upstream_state="state.up", **filters
        ).fetchall()
        assert sorted(narrowed) == sorted(scanned), filters
    found = dirty_symbols(con, upstream, this, "bar_date", upstream_state="state.up").fetchall()
    assert sorted(found) == [
        ("X", date(2025, 1, 3)),
        ("Z", date(2024, 12, 30)),
    ]
