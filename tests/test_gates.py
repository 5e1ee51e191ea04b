"""Great Expectations gates on real DuckDB warehouses.

A clean warehouse (the synthetic tiny preset, built by `orchestrate.py daily-refresh --bars
--returns`, plus emas_1d and features_matrix) passes every layer. A copy with rows broken one per
kind fails, each gate naming the expectation and the broken row's key; the copy is unchanged by
the failing gates. Reading in chunks smaller than a table covers every row once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from expectations import frames
from expectations.chunks import iter_frames
from expectations.gates import (
    FailedExpectation,
    GateResult,
    GateSession,
    GateSettings,
    PendingGate,
    Slice,
    run_gate,
)
from expectations.suites import LAYER_ORDER, LAYERS
from expectations.tables import Query, Scope, Symbols, Table, scoped_rows
from expectations.worker import GateWorker, GateWorkerError
from expectations.workspace import build_suite
from quantwarehouse.dbt import DbtRunError, run_dbt
from tests.conftest import run_cli

# Built besides bars and returns; the other EMA marts stay unbuilt (their suites must skip).
EXTRA_MODELS = ("emas_1d", "features_matrix")
TEST_INVOCATION = "gate-test-invocation"
STALE_CUT_DAYS = 10  # the stale symbol loses its bars of the last 10 days


@dataclass
class Space:
    data_dir: Path
    unbuilt: str | None = None  # why EXTRA_MODELS could not be built (other engineers' work)

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def env(self) -> dict[str, str]:
        return {"QWH_DATA_DIR": str(self.data_dir), "QWH_WAREHOUSE": str(self.warehouse)}

    def connect(self, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.warehouse), read_only=read_only)

    def gates(self, run: str, layers: tuple[str, ...] = LAYER_ORDER) -> dict[str, GateResult]:
        with self.connect() as con:
            return {
                layer: run_gate(con, layer, run_dir=self.data_dir / "runs" / run)
                for layer in layers
            }

    def needs_extra_models(self) -> None:
        if self.unbuilt:
            pytest.skip(f"{', '.join(EXTRA_MODELS)} could not be built: {self.unbuilt}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table_counts(space: Space) -> dict[str, int]:
    with space.connect() as con:
        names = con.execute(
            "select schema_name || '.' || table_name from duckdb_tables() order by all"
        ).fetchall()
        return {n: con.execute(f"select count(*) from {n}").fetchone()[0] for (n,) in names}


def failure(result: GateResult, name: str) -> FailedExpectation:
    found = [f for f in result.failures if f.name == name]
    assert found, f"{name!r} not among the failures: {result.failed_expectations}"
    return found[0]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, dbt_workdir: Path) -> Space:
    space = Space(tmp_path_factory.mktemp("gates") / "data")
    space.data_dir.mkdir()
    for args in (
        ("ingest", "--source", "synthetic", "--preset", "tiny", "--quiet"),
        ("daily-refresh", "--bars", "--returns", "--quiet"),
    ):
        run_cli(*args, env=space.env, check=True)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in space.env.items():
            patch.setenv(name, value)
        try:
            run_dbt(["run", "--select", *EXTRA_MODELS])
        except DbtRunError as exc:
            space.unbuilt = str(exc)
    return space


@pytest.fixture(scope="module")
def clean_results(clean: Space) -> dict[str, GateResult]:
    return clean.gates("clean")


@dataclass
class Broken:
    """A copy of the clean warehouse with one broken row per kind, and its gates' results."""

    space: Space
    latest: date
    symbols: dict[str, str]
    days: dict[str, date]
    stale_days_behind: int
    results: dict[str, GateResult] = field(default_factory=dict)
    digest_before: str = ""
    counts_before: dict[str, int] = field(default_factory=dict)


def nth_bar_date(con: duckdb.DuckDBPyConnection, symbol: str, n: int) -> date:
    return con.execute(
        "select bar_date from main.bars_1d where symbol = ? order by bar_date limit 1 offset ?",
        [symbol, n],
    ).fetchone()[0]


