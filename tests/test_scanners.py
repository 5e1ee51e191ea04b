"""Scanners: config validation, fields and selection on a hand-built warehouse, outputs, CLI."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from ingest.scanners.config import SCANNERS_DIR, load_scanner, load_scanners
from ingest.scanners.fields import scanner_fields
from ingest.scanners.run import run_scan, select_candidates
from quantwarehouse.config import ConfigError
from tests.conftest import run_cli

AS_OF = date(2024, 3, 10)
WINDOW = 4


@dataclass(frozen=True)
class Series:
    """One symbol's daily bars ending on `end`, and its `dim_symbols` row.

    Without an exchange the row holds no metadata, as `dim_symbols` keeps symbols with bars only.
    """

    closes: list[float]
    quote_volume: float | None = None
    volume: float = 10_000.0
    end: date = AS_OF
    exchange: str | None = "binance"
    quote: str = "USDT"
    listed_at: date | None = None
    delisted_at: date | None = None

    def dates(self) -> list[date]:
        return [
            self.end - timedelta(days=len(self.closes) - 1 - i) for i in range(len(self.closes))
        ]


def alternating(low: float, high: float, count: int) -> list[float]:
    return [low if i % 2 == 0 else high for i in range(count)]


UNIVERSE = {
    # +-10 % every day, 2M traded a day: volatility ln(1.1) * sqrt(4/3) * sqrt(365) = 2.10
    "AAAUSDT": Series(alternating(100, 110, 20), quote_volume=2_000_000),
    # +-2 %, no quote volume: 10,000 x close stands in (505,000 a day over the window)
    "BBBUSDT": Series(alternating(50, 51, 20)),
    # listed three days before the as-of date, 3M a day, +-5 %
    "CCCUSDT": Series(
        alternating(10, 10.5, 4), quote_volume=3_000_000, listed_at=AS_OF - timedelta(days=3)
    ),
    "DDDBTC": Series(alternating(1, 1.2, 20), quote_volume=100, quote="BTC"),
    "EEEUSDT": Series(
        alternating(100, 110, 20), quote_volume=9e9, delisted_at=AS_OF - timedelta(days=5)
    ),
    "FFFUSDT": Series(alternating(100, 110, 20), quote_volume=9e9, exchange=None),
    "GGGUSDT": Series(alternating(100, 110, 20), quote_volume=9e9, exchange="kraken"),
}


def build_warehouse(path: Path, universe: dict[str, Series], *, until: date = AS_OF) -> None:
    """`main.bars_1d` and `main.dim_symbols` as the dbt models define them (bars up to `until`)."""
    con = duckdb.connect(str(path))
    con.execute(
        "create table main.bars_1d (symbol varchar, bar_date date, open_time timestamp, "
        "open double, high double, low double, close double, volume double, quote_volume double)"
    )
    con.execute(
        "create table main.dim_symbols (symbol varchar, exchange varchar, status varchar, "
        "base_asset varchar, quote_asset varchar, tick_size double, step_size double, "
        "min_qty double, listed_at timestamp, delisted_at timestamp)"
    )
    bars = [
        (symbol, day, day, c, c, c, c, s.volume, s.quote_volume)
        for symbol, s in universe.items()
        for day, c in zip(s.dates(), s.closes, strict=True)
        if day <= until
    ]
    symbols = [metadata_row(symbol, s) for symbol, s in universe.items()]
    insert_rows(con, "main.bars_1d", bars)
    insert_rows(con, "main.dim_symbols", symbols)
    con.close()


def metadata_row(symbol: str, s: Series) -> tuple:
    if s.exchange is None:
        return (symbol, *[None] * 9)
    base = symbol.removesuffix(s.quote)
    return (
        symbol,
        s.exchange,
        "TRADING",
        base,
        s.quote,
        0.01,
        0.01,
        0.01,
        s.listed_at,
        s.delisted_at,
    )


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    values = ", ".join("(" + ", ".join("?" for _ in rows[0]) + ")" for _ in rows)
    con.execute(f"insert into {table} values {values}", [v for row in rows for v in row])


def add_features(path: Path, rows: list[tuple[str, date, float]]) -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "create table main.features_matrix (symbol varchar, bar_date date, rating_all double, "
        "rating_ma double, rating_osc double)"
    )
    insert_rows(
        con,
        "main.features_matrix",
        [(symbol, day, value, value, 0.0) for symbol, day, value in rows],
    )
    con.close()


def expected_fields(series: Series, as_of: date) -> dict[str, float]:
    """The fields by the definitions, with the standard library (an independent route)."""
    kept = [(d, c) for d, c in zip(series.dates(), series.closes, strict=True) if d <= as_of]
    window_start = as_of - timedelta(days=WINDOW)
    in_window = [i for i, (d, _) in enumerate(kept) if d > window_start]
    returns = [math.log(kept[i][1] / kept[i - 1][1]) for i in in_window if i > 0]
    traded = [
        series.quote_volume if series.quote_volume is not None else series.volume * kept[i][1]
        for i in in_window
    ]
    listed = series.listed_at or kept[0][0]
    return {
        "close": kept[-1][1],
        "traded_value": sum(traded) / WINDOW,
        # a sample stdev needs two returns
        "volatility": statistics.stdev(returns) * math.sqrt(365) if len(returns) > 1 else math.nan,
        "listing_age_days": (as_of - listed).days,
        "days_since_last_bar": (as_of - kept[-1][0]).days,
    }


def scanner_file(folder: Path, name: str = "test_scan", **sections: str) -> Path:
    """A scanner config; each keyword replaces one top-level section (YAML text)."""
    parts = {
        "intent": "DISCOVERY",
        "universe": f"{{exchange: binance, quote_assets: [USDT], window_days: {WINDOW}}}",
        "sort": "{field: traded_value, direction: desc}",
        **sections,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in parts.items() if value))
    return path


@pytest.fixture
def wh(warehouse: Path) -> Path:
    """The hand-built warehouse where the CLI finds it, for tests that write to it."""
    build_warehouse(warehouse, UNIVERSE)
    return warehouse


@pytest.fixture(scope="module")
def read_wh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same warehouse, built once, for tests that only read it."""
    path = tmp_path_factory.mktemp("scanners") / "warehouse.duckdb"
    build_warehouse(path, UNIVERSE)
    return path


