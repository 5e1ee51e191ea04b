"""`orchestrate.py sql`: run one read-only query on the warehouse and print the result.

The warehouse is opened read-only, which is the real guard: DuckDB refuses any write on it. The
statement is also classified up front from DuckDB's own parser (`duckdb.extract_statements`), so a
write is refused with a message saying what it would have done, before the file is even opened.
While a writer holds the warehouse lock the query is refused naming the writer: a reader would keep
the writer from opening the file for its next step.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from quantwarehouse.cli import CliError
from quantwarehouse.lock import WarehouseLockedError, current_writer
from quantwarehouse.paths import warehouse_path
from quantwarehouse.warehouse import connect

FORMATS = ("table", "csv", "json")
DEFAULT_TABLE_LIMIT = 100
Kind = duckdb.StatementType

READING_KINDS = frozenset({Kind.SELECT, Kind.EXPLAIN, Kind.CALL})
# What a refused statement would have done, by DuckDB statement type.
WRITING_KINDS: dict[Kind, str] = {
    Kind.INSERT: "inserts rows",
    Kind.UPDATE: "updates rows",
    Kind.DELETE: "deletes rows",
    Kind.MERGE_INTO: "merges rows into a table",
    Kind.CREATE: "creates an object",
    Kind.CREATE_FUNC: "creates a function",
    Kind.DROP: "drops an object",
    Kind.ALTER: "alters an object",
    Kind.COPY: "copies data into a table or out to a file",
    Kind.COPY_DATABASE: "copies a database",
    Kind.EXPORT: "exports the database to files",
    Kind.ATTACH: "attaches another database",
    Kind.DETACH: "detaches a database",
    Kind.SET: "changes a setting (SET, RESET, USE or a PRAGMA that sets)",
    Kind.VARIABLE_SET: "sets a variable",
    Kind.PRAGMA: "runs a PRAGMA that changes the session",
    Kind.TRANSACTION: "controls a transaction",
    Kind.VACUUM: "vacuums the database",
    Kind.ANALYZE: "updates statistics",
    Kind.LOAD: "installs or loads an extension",
    Kind.PREPARE: "prepares a statement",
    Kind.EXECUTE: "executes a prepared statement",
}


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sql",
        help="run a read-only SQL query on the warehouse",
        description=(
            "Run one SQL query (DuckDB dialect) on the warehouse, opened read-only, and print "
            "the result. Statements that would write (INSERT, UPDATE, DELETE, CREATE, DROP, "
            "ALTER, COPY, ATTACH, SET, PRAGMAs that set, ...) are refused and nothing changes. "
            "While a writer (e.g. daily-refresh) holds the warehouse, the query is refused "
            "naming it (exit status 3). Bad SQL exits with status 2 and the reason."
        ),
        epilog=(
            'Examples: orchestrate.py sql "select * from main.dim_symbols" --format csv; '
            "orchestrate.py sql - < query.sql"
        ),
    )
    parser.add_argument("query", help='the SQL statement, or "-" to read it from stdin')
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="aligned table (default), CSV with a header, or JSON records",
    )
    parser.add_argument(
        "--limit",
        type=parse_limit,
        help=(
            f"print at most N rows, 0 for all (default {DEFAULT_TABLE_LIMIT} for the table, "
            "all rows for CSV and JSON)"
        ),
    )
    parser.set_defaults(handler=run)


def parse_limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return limit


def run(args: argparse.Namespace) -> int:
    sql = read_query(args.query)
    statement = classify(sql)
    limit = args.limit if args.limit is not None else default_limit(args.format)
    with open_read_only(warehouse_path()) as con:
        result = execute(con, statement, limit)
    sys.stdout.write(render(result, args.format))
    if result.truncated and args.format != "table":
        print(f"note: output stops at {limit} rows (--limit); more rows exist", file=sys.stderr)
    return 0


def default_limit(output_format: str) -> int:
    return DEFAULT_TABLE_LIMIT if output_format == "table" else 0


def read_query(argument: str) -> str:
    sql = sys.stdin.read() if argument == "-" else argument
    if not sql.strip():
        source = "stdin" if argument == "-" else "the query argument"
        raise CliError(f"no SQL given: {source} is empty")
    return sql


# -- what the statement does ------------------------------------------------------------------


def classify(sql: str) -> duckdb.Statement:
    """The one statement of `sql` if it only reads; `CliError` saying why not otherwise."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise query_error("the SQL does not parse", exc) from None
    if not statements:
        raise CliError("no SQL statement given (only comments or semicolons)")
    pivot = is_pivot_without_in_list(statements)
    if len(statements) > 1 and not pivot:
        raise CliError(f"give one statement at a time: got {len(statements)}")
    for statement in statements:
        if statement.type not in READING_KINDS:
            raise CliError(refusal(statement, pivot))
    return statements[0]


def is_pivot_without_in_list(statements: Sequence[duckdb.Statement]) -> bool:
    """DuckDB parses `pivot t on c` as a generated CREATE TYPE (empty text) plus the SELECT."""
    return (
        len(statements) == 2
        and statements[0].type == Kind.CREATE
        and not statements[0].query.strip()
        and statements[1].type == Kind.SELECT
    )