def choose_rows(con: duckdb.DuckDBPyConnection, space: Space) -> Broken:
    """Six symbols on the latest date, each with a role, and each one's 31st bar date."""
    latest, previous = (
        d for (d,) in con.execute(
            "select distinct bar_date from main.bars_1d order by bar_date desc limit 2"
        ).fetchall()
    )  # fmt: skip
    on_latest = [
        s
        for (s,) in con.execute(
            "select symbol from main.bars_1d where bar_date = ? order by symbol", [latest]
        ).fetchall()
    ]
    roles = ("duplicate", "spike", "negative", "vanished", "stale", "untouched")
    assert len(on_latest) >= len(roles), on_latest
    symbols = dict(zip(roles, on_latest, strict=False))
    days = {role: nth_bar_date(con, symbols[role], 30) for role in roles}
    on_previous = con.execute(
        "select count(*) from main.bars_1d where symbol = ? and bar_date = ?",
        [symbols["vanished"], previous],
    ).fetchone()[0]
    assert on_previous == 1
    stale_dates = con.execute(
        "select bar_date from main.bars_1d where symbol = ?", [symbols["stale"]]
    ).fetchall()
    last_kept = max(d for (d,) in stale_dates if d <= latest - timedelta(days=STALE_CUT_DAYS))
    return Broken(space, latest, symbols, days, (latest - last_kept).days)


def breakages(rows: Broken) -> list[tuple[str, list[object]]]:
    """One broken row (or symbol) per kind, as SQL statements with their parameters."""
    where = "where symbol = ? and bar_date = ?"

    def key(role: str) -> list[object]:
        return [rows.symbols[role], rows.days[role]]

    statements = [
        (f"insert into main.bars_1d select * from main.bars_1d {where}", key("duplicate")),
        (f"update main.bars_1d set high = low / 2 {where}", key("spike")),
        (f"update main.bars_1d set volume = -1 {where}", key("negative")),
        (f"delete from main.bars_1d {where}", [rows.symbols["vanished"], rows.latest]),
        (
            "delete from main.bars_1d where symbol = ? and bar_date > ?",
            [rows.symbols["stale"], rows.latest - timedelta(days=STALE_CUT_DAYS)],
        ),
        (f"update main.returns_daily set simple_return = 7.0 {where}", key("spike")),
        (
            f"insert into main.returns_daily select * from main.returns_daily {where}",
            key("negative"),
        ),
        (
            "update main.returns_daily set invocation_id = ? where symbol = ? and bar_date >= ?",
            [TEST_INVOCATION, *key("spike")],
        ),
        (
            "insert into raw.klines select * from raw.klines "
            "where symbol = ? and cast(open_time as date) = ?",
            key("untouched"),
        ),
    ]
    if rows.space.unbuilt is None:
        statements += [
            (f"update main.features_matrix set rating_all = 1.5 {where}", key("duplicate")),
            (
                f"update main.emas_1d set ema = -1 {where} "
                "and period = (select min(period) from main.emas_1d)",
                key("negative"),
            ),
        ]
    return statements


@pytest.fixture(scope="module")
def broken(clean: Space, tmp_path_factory: pytest.TempPathFactory) -> Broken:
    # The file keeps its name: dbt's views refer to the catalog named after it.
    copy = Space(tmp_path_factory.mktemp("broken") / "data", unbuilt=clean.unbuilt)
    copy.data_dir.mkdir()
    shutil.copy(clean.warehouse, copy.warehouse)
    with copy.connect(read_only=False) as con:
        state = choose_rows(con, copy)
        for sql, params in breakages(state):
            con.execute(sql, params)
    state.digest_before = digest(copy.warehouse)
    state.counts_before = table_counts(copy)
    state.results = copy.gates("broken")
    return state


# -- a clean warehouse passes ---------------------------------------------------------------------


def test_a_clean_warehouse_passes_every_gate(clean, clean_results):
    assert list(clean_results) == list(LAYER_ORDER)
    for layer, result in clean_results.items():
        assert result.passed, "\n".join(result.lines())
        assert result.failures == ()
        if layer not in ("emas", "features") or clean.unbuilt is None:
            assert result.evaluated > 0, layer
    with clean.connect() as con:
        daily_rows = con.execute("select count(*) from main.bars_1d").fetchone()[0]
    bars_1d = next(s for s in clean_results["bars"].suites if s.suite == "bars.bars_1d")
    assert (bars_1d.status, bars_1d.rows, bars_1d.chunks) == ("passed", daily_rows, 1)