def fields_of(path: Path, scanner_path: Path, as_of: date = AS_OF):
    with duckdb.connect(str(path)) as con:
        return scanner_fields(con, load_scanner(scanner_path), as_of)


# -- fields and selection ------------------------------------------------------------------------


def test_fields_follow_their_definitions(read_wh, tmp_path):
    frame = fields_of(read_wh, scanner_file(tmp_path))
    # DDDBTC: other quote; EEEUSDT: delisted before; FFFUSDT: no metadata; GGGUSDT: kraken.
    assert frame["symbol"].tolist() == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    for row in frame.to_dict("records"):
        expected = expected_fields(UNIVERSE[row["symbol"]], AS_OF)
        for field, value in expected.items():
            assert row[field] == pytest.approx(value, rel=1e-9), (row["symbol"], field)
    by_symbol = frame.set_index("symbol")
    assert by_symbol.loc["AAAUSDT", "volatility"] == pytest.approx(
        math.log(1.1) * math.sqrt(4 / 3) * math.sqrt(365)
    )
    assert by_symbol.loc["BBBUSDT", "traded_value"] == pytest.approx(505_000)
    assert by_symbol.loc["CCCUSDT", "listing_age_days"] == 3


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({}, ["CCCUSDT", "AAAUSDT", "BBBUSDT"]),
        (
            {
                "universe": "{exchange: Binance, quote_assets: [usdt], min_traded_value: 1e6, "
                "window_days: 4}"
            },
            ["CCCUSDT", "AAAUSDT"],
        ),
        (
            {
                "universe": "{exchange: binance, quote_assets: [USDT], min_listing_age_days: 5, "
                "window_days: 4}"
            },
            ["AAAUSDT", "BBBUSDT"],
        ),
        (
            {
                "universe": "{exchange: binance, quote_assets: [USDT], min_volatility: 0.5, "
                "window_days: 4}",
                "sort": "{field: volatility, direction: asc}",
            },
            ["CCCUSDT", "AAAUSDT"],
        ),
        (
            {
                "filters": "[{field: volatility, op: in_range, value: [0.4, 1.1]}]",
                "sort": "{field: volatility, direction: desc}",
            },
            ["CCCUSDT", "BBBUSDT"],
        ),
        ({"filters": "[{field: traded_value, op: gt, value: 600000}]"}, ["CCCUSDT", "AAAUSDT"]),
        (
            {"filters": "[{field: traded_value, op: gt, value: 600000}]", "limit": "1"},
            ["CCCUSDT"],
        ),
        (
            {
                "filters": "[{field: traded_value, op: gt, value: 400000}, "
                "{field: volatility, op: lt, value: 2}]"
            },
            ["CCCUSDT", "BBBUSDT"],
        ),
        ({"filters": "[{field: listing_age_days, op: eq, value: 3}]"}, ["CCCUSDT"]),
        ({"filters": "[{field: close, op: eq, value: 51}]"}, ["BBBUSDT"]),
        # ties (AAAUSDT and BBBUSDT are both 19 days old) are ordered by symbol
        (
            {"sort": "{field: listing_age_days, direction: desc}"},
            ["AAAUSDT", "BBBUSDT", "CCCUSDT"],
        ),
        ({"sort": "{field: close, direction: asc}"}, ["CCCUSDT", "BBBUSDT", "AAAUSDT"]),
        ({"filters": "[{field: days_since_last_bar, op: gt, value: 0}]"}, []),
    ],
)
def test_universe_filters_sort_and_limit(read_wh, tmp_path, sections, expected):
    path = scanner_file(tmp_path, **sections)
    found = select_candidates(load_scanner(path), fields_of(read_wh, path))
    assert found.frame["symbol"].tolist() == expected
    assert found.frame["rank"].tolist() == list(range(1, len(expected) + 1))


