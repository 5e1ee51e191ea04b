"""`orchestrate.py sql`: read-only queries, output formats, refused writes, a busy warehouse."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from quantwarehouse.cli import main
from tests.conftest import run_cli

PRICES_QUERY = "select * from main.prices order by symbol"


@pytest.fixture
def prices(warehouse: Path) -> Path:
    """A warehouse with one small table whose every value is known."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "create table main.prices (symbol varchar, bar_date date, close double, "
            "volume bigint, note varchar)"
        )
        con.execute(
            "insert into main.prices values "
            "('BTCUSDT', date '2024-01-01', 42000.5, 12, null), "
            "('ETHUSDT', date '2024-01-01', 2300.25, 150, 'late, revised')"
        )
    return warehouse


def sql(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`orchestrate.py sql ...` in this process: (exit status, stdout, stderr)."""
    status = main(["sql", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- output -------------------------------------------------------------------------------------


def test_table_output_is_aligned_with_numbers_on_the_right(prices, capsys):
    status, out, _ = sql(capsys, PRICES_QUERY)
    assert status == 0
    assert out == (
        "symbol   bar_date      close  volume  note\n"
        "-------  ----------  -------  ------  -------------\n"
        "BTCUSDT  2024-01-01  42000.5      12  NULL\n"
        "ETHUSDT  2024-01-01  2300.25     150  late, revised\n"
        "(2 rows)\n"
    )


def test_csv_output_has_a_header_and_empty_nulls(prices, capsys):
    status, out, _ = sql(capsys, PRICES_QUERY, "--format", "csv")
    assert status == 0
    assert list(csv.reader(io.StringIO(out))) == [
        ["symbol", "bar_date", "close", "volume", "note"],
        ["BTCUSDT", "2024-01-01", "42000.5", "12", ""],
        ["ETHUSDT", "2024-01-01", "2300.25", "150", "late, revised"],
    ]


def test_json_output_is_records_with_json_types(prices, capsys):
    query = (
        "select symbol, bar_date, close, volume, note, timestamp '2024-01-01 08:30:00' as seen_at, "
        "1.50::decimal(4, 2) as fee, 'nan'::double as not_a_number, close > 3000 as is_big, "
        "[1, 2] as ids, {'k': bar_date} as nested from main.prices order by symbol"
    )
    status, out, _ = sql(capsys, query, "--format", "json")
    assert status == 0
    common = {
        "bar_date": "2024-01-01",
        "seen_at": "2024-01-01T08:30:00",
        "fee": 1.5,
        "not_a_number": None,
        "ids": [1, 2],
        "nested": {"k": "2024-01-01"},
    }
    assert json.loads(out) == [
        {**common, "symbol": "BTCUSDT", "close": 42000.5, "volume": 12, "note": None}
        | {"is_big": True},
        {**common, "symbol": "ETHUSDT", "close": 2300.25, "volume": 150}
        | {"note": "late, revised", "is_big": False},
    ]


def test_json_refuses_duplicate_column_names(prices, capsys):
    status, out, err = sql(capsys, "select 1 as a, 2 as a", "--format", "json")
    assert status == 2 and out == ""
    assert "a appear more than once" in last_line(err)


def test_sql_is_read_from_stdin_with_dash(prices):
    result = run_cli(
        "sql", "-", "--format", "csv", stdin="select count(*) as n\nfrom main.prices;\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "n\n2\n"


def test_table_shows_100_rows_by_default_and_says_more_exist(prices, capsys):
    status, out, _ = sql(capsys, "select range as i from range(250)")
    lines = out.splitlines()
    assert status == 0
    assert [int(line) for line in lines[2:-1]] == list(range(100))
    assert lines[-1] == "(100 rows; more rows exist: raise --limit, or --limit 0 for all)"

    status, out, _ = sql(capsys, "select range as i from range(250)", "--limit", "0")
    assert out.splitlines()[-1] == "(250 rows)"


def test_limit_applies_to_csv_and_is_noted_on_stderr(prices, capsys):
    status, out, err = sql(capsys, "select range as i from range(250)", "--format", "csv")
    assert status == 0 and len(out.splitlines()) == 251
    status, out, err = sql(
        capsys, "select range as i from range(250)", "--format", "csv", "--limit", "3"
    )
    assert out == "i\n0\n1\n2\n"
    assert "output stops at 3 rows" in err
    status, out, err = sql(
        capsys, "select range as i from range(3)", "--format", "csv", "--limit", "3"
    )
    assert out == "i\n0\n1\n2\n" and err == ""


def test_a_negative_limit_is_a_usage_error(prices):
    result = run_cli("sql", "select 1", "--limit", "-1")
    assert result.returncode == 2
    assert "--limit: expected a whole number >= 0, got '-1'" in last_line(result.stderr)


# -- what is accepted, what is refused ----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "select 1",
        "with a as (select 1 as x) select * from a",
        "from main.prices",
        "describe main.prices",
        "show tables",
        "summarize main.prices",
        "explain select * from main.prices",
        "pragma table_info('main.prices')",
        "call pragma_version()",
        "pivot main.prices on symbol in ('BTCUSDT', 'ETHUSDT') using sum(volume)",
        "select 1;",
    ],
)
def test_reading_statements_run(prices, capsys, query):
    status, _, err = sql(capsys, query)
    assert status == 0, err


WRITES = {
    "insert into main.prices values ('XRPUSDT', date '2024-01-02', 0.5, 1, null)": "INSERT",
    "update main.prices set close = 0": "UPDATE",
    "delete from main.prices": "DELETE",
    "create table main.copy as select * from main.prices": "CREATE",
    "create temp table scratch as select 1": "CREATE",
    "drop table main.prices": "DROP",
    "alter table main.prices add column extra integer": "ALTER",
    "copy main.prices to '{tmp}/out.csv'": "COPY",
    "copy main.prices from '{tmp}/in.csv'": "COPY",
    "export database '{tmp}/export'": "EXPORT",
    "attach '{tmp}/other.duckdb' as other": "ATTACH",
    "set threads = 1": "SET",
    "pragma threads = 1": "SET",
    "pragma enable_profiling": "PRAGMA",
    "use memory": "SET",
    "begin transaction": "TRANSACTION",
    "vacuum": "VACUUM",
    "install httpfs": "LOAD",
    "merge into main.prices as p using main.prices as q on p.symbol = q.symbol "
    "when matched then delete": "MERGE_INTO",
    "pivot main.prices on symbol using sum(volume)": "PIVOT",
}


@pytest.mark.parametrize("template", list(WRITES))
def test_writes_are_refused_and_the_file_is_unchanged(prices, capsys, tmp_path, template):
    (tmp_path / "in.csv").write_text("symbol\nXRPUSDT\n")
    before = digest(prices)
    status, out, err = sql(capsys, template.format(tmp=tmp_path))
    assert status == 2 and out == ""
    line = last_line(err)
    assert line.startswith("error: refused:") and WRITES[template] in line
    assert digest(prices) == before
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "export").exists()
    assert not prices.with_name(prices.name + ".wal").exists()


def test_a_write_hidden_from_the_parser_is_stopped_by_read_only_mode(prices, capsys):
    """EXPLAIN ANALYZE runs its statement: the parser sees an EXPLAIN, DuckDB refuses the write."""
    before = digest(prices)
    status, _, err = sql(capsys, "explain analyze delete from main.prices")
    assert status == 2
    assert last_line(err).startswith("error: refused: the statement writes")
    assert digest(prices) == before
    with duckdb.connect(str(prices), read_only=True) as con:
        assert con.execute("select count(*) from main.prices").fetchone() == (2,)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("selec 1", 'the SQL does not parse: Parser Error: syntax error at or near "selec"'),
        (
            "select * from nope",
            "the query failed: Catalog Error: Table with name nope does not exist!",
        ),
        ("select missing_column from main.prices", 'Referenced column "missing_column" not found'),
        ("select 1; select 2", "give one statement at a time: got 2"),
        ("-- only a comment", "no SQL statement given"),
        ("   ", "no SQL given: the query argument is empty"),
    ],
)
def test_bad_sql_exits_2_and_the_last_line_says_why(prices, capsys, query, reason):
    status, out, err = sql(capsys, query)
    assert status == 2 and out == ""
    assert last_line(err).startswith("error: ")
    assert reason in last_line(err)


def test_bad_sql_from_the_command_line(prices):
    result = run_cli("sql", "select * from nope")
    assert (result.returncode, result.stdout) == (2, "")
    assert last_line(result.stderr).startswith(
        "error: the query failed: Catalog Error: Table with name nope does not exist!"
    )


def test_the_source_pointer_of_a_parse_error_comes_before_the_reason(prices, capsys):
    status, _, err = sql(capsys, "select * fro main.prices")
    lines = err.strip().splitlines()
    assert status == 2
    assert lines[0] == "LINE 1: select * fro main.prices"
    assert lines[-1].startswith("error: the SQL does not parse: Parser Error: syntax error")


def test_empty_stdin_is_an_error(prices):
    result = run_cli("sql", "-", stdin="")
    assert result.returncode == 2
    assert last_line(result.stderr) == "error: no SQL given: stdin is empty"


def test_no_warehouse_is_a_clear_error(data_dir, capsys):
    status, _, err = sql(capsys, "select 1")
    assert status == 2
    assert "no warehouse at" in last_line(err)
    assert not (data_dir / "warehouse.duckdb").exists()


# -- other processes ----------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from contextlib import ExitStack
    from pathlib import Path
    import duckdb
    from quantwarehouse.lock import WriterLock
    path, mode = Path(sys.argv[1]), sys.argv[2]
    with ExitStack() as stack:
        if mode in ("writer", "writer-lock-only"):
            stack.enter_context(WriterLock(path, "holder-run", "test-holder"))
        if mode in ("writer", "duckdb-writer"):
            stack.enter_context(duckdb.connect(str(path)))
        if mode == "reader":
            stack.enter_context(duckdb.connect(str(path), read_only=True))
        print("ready", flush=True)
        time.sleep(60)
    """
)