def refusal(statement: duckdb.Statement, pivot: bool) -> str:
    if pivot:
        return (
            "refused: a PIVOT without an IN list creates an enum type first, and sql only reads; "
            "list the pivoted values, e.g. `pivot t on c in ('a', 'b') using sum(x)`"
        )
    kind = statement.type.name
    subject = f"a {kind} statement" if kind.isidentifier() else "the statement"
    action = WRITING_KINDS.get(statement.type, "is not a query")
    return (
        f"refused: {subject} {action}, and sql only reads (the warehouse is opened read-only); "
        "write through the orchestrate.py commands or dbt instead"
    )


def query_error(what: str, exc: duckdb.Error) -> CliError:
    """A one-line error from DuckDB's message; its source pointer (LINE n: ...) goes to stderr."""
    lines = str(exc).splitlines()
    pointer_at = next((i for i, line in enumerate(lines) if line.startswith("LINE ")), len(lines))
    pointer = lines[pointer_at:]
    if pointer:
        print("\n".join(pointer), file=sys.stderr)
    summary = " ".join(line.strip() for line in lines[:pointer_at] if line.strip())
    return CliError(f"{what}: {summary}")


# -- opening the warehouse --------------------------------------------------------------------


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse opened read-only; `WarehouseLockedError` naming the writer when busy."""
    refuse_while_writing(path)
    try:
        return connect(path, read_only=True)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise query_error(f"cannot open the warehouse {path}", exc) from None
        refuse_while_writing(path)
        first_line = str(exc).splitlines()[0]
        raise WarehouseLockedError(
            f"the warehouse {path} is open for writing in another process, outside "
            f"orchestrate.py's writer lock ({first_line}); close it there and try again"
        ) from None


def refuse_while_writing(path: Path) -> None:
    writer = current_writer(path)
    if writer is not None:
        raise WarehouseLockedError(
            f"the warehouse {path} is being written by {writer.describe()}; sql reads only "
            "when no writer runs (a reader would block the writer's next step): try again when "
            "it has finished"
        )


# -- running it -------------------------------------------------------------------------------


def execute(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, limit: int) -> QueryResult:
    """Run the statement; keep at most `limit` rows (0: all) and say whether more exist."""
    try:
        con.execute(statement)
        if con.description is None:
            return QueryResult((), [], truncated=False)
        columns = tuple(column[0] for column in con.description)
        rows = con.fetchall() if limit == 0 else con.fetchmany(limit + 1)
    except duckdb.Error as exc:
        if "read-only mode" in str(exc):
            raise CliError(
                "refused: the statement writes, and sql only reads (DuckDB: "
                f"{str(exc).splitlines()[0]})"
            ) from None
        raise query_error("the query failed", exc) from None
    truncated = limit > 0 and len(rows) > limit
    return QueryResult(columns, rows[:limit] if truncated else rows, truncated)


# -- output -----------------------------------------------------------------------------------


def render(result: QueryResult, output_format: str) -> str:
    if output_format == "csv":
        return render_csv(result)
    if output_format == "json":
        return render_json(result)
    return render_table(result)


def render_table(result: QueryResult) -> str:
    if not result.columns:
        return "ok (the statement returned no result set)\n"
    cells = [[table_cell(value) for value in row] for row in result.rows]
    widths = [
        max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(result.columns)
    ]
    numeric = [is_numeric_column(result.rows, i) for i in range(len(result.columns))]

    def line(values: Sequence[str]) -> str:
        padded = (
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    lines = [line(result.columns), line(["-" * width for width in widths])]
    lines += [line(row) for row in cells]
    count = len(result.rows)
    footer = f"({count} row{'' if count == 1 else 's'}"
    if result.truncated:
        footer += "; more rows exist: raise --limit, or --limit 0 for all"
    lines.append(footer + ")")
    return "\n".join(lines) + "\n"


def is_numeric_column(rows: Sequence[tuple[Any, ...]], index: int) -> bool:
    values = [row[index] for row in rows if row[index] is not None]
    return bool(values) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values
    )


def table_cell(value: Any) -> str:
    if value is None:
        return "NULL"
    return text_value(value).replace("\n", "\\n")


def text_value(value: Any) -> str:
    """A value as text: SQL booleans, nested values as JSON, the rest as Python writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict | tuple):
        return json.dumps(json_value(value))
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def render_csv(result: QueryResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows(["" if v is None else text_value(v) for v in row] for row in result.rows)
    return buffer.getvalue()


def render_json(result: QueryResult) -> str:
    duplicates = sorted({name for name in result.columns if result.columns.count(name) > 1})
    if duplicates:
        raise CliError(
            f"JSON records need distinct column names; {', '.join(duplicates)} appear more than "
            "once: give each column its own alias"
        )
    records = [
        {name: json_value(value) for name, value in zip(result.columns, row, strict=True)}
        for row in result.rows
    ]
    return json.dumps(records, indent=2) + "\n"


def json_value(value: Any) -> Any:
    """A JSON-ready value: ISO dates and times, numbers for decimals, null for NaN and infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return json_value(float(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