def test_as_of_sees_only_bars_up_to_that_day(read_wh, tmp_path):
    path = scanner_file(tmp_path)
    earlier = AS_OF - timedelta(days=2)
    frame = fields_of(read_wh, path, earlier)
    for row in frame.to_dict("records"):
        expected = expected_fields(UNIVERSE[row["symbol"]], earlier)
        assert {f: row[f] for f in expected} == pytest.approx(expected, rel=1e-9, nan_ok=True)
    ccc = frame.set_index("symbol").loc["CCCUSDT"]
    assert ccc["listing_age_days"] == 1 and math.isnan(ccc["volatility"])  # one return only
    # The same answer from a warehouse that never held the later bars.
    truncated = tmp_path / "truncated.duckdb"
    build_warehouse(truncated, UNIVERSE, until=earlier)
    assert frame.equals(fields_of(truncated, path, earlier))
    # Before CCCUSDT was listed it is in no universe.
    before_listing = fields_of(read_wh, path, AS_OF - timedelta(days=4))
    assert "CCCUSDT" not in before_listing["symbol"].tolist()


# -- runs, outputs and the features matrix -------------------------------------------------------


def run(path: Path, folder: Path, run_id: str, export: Path, as_of: date | None = None):
    with duckdb.connect(str(path)) as con:
        return run_scan(
            con, load_scanners(folder), run_id=run_id, export_folder=export, as_of=as_of
        )


RATING_LONG = {
    "intent": "LONG",
    "filters": "[{field: rating_all, op: gt, value: -0.3}]",
    "sort": "{field: rating_all, direction: desc}",
}
RATING_SHORT = {
    "intent": "SHORT",
    "filters": "[{field: rating_all, op: lt, value: 0}]",
    "sort": "{field: rating_all, direction: asc}",
}


def test_ratings_scanner_fails_clearly_until_features_exist(wh, tmp_path):
    folder = tmp_path / "scanners"
    scanner_file(folder, "liquid")
    scanner_file(folder, "rating_long", **RATING_LONG)
    report = run(wh, folder, "r1", tmp_path / "export")
    outcomes = {o.scanner: o for o in report.outcomes}
    assert outcomes["liquid"].status == "ok" and outcomes["liquid"].candidates == 3
    assert outcomes["rating_long"].status == "failed"
    assert outcomes["rating_long"].reason == (
        "uses rating_all, but the features matrix (main.features_matrix) has not been built "
        "yet: run `orchestrate.py daily-refresh --features` first"
    )
    assert not report.ok
    assert report.lines()[-1].startswith("error: 1 of 2 scanners failed; rating_long: uses")
    assert not (tmp_path / "export" / "r1" / "rating_long.json").exists()


def test_ratings_scanners_read_the_features_on_the_as_of_date(wh, tmp_path):
    add_features(
        wh,
        [
            ("AAAUSDT", AS_OF, 0.5),
            ("BBBUSDT", AS_OF, -0.3),  # not > -0.3, but < 0
            ("CCCUSDT", AS_OF, -0.1),
            ("CCCUSDT", AS_OF - timedelta(days=1), 0.9),  # another day: ignored
        ],
    )
    folder = tmp_path / "scanners"
    scanner_file(folder, "rating_long", **RATING_LONG)
    scanner_file(folder, "rating_short", **RATING_SHORT)
    report = run(wh, folder, "r1", tmp_path / "export")
    assert report.ok
    found = {
        name: [
            c["symbol"]
            for c in json.loads((tmp_path / "export/r1" / f"{name}.json").read_text())["candidates"]
        ]
        for name in ("rating_long", "rating_short")
    }
    assert found == {"rating_long": ["AAAUSDT", "CCCUSDT"], "rating_short": ["BBBUSDT", "CCCUSDT"]}
    later = run(wh, folder, "r2", tmp_path / "export", as_of=AS_OF + timedelta(days=1))
    assert {o.status for o in later.outcomes} == {"failed"}
    assert "main.features_matrix has no rows for 2024-03-11 (latest before it: 2024-03-10)" in (
        later.outcomes[0].reason
    )