def sql_while_held(
    warehouse: Path, mode: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `orchestrate.py sql ...` while another process holds the warehouse (HOLDER's modes);
    return the result and the holder's pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        return run_cli("sql", *args), holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("mode", ["writer", "writer-lock-only"])
def test_a_running_writer_is_named_instead_of_a_lock_error(prices, mode):
    result, pid = sql_while_held(prices, mode, "select count(*) from main.prices")
    assert result.returncode == 3
    line = last_line(result.stderr)
    assert "is being written by run holder-run" in line
    assert f"pid {pid}" in line and "command 'test-holder'" in line
    assert "Conflicting lock" not in result.stderr

    after = run_cli("sql", "select count(*) as n from main.prices", "--format", "csv")
    assert (after.returncode, after.stdout) == (0, "n\n2\n")


def test_a_writer_outside_the_lock_is_reported_with_duckdbs_pid(prices):
    result, pid = sql_while_held(prices, "duckdb-writer", "select 1")
    assert result.returncode == 3
    line = last_line(result.stderr)
    assert "is open for writing in another process" in line and f"PID {pid}" in line


def test_queries_run_beside_another_reader(prices):
    result, _ = sql_while_held(
        prices, "reader", "select sum(volume) as total from main.prices", "--format", "csv"
    )
    assert (result.returncode, result.stdout) == (0, "total\n162\n")