def test_unbuilt_tables_are_skipped_and_say_so(clean, clean_results):
    clean.needs_extra_models()
    emas = clean_results["emas"]
    by_suite = {s.suite: s for s in emas.suites}
    assert by_suite["emas.emas_1d"].status == "passed"
    assert by_suite["emas.emas_multi_tf"].status == "skipped"
    assert (
        by_suite["emas.emas_multi_tf"].reason == "main.emas_multi_tf does not exist yet (not built)"
    )
    assert emas.passed
    assert "skipped emas.emas_multi_tf: main.emas_multi_tf does not exist yet" in "\n".join(
        emas.lines()
    )


def test_freshness_leaves_delisted_symbols_out(clean, clean_results):
    with clean.connect() as con:
        listed = con.execute(
            "select count(distinct symbol) from main.stg_symbols "
            "where status = 'TRADING' and delisted_at is null"
        ).fetchone()[0]
        # The tiny preset delists a symbol long before the newest bar: it would be stale.
        delisted_behind = con.execute(
            "select max(b.bar_date) - min(d.last) from main.bars_1d as b, ("
            "  select symbol, max(bar_date) as last from main.bars_1d group by symbol) as d "
            "where d.symbol in (select symbol from main.stg_symbols where delisted_at is not null)"
        ).fetchone()[0]
    assert delisted_behind > GateSettings().max_days_behind
    fresh = next(s for s in clean_results["bars"].suites if s.suite == "bars.bars_1d.freshness")
    assert (fresh.status, fresh.rows) == ("passed", listed)


def test_the_html_report_lists_every_validated_suite(clean, clean_results):
    docs = clean.data_dir / "runs" / "clean" / "data_docs"
    assert all(r.data_docs == docs / "index.html" for r in clean_results.values())
    index = (docs / "index.html").read_text()
    validated = [s.suite for r in clean_results.values() for s in r.suites if s.status != "skipped"]
    for suite in validated:
        page = docs / "validations" / Path(*suite.split("."))
        assert list(page.rglob("*.html")), suite
        assert f"validations/{'/'.join(suite.split('.'))}/" in index, suite


# -- broken rows fail their gate, naming the expectation and the row -------------------------------


def test_a_duplicate_key_fails_naming_the_key(broken):
    found = failure(broken.results["bars"], "bars.bars_1d: unique (symbol, bar_date)")
    key = {"symbol": broken.symbols["duplicate"], "bar_date": broken.days["duplicate"]}
    assert found.unexpected_count == 2
    assert list(found.sample_rows) == [key, key]
    calendar = failure(broken.results["bars"], "bars.bars_1d.calendar: row_count == source_days")
    assert broken.symbols["duplicate"] in {row["symbol"] for row in calendar.sample_rows}


def test_high_below_low_fails_naming_the_row(broken):
    found = failure(broken.results["bars"], "bars.bars_1d: high >= low")
    assert found.unexpected_count == 1
    (row,) = found.sample_rows
    assert (row["symbol"], row["bar_date"]) == (broken.symbols["spike"], broken.days["spike"])
    assert row["high"] == pytest.approx(row["low"] / 2)


def test_negative_volume_fails_naming_the_row(broken):
    found = failure(broken.results["bars"], "bars.bars_1d: volume >= 0")
    assert found.unexpected_count == 1
    assert found.sample_rows == (
        {"symbol": broken.symbols["negative"], "bar_date": broken.days["negative"], "volume": -1.0},
    )


def test_a_vanished_symbol_fails_the_latest_date_gate(broken):
    name = "bars.bars_1d.latest_date: is_on_latest_date in {True}"
    found = failure(broken.results["bars"], name)
    assert found.unexpected_count == 1
    assert found.sample_rows == (
        {"symbol": broken.symbols["vanished"], "is_on_latest_date": False},
    )


def test_a_stale_symbol_fails_the_freshness_gate(broken):
    found = failure(broken.results["bars"], "bars.bars_1d.freshness: days_behind in [0, 2]")
    assert found.unexpected_count == 1
    assert found.sample_rows == (
        {"symbol": broken.symbols["stale"], "days_behind": broken.stale_days_behind},
    )


def test_a_return_out_of_bounds_fails_naming_the_row(broken):
    name = "returns.returns_daily: simple_return in (-1.0, 5.0)"
    found = failure(broken.results["returns"], name)
    assert found.unexpected_count == 1
    assert found.sample_rows == (
        {"symbol": broken.symbols["spike"], "bar_date": broken.days["spike"], "simple_return": 7.0},
    )