def test_outputs_json_and_table_and_reruns_replace(wh, tmp_path):
    folder = tmp_path / "scanners"
    scanner_file(
        folder,
        "liquid",
        filters="[{field: volatility, op: gt, value: 1}]",
        limit="5",
    )
    export = tmp_path / "export"
    report = run(wh, folder, "run-a", export)
    document = json.loads((export / "run-a" / "liquid.json").read_text())
    assert (document["scanner"], document["intent"], document["as_of"], document["run_id"]) == (
        "liquid",
        "DISCOVERY",
        "2024-03-10",
        "run-a",
    )
    assert document["counts"] == {"in_universe": 3, "passed_filters": 2, "candidates": 2}
    assert [c["symbol"] for c in document["candidates"]] == ["CCCUSDT", "AAAUSDT"]
    first = document["candidates"][0]
    assert first["rank"] == 1
    assert list(first["fields"]) == ["close", "traded_value", "volatility", "listing_age_days"]
    expected = expected_fields(UNIVERSE["CCCUSDT"], AS_OF)
    assert first["fields"] == pytest.approx({f: expected[f] for f in first["fields"]})
    assert report.outcomes[0].output == export / "run-a" / "liquid.json"
    assert report.without_metadata == ["FFFUSDT"]
    assert "1 symbols have bars but no exchange metadata in main.dim_symbols" in report.lines()[-1]

    def table() -> list[tuple]:
        with duckdb.connect(str(wh)) as con:
            return con.sql(
                "select run_id, scanner, intent, as_of, rank, symbol, "
                "fields->>'$.traded_value' from scan_candidates order by run_id, rank"
            ).fetchall()

    assert table() == [
        ("run-a", "liquid", "DISCOVERY", AS_OF, 1, "CCCUSDT", "3000000.0"),
        ("run-a", "liquid", "DISCOVERY", AS_OF, 2, "AAAUSDT", "2000000.0"),
    ]
    run(wh, folder, "run-a", export)  # the same run again: replaced, not doubled
    assert len(table()) == 2
    run(wh, folder, "run-b", export)  # another run: appended
    assert [row[0] for row in table()] == ["run-a", "run-a", "run-b", "run-b"]


def test_missing_bars_fail_every_scanner(warehouse, tmp_path):
    duckdb.connect(str(warehouse)).close()
    folder = tmp_path / "scanners"
    scanner_file(folder, "liquid")
    report = run(warehouse, folder, "r1", tmp_path / "export")
    assert report.outcomes[0].status == "failed"
    assert report.outcomes[0].reason.startswith("main.bars_1d does not exist")


