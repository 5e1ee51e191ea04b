"""Quality gates on the slice a daily refresh wrote, on a real incremental refresh.

Four symbols over DAYS days are built; then a new day for every symbol and a late revision of an
old day of one symbol are loaded and refreshed with the gates (`--validate`). A gate on a build's
invocation then reads the rows the invocation wrote (DuckDB finds them by zone map) and the rows
per partition from the state tables, whose counts add up to the tables' rows. Copies of that
warehouse with one thing broken each show that a slice still catches a key written twice, a bad
value in a written row, a missing period or day in a touched symbol and a symbol missing on the
latest date, whether the break shows in the state tables (a model writing the wrong rows) or not
(a write outside dbt: the gate then reads the table itself).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from expectations.gates import GateResult, GateSession, Slice, run_gate
from expectations.scopes import ScopeResolver
from expectations.suites import LAYERS, STG_KLINES, ema_table
from expectations.tables import picked_rows, scoped_rows
from tests.conftest import run_cli
from tests.incremental_harness import (
    concat,
    copy_warehouse,
    load_batch,
    on_days,
    random_walk,
    revised,
)
from tests.test_gates import failure

SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
START = date(2024, 1, 1)
DAYS = 90
NEW_DAY = START + timedelta(days=DAYS)
REVISED = ("CCCUSDT", START + timedelta(days=40))  # a late revision: CCC is rewritten from there
BUILD = ("--bars", "--returns", "--emas", "--features")
BUILD_STEPS = {
    "bars": "build bars",
    "bar_families": "build bars",
    "returns": "build returns and marts",
    "emas": "build emas",
    "features": "build features",
}


@dataclass(frozen=True)
class Refreshed:
    data_dir: Path
    invocations: dict[str, str]  # layer -> the invocation id of the step building it

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def connect(self, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.warehouse), read_only=read_only)

    def copy(self, folder: Path) -> Refreshed:
        copy_warehouse(self.warehouse, folder)
        return Refreshed(folder, self.invocations)

    def slice(self, layer: str) -> Slice:
        return Slice(invocation_id=self.invocations[layer])

    def gate(self, layer: str, run: str = "gate") -> GateResult:
        with self.connect() as con:
            return run_gate(
                con, layer, slice=self.slice(layer), run_dir=self.data_dir / "runs" / run
            )

    def written(self, table: str, layer: str) -> int:
        with self.connect() as con:
            return con.execute(
                f"select count(*) from main.{table} where invocation_id = ?",
                [self.invocations[layer]],
            ).fetchone()[0]

    def broken(self, folder: Path, *statements: tuple[str, list[object]]) -> Refreshed:
        copy = self.copy(folder)
        with copy.connect(read_only=False) as con:
            for sql, params in statements:
                con.execute(sql, params)
        return copy


def history(days: int) -> list[pa.Table]:
    return [random_walk(symbol, START, days) for symbol in SYMBOLS]


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory: pytest.TempPathFactory, dbt_workdir: Path) -> Refreshed:
    data_dir = tmp_path_factory.mktemp("slices") / "data"
    data_dir.mkdir()
    env = {"QWH_DATA_DIR": str(data_dir), "QWH_WAREHOUSE": str(data_dir / "warehouse.duckdb")}
    load_batch(data_dir / "warehouse.duckdb", concat(*history(DAYS)))
    run_cli("daily-refresh", *BUILD, "--quiet", env=env, check=True)
    symbol, day = REVISED
    late = revised(on_days(random_walk(symbol, START, DAYS), day, day), 1.02)
    new_day = [on_days(walk, NEW_DAY, NEW_DAY) for walk in history(DAYS + 1)]
    load_batch(data_dir / "warehouse.duckdb", concat(late, *new_day))
    result = run_cli("daily-refresh", *BUILD, "--validate", "--quiet", env=env, check=True)
    found = re.search(r"^run manifest: (\S+)$", result.stdout, re.MULTILINE)
    assert found, result.stdout
    stages = {s["name"]: s for s in json.loads(Path(found[1]).read_text())["stages"]}
    gates = {name: stage["status"] for name, stage in stages.items() if name.startswith("gate")}
    assert set(gates.values()) == {"success"}, gates
    invocations = {
        layer: stages[step]["outputs"]["invocation_ids"][0] for layer, step in BUILD_STEPS.items()
    }
    return Refreshed(data_dir, invocations)


# -- a clean refresh ------------------------------------------------------------------------------


def test_each_gate_reads_the_rows_its_invocation_wrote(refreshed, tmp_path):
    session = GateSession(tmp_path / "run")
    with refreshed.connect() as con:
        results = {
            layer: session.run(con, layer, slice=refreshed.slice(layer)) for layer in BUILD_STEPS
        }
    docs = session.build_docs()
    for layer, result in results.items():
        assert result.passed, "\n".join(result.lines())
        for suite, spec in zip(result.suites, LAYERS[layer], strict=True):
            if spec.frame is None:
                assert suite.rows == refreshed.written(spec.table.name, layer), suite.suite
    # The revised symbol's partitions were rewritten from the revision on, the others' from
    # the new day (less their windows' warm-up).
    with refreshed.connect() as con:
        revised_rows, other_rows = con.execute(
            "select count(*) filter (where symbol = ?), count(*) filter (where symbol <> ?) "
            "from main.bars_1d where invocation_id = ?",
            [REVISED[0], REVISED[0], refreshed.invocations["bars"]],
        ).fetchone()
    assert revised_rows == (NEW_DAY - REVISED[1]).days + 1
    assert other_rows == len(SYMBOLS) - 1
    index = docs.read_text()
    for result in results.values():
        for suite in result.suites:
            assert f"validations/{'/'.join(suite.suite.split('.'))}/" in index, suite.suite


def test_the_state_stands_in_for_the_table_only_while_it_counts_every_row(refreshed, tmp_path):
    emas = ema_table("emas_multi_tf")
    relations = (emas.relation, "main.bars_multi_tf", "main.bars_1d")
    slice_ = refreshed.slice("emas")
    with refreshed.connect() as con:
        existing = {r for (r,) in con.execute(
            "select table_schema || '.' || table_name from information_schema.tables"
        ).fetchall()}  # fmt: skip
        scope = ScopeResolver(con, slice_, existing).scope(emas, relations)
    assert scope.rows == picked_rows(emas, slice_)
    assert scope.counted_by_state == frozenset(relations)
    assert scope.symbols.names == SYMBOLS

    copy = refreshed.broken(
        tmp_path / "data",
        ("insert into main.emas_multi_tf select * from main.emas_multi_tf limit 1", []),
    )
    with copy.connect() as con:
        resolver = ScopeResolver(con, slice_, existing)
        scope = resolver.scope(emas, relations)
        widened = con.execute(f"select count(*) from ({scope.rows.sql})", scope.rows.params)
        (widened_rows,) = widened.fetchone()
        (expected,) = con.execute(
            f"select count(*) from ({scoped_rows(emas, slice_).sql})",
            scoped_rows(emas, slice_).params,
        ).fetchone()
        resolver.close()
        temporary = con.execute("select count(*) from duckdb_tables() where temporary").fetchone()
    assert scope.counted_by_state == frozenset(relations) - {emas.relation}
    assert widened_rows == expected
    assert temporary == (0,)


def test_a_staging_slice_finds_its_klines_through_raw(refreshed):
    slice_ = Slice(min_batch_id=2)
    query = scoped_rows(STG_KLINES, slice_)
    with refreshed.connect() as con:
        found = con.execute(
            f"select symbol, open_time from ({query.sql}) order by all", query.params
        ).fetchall()
        # The definition on the view itself: every staged kline of a series from the first one
        # whose latest revision came in batch 2 or later.
        expected = con.execute(
            """
            with touched as (
                select symbol, interval, min(open_time) as touched_from
                from main.stg_klines where source_batch_id >= 2 group by all
            )
            select k.symbol, k.open_time from main.stg_klines as k
            join touched as t using (symbol, interval)
            where k.open_time >= t.touched_from order by all
            """
        ).fetchall()
    assert found == expected
    assert len(found) == (NEW_DAY - REVISED[1]).days + 1 + len(SYMBOLS) - 1


# -- a slice still catches what a refresh can break -----------------------------------------------


def written_row(refreshed: Refreshed, table: str, layer: str) -> dict[str, object]:
    """One row the layer's invocation wrote for the revised symbol, before its last day."""
    with refreshed.connect() as con:
        cursor = con.execute(
            f"select * from main.{table} where invocation_id = ? and symbol = ? "
            "and bar_date < ? order by all limit 1",
            [refreshed.invocations[layer], REVISED[0], NEW_DAY],
        )
        names = [d[0] for d in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


@pytest.mark.parametrize(
    ("layer", "table", "keys"),
    [
        ("bar_families", "bars_cal_us", ("symbol", "tf", "bar_date")),
        ("emas", "emas_multi_tf", ("symbol", "tf", "period", "bar_date")),
    ],
)
def test_a_key_written_twice_fails_its_uniqueness(refreshed, tmp_path, layer, table, keys):
    """An older row the refresh's write should have replaced, left beside it (by a delete gone
    wrong): the table holds a row its state does not count, and the gate reads the table."""
    row = written_row(refreshed, table, layer)
    where = " and ".join(f"{key} = ?" for key in keys)
    copy = refreshed.broken(
        tmp_path / "data",
        (
            f"insert into main.{table} select * replace ('an-earlier-run' as invocation_id) "
            f"from main.{table} where {where}",
            [row[key] for key in keys],
        ),
    )
    result = copy.gate(layer)
    found = failure(result, f"{layer}.{table}: unique ({', '.join(keys)})")
    assert found.unexpected_count == 2
    assert list(found.sample_rows) == [{key: row[key] for key in keys}] * 2


def test_a_bad_value_in_a_written_row_fails_naming_the_row(refreshed, tmp_path):
    row = written_row(refreshed, "emas_cal_iso", "emas")
    key = ("symbol", "tf", "period", "bar_date")
    copy = refreshed.broken(
        tmp_path / "data",
        (
            f"update main.emas_cal_iso set ema = -1 where {' and '.join(f'{k} = ?' for k in key)}",
            [row[k] for k in key],
        ),
    )
    result = copy.gate("emas")
    found = failure(result, "emas.emas_cal_iso: ema > 0")
    assert found.sample_rows == ({**{k: row[k] for k in key}, "ema": -1.0},)
    ranged = failure(result, "emas.emas_cal_iso.coverage: lowest_ema >= close_floor")
    assert [(r["symbol"], r["tf"]) for r in ranged.sample_rows] == [(row["symbol"], row["tf"])]
    rows_suite = next(s for s in result.suites if s.suite == "emas.emas_cal_iso")
    assert rows_suite.rows == refreshed.written("emas_cal_iso", "emas")


@pytest.mark.parametrize("in_state", [False, True], ids=["outside-dbt", "in-state"])
def test_a_missing_period_of_a_touched_symbol_fails_the_coverage(refreshed, tmp_path, in_state):
    """One EMA period of a symbol the refresh touched is gone: deleted outside dbt (the table no
    longer adds up to its state) or never written (its state rows gone with it)."""
    symbol = "AAAUSDT"
    where = "where symbol = ? and period = (select min(period) from main.emas_multi_tf)"
    statements = [(f"delete from main.emas_multi_tf {where}", [symbol])]
    if in_state:
        statements.append((f"delete from state.emas_multi_tf {where}", [symbol]))
    copy = refreshed.broken(tmp_path / "data", *statements)
    result = copy.gate("emas")
    found = failure(result, "emas.emas_multi_tf.coverage: ema_rows == expected_ema_rows")
    with copy.connect() as con:
        (timeframes,) = con.execute(
            "select count(distinct tf) from main.bars_multi_tf where symbol = ?", [symbol]
        ).fetchone()
    assert found.unexpected_count == timeframes
    assert {row["symbol"] for row in found.sample_rows} == {symbol}


def test_a_missing_day_in_a_touched_bar_family_fails_the_coverage(refreshed, tmp_path):
    symbol, day = "BBBUSDT", START + timedelta(days=10)
    copy = refreshed.broken(
        tmp_path / "data",
        (
            "delete from main.bars_multi_tf where symbol = ? and bar_date = ? and tf = '7d'",
            [symbol, day],
        ),
    )
    result = copy.gate("bar_families")
    found = failure(result, "bar_families.bars_multi_tf.coverage: row_count == daily_bar_rows")
    assert found.unexpected_count == 1
    assert [(r["symbol"], r["tf"]) for r in found.sample_rows] == [(symbol, "7d")]


def test_a_symbol_missing_on_the_latest_date_fails_on_a_slice(refreshed, tmp_path):
    copy = refreshed.broken(
        tmp_path / "data",
        ("delete from main.bars_1d where symbol = ? and bar_date = ?", ["DDDUSDT", NEW_DAY]),
    )
    found = failure(copy.gate("bars"), "bars.bars_1d.latest_date: is_on_latest_date in {True}")
    assert found.sample_rows == ({"symbol": "DDDUSDT", "is_on_latest_date": False},)