def test_a_rating_out_of_range_fails_naming_the_row(broken):
    broken.space.needs_extra_models()
    found = failure(broken.results["features"], "features.features_matrix: rating_all in [-1, 1]")
    assert found.unexpected_count == 1
    row = {"symbol": broken.symbols["duplicate"], "bar_date": broken.days["duplicate"]}
    assert found.sample_rows == ({**row, "rating_all": 1.5},)


def test_a_negative_ema_fails_the_row_and_the_range_check(broken):
    broken.space.needs_extra_models()
    found = failure(broken.results["emas"], "emas.emas_1d: ema > 0")
    (row,) = found.sample_rows
    assert (row["symbol"], row["bar_date"], row["ema"]) == (
        broken.symbols["negative"],
        broken.days["negative"],
        -1.0,
    )
    ranged = failure(broken.results["emas"], "emas.emas_1d.coverage: lowest_ema >= close_floor")
    assert [r["symbol"] for r in ranged.sample_rows] == [broken.symbols["negative"]]


def test_a_duplicated_raw_revision_fails_the_raw_gate(broken):
    raw = broken.results["raw"]
    found = failure(raw, "raw.klines: unique (symbol, interval, open_time, revision)")
    assert found.unexpected_count == 2
    assert {row["symbol"] for row in found.sample_rows} == {broken.symbols["untouched"]}
    numbering = failure(raw, "raw.klines.revisions: revision_count == last_revision")
    assert numbering.sample_rows[0]["symbol"] == broken.symbols["untouched"]
    assert (
        numbering.sample_rows[0]["revision_count"],
        numbering.sample_rows[0]["last_revision"],
    ) == (
        2,
        1,
    )
    assert broken.results["staging"].passed  # staging keeps one row per key whatever raw holds


def test_failing_gates_change_nothing(broken):
    assert not any(r.passed for layer, r in broken.results.items() if layer in ("raw", "bars"))
    assert digest(broken.space.warehouse) == broken.digest_before
    assert table_counts(broken.space) == broken.counts_before


def test_the_summary_and_the_html_report_name_the_failing_row(broken):
    lines = "\n".join(broken.results["bars"].lines())
    symbol, day = broken.symbols["negative"], broken.days["negative"]
    assert "gate bars: FAILED" in lines
    assert "FAILED volume >= 0 (expect_column_values_to_be_between): 1 of " in lines
    assert f"e.g. symbol={symbol} bar_date={day} volume=-1.0" in lines
    pages = list((broken.space.data_dir / "runs" / "broken" / "data_docs").glob(
        "validations/bars/bars_1d/broken/*/*.html"
    ))  # fmt: skip
    assert len(pages) == 1
    assert symbol in pages[0].read_text() and str(day) in pages[0].read_text()


# -- chunks and slices ----------------------------------------------------------------------------


def test_chunks_cover_every_row_and_never_split_a_key(con):
    days_a = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-03", "2024-01-03", "2024-01-04"]
    days_b = ["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03", "2024-01-04"]
    rows = pd.DataFrame(
        {
            "symbol": ["A"] * len(days_a) + ["B"] * len(days_b),
            "bar_date": pd.to_datetime([*days_a, *days_b]).date,
            "value": range(11),
        }
    )
    con.execute("create table t as select * from rows")
    frames = list(iter_frames(con, Query("select * from t"), ("symbol", "bar_date"), 3))
    assert len(frames) > 1
    combined = pd.concat(frames, ignore_index=True)
    expected = rows.sort_values(["symbol", "bar_date"], kind="stable").reset_index(drop=True)
    assert sorted(combined["value"]) == list(range(11))
    assert list(zip(combined["symbol"], combined["bar_date"], strict=True)) == list(
        zip(expected["symbol"], expected["bar_date"], strict=True)
    )
    for key, group in rows.groupby(["symbol", "bar_date"]):
        holding = [i for i, f in enumerate(frames) if (f["value"].isin(group["value"])).any()]
        assert len(holding) == 1, key
    # The three rows of (A, 2024-01-03) straddle the 3-row boundary: one chunk holds them all.
    assert all(len(f) <= 3 + 2 for f in frames)
    empty = list(iter_frames(con, Query("select * from t where false"), ("symbol",), 3))
    assert len(empty) == 1 and empty[0].empty and list(empty[0].columns) == list(rows.columns)