# -- config validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"intent": "HOLD"}, "intent: unknown value 'HOLD'; allowed: LONG, SHORT, DISCOVERY"),
        ({"intent": ""}, "intent: missing; expected a string"),
        (
            {"filters": "[{field: rating_all, op: gte, value: 1}]"},
            "filters[0].op: unknown value 'gte'; allowed: gt, lt, eq, in_range",
        ),
        (
            {"filters": "[{field: volatility, op: gt, value: 1}, {field: vol, op: gt, value: 1}]"},
            "filters[1].field: unknown value 'vol'; allowed: close, traded_value, volatility",
        ),
        (
            {"filters": "[{field: volatility, op: gt, value: high}]"},
            "filters[0].value: expected a number, got a string ('high')",
        ),
        (
            {"filters": "[{field: volatility, op: in_range, value: 0.5}]"},
            "filters[0].value: in_range needs a [lo, hi] pair, got a number (0.5)",
        ),
        (
            {"filters": "[{field: volatility, op: in_range, value: [1, 2, 3]}]"},
            "filters[0].value: in_range needs a [lo, hi] pair, got a list ([1, 2, 3])",
        ),
        (
            {"filters": "[{field: volatility, op: in_range, value: [2, 1]}]"},
            "filters[0].value: in_range needs lo <= hi, got [2, 1]",
        ),
        (
            {"filters": "[{field: volatility, op: in_range, value: [0, x]}]"},
            "filters[0].value[1]: expected a number, got a string ('x')",
        ),
        (
            {"filters": "[{field: volatility, op: gt, value: 1, unit: pct}]"},
            "filters[0].unit: unknown key; allowed keys: field, op, value",
        ),
        ({"filters": "{field: volatility}"}, "filters: expected a list, got a mapping"),
        ({"limit": "ten"}, "limit: expected an integer, got a string ('ten')"),
        ({"limit": "0"}, "limit: expected a value >= 1, got 0"),
        (
            {"sort": "{field: volatility, direction: up}"},
            "sort.direction: unknown value 'up'; allowed: asc, desc",
        ),
        ({"sort": ""}, "sort: missing; expected a mapping"),
        ({"universe": "{quote_assets: [USDT]}"}, "universe.exchange: missing; expected a string"),
        (
            {"universe": "{exchange: binance, quote_assets: []}"},
            "universe.quote_assets: expected at least one quote asset",
        ),
        (
            {"universe": "{exchange: binance, quote_assets: [USDT], min_volatility: -1}"},
            "universe.min_volatility: expected a value >= 0, got -1.0",
        ),
        (
            {"universe": "{exchange: binance, quote_assets: [USDT, BTC], min_traded_value: 5}"},
            "universe.min_traded_value: is in units of the quote asset, so it needs exactly one",
        ),
        (
            {"universe": "{exchange: binance, quote_assets: [USDT], min_age: 3}"},
            "universe.min_age: unknown key; allowed keys: exchange, quote_assets",
        ),
        ({"limt": "3"}, "limt: unknown key; allowed keys: description, intent"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path, sections, expected):
    path = scanner_file(tmp_path, **sections)
    with pytest.raises(ConfigError) as caught:
        load_scanner(path)
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_scanner_names_come_from_file_names(tmp_path):
    path = scanner_file(tmp_path, "Bad Name")
    with pytest.raises(ConfigError, match="the scanner name 'Bad Name'"):
        load_scanner(path)
    with pytest.raises(ValueError, match=r"--scanners: unknown scanner nope; available in .*: "):
        load_scanners(SCANNERS_DIR, ("nope",))


def test_shipped_scanners_are_valid_and_match_the_ratings_sleeves():
    scanners = {s.name: s for s in load_scanners(SCANNERS_DIR)}
    rules = {
        name: (s.intent, [(f.field, f.op, f.value) for f in s.filters])
        for name, s in scanners.items()
        if name.startswith("binance_spot_rating_")
    }
    assert rules == {
        "binance_spot_rating_all_long": ("LONG", [("rating_all", "gt", -0.3)]),
        "binance_spot_rating_all_short": ("SHORT", [("rating_all", "lt", 0.0)]),
        "binance_spot_rating_ma_long": ("LONG", [("rating_ma", "gt", -0.3)]),
        "binance_spot_rating_ma_short": ("SHORT", [("rating_ma", "lt", 0.0)]),
    }
    working = [s for s in scanners.values() if not s.feature_fields()]
    assert working and all(s.intent == "DISCOVERY" for s in working)


# -- the command line ----------------------------------------------------------------------------


def test_cli_scan_end_to_end(wh, tmp_path, data_dir):
    folder = tmp_path / "scanners"
    scanner_file(folder, "liquid", limit="2")
    scanner_file(folder, "rating_long", **RATING_LONG)

    dry = run_cli("scan", "--config-dir", str(folder), "--run-id", "e2e", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 2 scanners valid" in dry.stdout and "rating_long (LONG)" in dry.stdout
    assert not (data_dir / "export").exists()

    result = run_cli("scan", "--config-dir", str(folder), "--run-id", "e2e")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "liquid (DISCOVERY): 2 candidates" in result.stdout
    assert lines[-1].startswith("error: 1 of 2 scanners failed; rating_long: uses rating_all")
    assert "daily-refresh --features" in lines[-1]
    document = json.loads((data_dir / "export" / "e2e" / "liquid.json").read_text())
    assert [c["symbol"] for c in document["candidates"]] == ["CCCUSDT", "AAAUSDT"]

    only_liquid = run_cli(
        "scan", "--config-dir", str(folder), "--scanners", "liquid", "--as-of", "2024-03-08"
    )
    assert only_liquid.returncode == 0, only_liquid.stderr
    with duckdb.connect(str(wh), read_only=True) as con:
        runs = con.sql("select as_of, count(*) from scan_candidates group by 1 order by 1")
        assert runs.fetchall() == [(date(2024, 3, 8), 2), (AS_OF, 2)]

    scanner_file(folder, "rating_long", intent="HOLD")
    bad = run_cli("scan", "--config-dir", str(folder))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: {folder / 'rating_long.yml'}: intent: unknown value 'HOLD'; "
        "allowed: LONG, SHORT, DISCOVERY"
    )