def test_chunks_widen_narrow_integers_for_great_expectations(con):
    con.execute(
        "create table t as select 1::tinyint as a, 2::integer as b, 3::bigint as c, "
        "4::integer as d union all select 5, 6, 7, null"
    )
    (frame,) = iter_frames(con, Query("select * from t"), ("a",), 10)
    assert [str(t) for t in frame.dtypes] == ["int64", "int64", "int64", "float64"]
    assert frame["b"].tolist() == [2, 6]


def test_calendar_source_days_count_each_day_once_whatever_its_klines():
    """A day with a daily kline, intraday klines or both is one source day, revised or not."""
    con = duckdb.connect()
    con.execute(
        """
        create schema raw;
        create table raw.klines as select * from (values
            ('A', '1d', timestamp '2024-01-01', 1), ('A', '1d', timestamp '2024-01-02', 1),
            ('A', '1d', timestamp '2024-01-02', 2), ('A', '1d', timestamp '2024-01-03', 1),
            ('A', '12h', timestamp '2024-01-03 12:00', 1), ('A', '12h', timestamp '2024-01-04', 1),
            ('A', '12h', timestamp '2024-01-04 12:00', 1), ('A', '12h', timestamp '2024-01-04', 2),
            ('B', '1h', timestamp '2024-01-05 01:00', 1),
            ('B', '1h', timestamp '2024-01-05 02:00', 1), ('C', '1w', timestamp '2024-01-01', 1)
        ) as v(symbol, interval, open_time, revision);
        create table main.bars_1d as select * from (values
            ('A', date '2024-01-01'), ('A', date '2024-01-02'), ('A', date '2024-01-04')
        ) as v(symbol, bar_date);
        """
    )
    query = frames.daily_bars_calendar(Scope(Query("select 1"), Symbols()))
    found = con.execute(
        f"select symbol, row_count, calendar_days, source_days from ({query.sql}) order by 1",
        query.params,
    ).fetchall()
    assert found == [("A", 3, 4, 4), ("B", 0, 0, 1)]


def test_a_gate_in_small_chunks_finds_the_same_rows(broken):
    space = broken.space
    symbol, day = broken.symbols["negative"], broken.days["negative"]
    with space.connect() as con:
        total = con.execute("select count(*) from main.returns_daily").fetchone()[0]
        ordered = con.execute(
            "select symbol, bar_date from main.returns_daily order by symbol, bar_date"
        ).fetchall()
        # Chunks end right between the two rows of the duplicated key, were keys not kept whole.
        chunk_rows = ordered.index((symbol, day)) + 1
        result = run_gate(
            con,
            "returns",
            run_dir=space.data_dir / "runs" / "chunked",
            settings=GateSettings(chunk_rows=chunk_rows),
        )
    rows_suite = next(s for s in result.suites if s.suite == "returns.returns_daily")
    assert rows_suite.chunks > 1
    assert rows_suite.rows == total
    duplicate = failure(result, "returns.returns_daily: unique (symbol, bar_date)")
    assert duplicate.unexpected_count == 2
    assert duplicate.element_count == total
    assert duplicate.sample_rows == ({"symbol": symbol, "bar_date": day},) * 2
    whole = broken.results["returns"]
    assert {f.name: f.unexpected_count for f in result.failures} == {
        f.name: f.unexpected_count for f in whole.failures
    }


def test_a_worker_sent_every_suite_at_once_finds_what_the_gate_process_finds(broken):
    space = broken.space
    run_dir = space.data_dir / "runs" / "worker"
    worker = GateWorker(run_dir)
    try:
        session = GateSession(run_dir, validator=worker)
        with space.connect() as con:  # every suite is sent before any outcome is waited for
            pending = {layer: session.start(con, layer) for layer in LAYER_ORDER}
        session.build_docs()
        results = {layer: gate.result() for layer, gate in pending.items()}
    finally:
        worker.close()
    for layer, result in results.items():
        in_process = broken.results[layer]
        assert result.suites == in_process.suites, layer
    assert any(not r.passed for r in results.values())
    report = (run_dir / "data_docs" / "index.html").read_text()
    assert "bars.bars_1d" in report


def test_a_busy_worker_does_not_hold_up_the_gate_sending_it_suites(clean, clean_results, tmp_path):
    """The worker takes a suite's frames off the pipe only when done with the suite before; the
    gate must not wait on that. A paused worker stands for a busy one: the gate's suites (whole
    tables, more than a pipe holds) are all handed over at once, and validated once it resumes."""
    layers = ("bars", "bar_families", "returns")
    worker = GateWorker(tmp_path / "run")
    os.kill(worker.pid, signal.SIGSTOP)
    session = GateSession(tmp_path / "run", validator=worker)
    pending: list[PendingGate] = []

    def start_gates() -> None:
        with clean.connect() as con:
            pending.extend(session.start(con, layer) for layer in layers)

    sender = threading.Thread(target=start_gates)
    sender.start()
    sender.join(timeout=60)
    handed_over = not sender.is_alive()
    os.kill(worker.pid, signal.SIGCONT)
    sender.join()
    try:
        assert handed_over, "the gate waited for the paused worker"
        for layer, gate in zip(layers, pending, strict=True):
            assert gate.result().suites == clean_results[layer].suites, layer
    finally:
        worker.close()


def test_a_stopped_worker_fails_the_gate_naming_its_log(clean, tmp_path):
    worker = GateWorker(tmp_path / "run")
    os.kill(worker.pid, signal.SIGKILL)
    session = GateSession(tmp_path / "run", validator=worker)
    with clean.connect() as con, pytest.raises(GateWorkerError, match=r"stopped.*gate_worker.log"):
        session.run(con, "returns")
    worker.close()  # nothing left to wait for: it closes quietly


def test_a_slice_by_symbols_validates_only_those_symbols(broken):
    space = broken.space
    with space.connect() as con:
        untouched = run_gate(
            con,
            "returns",
            slice=Slice(symbols=(broken.symbols["untouched"],)),
            run_dir=space.data_dir / "runs" / "slice-untouched",
        )
        count = con.execute(
            "select count(*) from main.returns_daily where symbol = ?",
            [broken.symbols["untouched"]],
        ).fetchone()[0]
    assert untouched.passed, "\n".join(untouched.lines())
    assert [s.rows for s in untouched.suites] == [count, 1]
    assert "slice: symbols " + broken.symbols["untouched"] in untouched.lines()[0]


def test_a_slice_by_invocation_reads_the_changed_range_of_each_symbol(broken):
    space = broken.space
    with space.connect() as con:
        result = run_gate(
            con,
            "returns",
            slice=Slice(invocation_id=TEST_INVOCATION),
            run_dir=space.data_dir / "runs" / "slice-invocation",
        )
        frame = con.execute("select symbol, bar_date, invocation_id from main.returns_daily").df()
    changed = frame[frame["invocation_id"] == TEST_INVOCATION]
    assert set(changed["symbol"]) == {broken.symbols["spike"]}
    since = pd.Timestamp(broken.days["spike"])
    expected_rows = int(
        ((frame["symbol"] == broken.symbols["spike"]) & (frame["bar_date"] >= since)).sum()
    )
    rows_suite, calendar = result.suites
    assert rows_suite.rows == expected_rows
    assert calendar.rows == 1  # per-symbol checks cover the slice's symbols whole
    found = failure(result, "returns.returns_daily: simple_return in (-1.0, 5.0)")
    assert found.sample_rows[0]["symbol"] == broken.symbols["spike"]


def test_slices_widen_to_every_row_after_a_symbols_first_change(con):
    con.execute(
        """
        create table m as select * from (values
            ('A', date '2024-01-01', 'old', 1), ('A', date '2024-01-02', 'old', 1),
            ('A', date '2024-01-03', 'new', 2), ('A', date '2024-01-03', 'old', 1),
            ('A', date '2024-01-04', 'new', 2), ('B', date '2024-01-01', 'old', 1),
            ('C', date '2024-01-05', 'new', 3)
        ) as v(symbol, bar_date, invocation_id, source_batch_id)
        """
    )
    table = Table("main.m", ("symbol", "bar_date"), "bar_date", "source_batch_id")

    def picked(slice_: Slice) -> list[tuple]:
        query = scoped_rows(table, slice_)
        rows = con.execute(f"select symbol, bar_date, invocation_id from ({query.sql}) as r "
                           "order by all", query.params).fetchall()  # fmt: skip
        return [(s, d.isoformat(), i) for s, d, i in rows]

    changed_a = [("A", "2024-01-03", "new"), ("A", "2024-01-03", "old"), ("A", "2024-01-04", "new")]
    assert picked(Slice(invocation_id="new")) == [*changed_a, ("C", "2024-01-05", "new")]
    assert picked(Slice(min_batch_id=2)) == [*changed_a, ("C", "2024-01-05", "new")]
    assert picked(Slice(min_batch_id=3)) == [("C", "2024-01-05", "new")]
    assert picked(Slice(invocation_id="new", symbols=("A",))) == changed_a
    assert picked(Slice(since=date(2024, 1, 4))) == [
        ("A", "2024-01-04", "new"),
        ("C", "2024-01-05", "new"),
    ]
    assert picked(Slice(symbols=("B",))) == [("B", "2024-01-01", "old")]


def test_a_missing_column_fails_naming_it_and_a_missing_upstream_skips(con, tmp_path):
    con.execute(
        """
        create table main.returns_daily as select * from (values
            ('AAA', date '2024-01-01', null, 10.0, null, null, null, false, true, true, 1, 'i'),
            ('AAA', date '2024-01-02', date '2024-01-01', 11.0, 10.0, 0.1, 1, false, false, true,
             1, 'i')
        ) as v(symbol, bar_date, prev_bar_date, close, prev_close, simple_return, days_spanned,
               spans_missing_days, is_first_bar, is_complete_day, source_batch_id, invocation_id)
        """
    )
    result = run_gate(con, "returns", run_dir=tmp_path / "run")
    rows_suite, calendar = result.suites
    assert not result.passed
    assert [f.check for f in rows_suite.failures] == ["documented columns present"]
    assert rows_suite.failures[0].detail == "missing columns: log_return"
    assert rows_suite.rows == 2
    assert (calendar.status, calendar.reason) == (
        "skipped",
        "main.bars_1d does not exist yet (not built)",
    )
    assert "FAILED documented columns present (expect_table_columns_to_match_set): " in (
        "\n".join(result.lines())
    )


def test_a_slice_that_does_not_apply_is_refused_before_validating(clean, tmp_path):
    with clean.connect() as con, pytest.raises(ValueError) as raised:
        run_gate(con, "raw", slice=Slice(invocation_id="x"), run_dir=tmp_path / "run")
    assert "raw.klines is not written by dbt" in str(raised.value)
    assert not (tmp_path / "run").exists()
    with clean.connect() as con, pytest.raises(ValueError, match="unknown layer 'marts'"):
        run_gate(con, "marts", run_dir=tmp_path / "run")


# -- the command line -----------------------------------------------------------------------------


def test_validate_command_exit_status_and_summary(clean, broken):
    ok = run_cli("validate", "--layers", "returns", "--run-id", "cli-clean", env=clean.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "gate returns: passed" in ok.stdout
    assert "validate cli-clean: passed" in ok.stdout
    assert (clean.data_dir / "runs" / "cli-clean" / "data_docs" / "index.html").is_file()

    before = digest(broken.space.warehouse)
    bad = run_cli("validate", "--layers", "returns", "--quiet", env=broken.space.env)
    assert bad.returncode == 1
    symbol, day = broken.symbols["spike"], broken.days["spike"]
    assert "FAILED simple_return in (-1.0, 5.0)" in bad.stdout
    assert f"e.g. symbol={symbol} bar_date={day} simple_return=7.0" in bad.stdout
    failed = len(broken.results["returns"].failures)
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: {failed} expectations failed in layers returns (see above)"
    )
    assert digest(broken.space.warehouse) == before


def test_validate_command_refuses_an_unknown_layer(clean):
    result = run_cli("validate", "--layers", "bars,nope", env=clean.env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --layers: unknown layer nope; expected some of "
        "raw, staging, bars, bar_families, returns, emas, features"
    )


def test_real_sample_passes_the_raw_gate(real_sample, data_dir, tmp_path):
    run_cli("ingest", "--source", "files", "--path", str(real_sample), "--quiet", check=True)
    rows_in_files = sum(len(pd.read_csv(path)) for path in real_sample.glob("*.csv"))
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        result = run_gate(con, "raw", run_dir=tmp_path / "run")
    assert result.passed, "\n".join(result.lines())
    assert result.suites[0].rows == rows_in_files


def test_every_suite_builds_as_a_great_expectations_suite():
    """Suites of tables not built yet are checked too: a bad argument fails here, not later."""
    names = [spec.name for specs in LAYERS.values() for spec in specs]
    assert len(names) == len(set(names))
    for specs in LAYERS.values():
        for spec in specs:
            suite = build_suite(spec)
            assert [e.meta["check"] for e in suite.expectations] == [c.name for c in spec.checks]
