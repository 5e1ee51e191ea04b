"""The proof harness of ARCHITECTURE invariants 3 (incremental equals full) and 9 (crash safety).

Every incremental dbt model is found in the parsed manifest (`materialized='incremental'`), so a
model added later is covered without touching this file. Its primary key comes from its YAML key
test (`unique_combination_of_columns`, else `unique`), else from `partition_keys + [range_column]`.

Typical use (see tests/test_incremental_equals_full.py):

    project = parsed_project()
    assert_incremental_equals_full(project, tmp_path, [batch_1, batch_2], every_batch=True)

loads each batch into the raw layer through the real write path (`run_load` over `RawStore`),
runs dbt incrementally after each batch, then copies the warehouse and rebuilds the copy with
`--full-refresh` (after every batch, or only the last). `assert_same_warehouses` compares every
incremental model row for row by its key (ignoring the audit column `invocation_id`; floats equal
to 1e-9 relative, NaN equal to NaN, everything else exactly), every model's `state.<model>` table
(ignoring `updated_at`) and, where a model has one, its carry `state.<model>__carry`, and fails
with the model, the first differing keys, the columns and both values. `rows_written` tells which
rows one dbt invocation (re)wrote.

A batch is a candidate table (`ingest.records.CANDIDATE_SCHEMA`, e.g. from `random_walk`) or any
callable taking a `RawStore` (e.g. `load_source(build_source("synthetic", options))`).
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dbt.cli.main import dbtRunner, dbtRunnerResult
from dbt.contracts.graph.manifest import Manifest
from dbt_common.invocation import get_invocation_id

from ingest.intervals import INTERVAL_MICROS
from ingest.loader import Source, SourcePart, WorkItem, run_load
from ingest.raw_store import RawStore
from ingest.records import CANDIDATE_SCHEMA
from quantwarehouse.dbt import _warehouse_env, dbt_args, invoke_dbt

# The manifest is parsed once with this file name: dbt-duckdb names the database after the file's
# stem, so every warehouse the harness builds must carry the same name (in its own folder).
WAREHOUSE_FILE = "warehouse.duckdb"
MODEL_AUDIT_COLUMN = "invocation_id"
STATE_AUDIT_COLUMN = "updated_at"
STATE_SCHEMA = "state"
CARRY_SUFFIX = "__carry"
RELATIVE_TOLERANCE = 1e-9
SHOWN_DIFFERENCES = 5

Key = tuple[Any, ...]
Batch = pa.Table | Callable[[RawStore], object]


# -- the project ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncrementalModel:
    """An incremental model of the project and how its rows are identified."""

    name: str
    schema: str
    identifier: str
    key: tuple[str, ...]
    partition_keys: tuple[str, ...]
    range_column: str

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.identifier}"

    @property
    def state_relation(self) -> str:
        return f"{STATE_SCHEMA}.{self.identifier}"

    @property
    def carry_relation(self) -> str:
        """Where a model that resumes from stored recursion state keeps it (the EMA models)."""
        return f"{STATE_SCHEMA}.{self.identifier}{CARRY_SUFFIX}"


def declared_key(manifest: Manifest, unique_id: str) -> tuple[str, ...] | None:
    """The key the model's YAML tests declare: a tested column combination, else a unique column."""
    combinations: list[tuple[str, ...]] = []
    single_columns: list[tuple[str, ...]] = []
    for node in manifest.nodes.values():
        metadata = getattr(node, "test_metadata", None)
        if metadata is None or getattr(node, "attached_node", None) != unique_id:
            continue
        if metadata.name == "unique_combination_of_columns":
            combinations.append(tuple(metadata.kwargs["combination_of_columns"]))
        elif metadata.name == "unique":
            single_columns.append((str(metadata.kwargs["column_name"]),))
    found = sorted(combinations) or sorted(single_columns)
    return found[0] if found else None


def incremental_models(manifest: Manifest) -> tuple[IncrementalModel, ...]:
    models = []
    for unique_id, node in sorted(manifest.nodes.items()):
        if node.resource_type != "model" or node.config.materialized != "incremental":
            continue
        partition_keys = tuple(node.config.get("partition_keys") or ("symbol",))
        range_column = node.config.get("range_column")
        if range_column is None:
            raise AssertionError(
                f"incremental model {node.name} has no range_column config; every incremental "
                "model follows the symbol_range contract (notes/dbt_framework.md)"
            )
        key = declared_key(manifest, unique_id) or (*partition_keys, range_column)
        models.append(
            IncrementalModel(
                name=node.name,
                schema=node.schema,
                identifier=node.alias or node.name,
                key=key,
                partition_keys=partition_keys,
                range_column=range_column,
            )
        )
    return tuple(models)


@dataclass(frozen=True)
class DbtProject:
    """The parsed dbt project: reused by every invocation, so dbt does not parse again."""

    manifest: Manifest
    models: tuple[IncrementalModel, ...]

    def model(self, name: str) -> IncrementalModel:
        for candidate in self.models:
            if candidate.name == name:
                return candidate
        raise KeyError(f"{name} is not an incremental model of the project")

    def has_model(self, name: str) -> bool:
        return any(candidate.name == name for candidate in self.models)

    @property
    def build_selection(self) -> list[str]:
        """The incremental models and everything upstream of them."""
        return [f"+{model.name}" for model in self.models]

    def session(self, workdir: Path) -> DbtSession:
        return DbtSession(self, workdir)


def dbt_arguments(args: Sequence[str], workdir: Path) -> list[str]:
    """The project's own folders, a quiet console, and this test's target and log folders."""
    return dbt_args(args, target_path=workdir / "dbt-target", log_path=workdir / "dbt-logs")


def check_warehouse_name(warehouse: Path) -> None:
    if warehouse.name != WAREHOUSE_FILE:
        raise ValueError(f"{warehouse}: harness warehouses are named {WAREHOUSE_FILE}")


@cache
def parsed_project() -> DbtProject:
    """Parse the dbt project once per test process (into a private target folder)."""
    workdir = Path(tempfile.mkdtemp(prefix="qwh-harness-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    with _warehouse_env(workdir / WAREHOUSE_FILE):
        result = dbtRunner().invoke(dbt_arguments(["parse"], workdir))
    if not result.success or result.result is None:
        raise AssertionError(f"dbt parse failed: {result.exception}")
    return DbtProject(result.result, incremental_models(result.result))


class DbtFailure(AssertionError):
    """A dbt invocation that did not succeed; the message names the failing nodes."""


def describe_failure(args: Sequence[str], result: dbtRunnerResult, log_dir: Path) -> str:
    lines = [f"dbt {' '.join(args)} failed (log: {log_dir / 'dbt.log'})"]
    if result.exception is not None:
        lines.append(f"  {type(result.exception).__name__}: {result.exception}")
    for node_result in getattr(result.result, "results", None) or []:
        status = str(node_result.status)
        if status not in ("success", "pass"):
            lines.append(f"  {node_result.node.name}: {status}: {node_result.message}")
    return "\n".join(lines)


@dataclass(frozen=True)
class DbtSession:
    """dbt invocations of one test: its own target and log folders, any warehouse file."""

    project: DbtProject
    workdir: Path

    @property
    def log_dir(self) -> Path:
        return self.workdir / "dbt-logs"

    def invoke(self, warehouse: Path, *args: str) -> dbtRunnerResult:
        """One dbt command on the warehouse, with the parsed manifest (dbt does not parse again)."""
        check_warehouse_name(warehouse)
        # No manifest.json or run_results.json: the results come back in memory.
        arguments = dbt_arguments([*args, "--no-write-json"], self.workdir)
        with _warehouse_env(warehouse):
            result = invoke_dbt(arguments, manifest=self.project.manifest)
        if not result.success:
            raise DbtFailure(describe_failure(args, result, self.log_dir))
        return result

    def run(self, warehouse: Path, *, full_refresh: bool = False) -> str:
        """Build the incremental models (and their parents); returns the dbt invocation id."""
        refresh = ["--full-refresh"] if full_refresh else []
        self.invoke(warehouse, "run", "--select", *self.project.build_selection, *refresh)
        return get_invocation_id()

    def test(self, warehouse: Path) -> None:
        """The data tests of the incremental models (keys, not nulls, expressions)."""
        names = [model.name for model in self.project.models]
        self.invoke(warehouse, "test", "--select", *names, "--exclude-resource-type", "unit_test")


# -- loading raw data through the real write path -----------------------------------------------


class CandidateSource:
    """An `ingest.loader.Source` over candidate rows held in memory: one work item per symbol."""

    def __init__(self, candidates: pa.Table, name: str = "harness") -> None:
        self.name = name
        self.candidates = candidates.select(CANDIDATE_SCHEMA.names).cast(CANDIDATE_SCHEMA)

    def parameters(self) -> dict[str, object]:
        return {"rows": self.candidates.num_rows}

    def plan(self, store: RawStore) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        symbols = sorted(set(self.candidates.column("symbol").to_pylist()))
        return [WorkItem(key=symbol, label=symbol) for symbol in symbols], []

    def read(self, item: WorkItem) -> SourcePart:
        rows = self.candidates.filter(pc.equal(self.candidates.column("symbol"), item.key))
        return SourcePart(item=item, candidates=rows)


def load_source(source: Source) -> Callable[[RawStore], object]:
    """A batch that loads a source through the load runner and insists it succeeded."""

    def load(store: RawStore) -> object:
        summary = run_load(source, store, workers=1)
        if summary.status != "success":
            raise AssertionError("\n".join(summary.lines()))
        return summary

    return load


def load_batch(warehouse: Path, batch: Batch) -> None:
    """Write one batch into the warehouse's raw layer (one load batch)."""
    loader = load_source(CandidateSource(batch)) if isinstance(batch, pa.Table) else batch
    con = duckdb.connect(str(warehouse))
    try:
        loader(RawStore(con))
    finally:
        con.close()


def new_warehouse(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / WAREHOUSE_FILE


def copy_warehouse(source: Path, folder: Path) -> Path:
    """Copy a closed warehouse file (and its write-ahead log, if any) into another folder."""
    target = new_warehouse(folder)
    shutil.copyfile(source, target)
    wal = source.with_name(source.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + ".wal"))
    return target


# -- scenarios ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioResult:
    incremental: Path
    full: Path
    invocation_ids: tuple[str, ...]


def full_rebuild(session: DbtSession, warehouse: Path, folder: Path) -> Path:
    """A copy of the warehouse (the same raw tables) rebuilt with --full-refresh."""
    full = copy_warehouse(warehouse, folder)
    session.run(full, full_refresh=True)
    return full


def assert_incremental_equals_full(
    project: DbtProject,
    workdir: Path,
    batches: Sequence[Batch],
    *,
    every_batch: bool = False,
    run_tests: bool = True,
) -> ScenarioResult:
    """Load the batches one by one, running dbt incrementally after each; after the last batch
    (and, with `every_batch`, after every incremental run from batch 2 on: a wrong row that a
    later batch happens to overwrite is still caught) the warehouse must equal a full rebuild of
    its copy. `run_tests` ends with the models' dbt data tests on the incremental warehouse."""
    if not batches:
        raise ValueError("a scenario needs at least one batch")
    session = project.session(workdir)
    incremental = new_warehouse(workdir / "incremental")
    invocation_ids = []
    for number, batch in enumerate(batches, start=1):
        load_batch(incremental, batch)
        invocation_ids.append(session.run(incremental))
        # Batch 1 is a first build, not an incremental run: nothing to compare yet.
        if (every_batch and number > 1) or number == len(batches):
            full = full_rebuild(session, incremental, workdir / f"full-after-batch-{number}")
            assert_same_warehouses(
                project.models, incremental, full, when=f"after batch {number} of {len(batches)}"
            )
    if run_tests:
        session.test(incremental)
    return ScenarioResult(incremental, full, tuple(invocation_ids))


# -- comparing ------------------------------------------------------------------------------------


def values_equal(left: object, right: object) -> bool:
    """Exact equality, except floats (1e-9 relative, NaN equal to NaN) also inside lists."""
    if isinstance(left, float) and isinstance(right, float):
        if left == right:
            return True
        if not (math.isfinite(left) and math.isfinite(right)):
            return math.isnan(left) and math.isnan(right)
        return abs(left - right) <= RELATIVE_TOLERANCE * max(abs(left), abs(right))
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(values_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(values_equal(left[k], right[k]) for k in left)
    return type(left) is type(right) and left == right


@dataclass(frozen=True)
class TableRows:
    """A table's rows by key, in key order, with its column names and types."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: dict[Key, tuple[Any, ...]]
    duplicate_keys: tuple[Key, ...]


def table_exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    schema, name = relation.split(".")
    found = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(found and found[0])


def read_table(
    con: duckdb.DuckDBPyConnection, relation: str, key: Sequence[str], ignored: Collection[str]
) -> TableRows | None:
    """All rows of a table except the ignored (audit) columns, or None when the table is missing."""
    if not table_exists(con, relation):
        return None
    described = [
        row for row in con.execute(f"describe {relation}").fetchall() if row[0] not in ignored
    ]
    columns = tuple(row[0] for row in described)
    types = tuple(row[1] for row in described)
    missing = [column for column in key if column not in columns]
    if missing:
        raise AssertionError(f"{relation}: key column(s) {missing} not in its columns {columns}")
    positions = [columns.index(column) for column in key]
    order = ", ".join(f"{column} asc nulls first" for column in key)
    rows: dict[Key, tuple[Any, ...]] = {}
    duplicates: list[Key] = []
    for row in con.execute(
        f"select {', '.join(columns)} from {relation} order by {order}"
    ).fetchall():
        row_key = tuple(row[p] for p in positions)
        if row_key in rows:
            duplicates.append(row_key)
        rows[row_key] = row
    return TableRows(columns, types, rows, tuple(duplicates))


def describe_columns(table: TableRows) -> str:
    return ", ".join(
        f"{name} {kind}" for name, kind in zip(table.columns, table.types, strict=True)
    )


def show(keys: Sequence[Key]) -> str:
    shown = ", ".join(str(tuple(str(v) for v in k)) for k in keys[:SHOWN_DIFFERENCES])
    more = len(keys) - SHOWN_DIFFERENCES
    return shown + (f" ... and {more} more" if more > 0 else "")


def value_differences(left: TableRows, right: TableRows, labels: tuple[str, str]) -> list[str]:
    """One line per key whose values differ, in key order, with each differing column's values."""
    lines = []
    for row_key, left_row in left.rows.items():
        right_row = right.rows.get(row_key)
        if right_row is None:
            continue
        columns = [
            f"{column} {labels[0]}={a!r} {labels[1]}={b!r}"
            for column, a, b in zip(left.columns, left_row, right_row, strict=True)
            if not values_equal(a, b)
        ]
        if columns:
            lines.append(f"key {tuple(str(v) for v in row_key)}: {'; '.join(columns)}")
    return lines


def table_differences(
    name: str, key: Sequence[str], left: TableRows, right: TableRows, labels: tuple[str, str]
) -> list[str]:
    """Everything that differs between two versions of a table; empty when they are equal."""
    header = f"{name} (key {', '.join(key)})"
    if (left.columns, left.types) != (right.columns, right.types):
        return [
            f"{header}: columns differ: {labels[0]} {describe_columns(left)} "
            f"{labels[1]} {describe_columns(right)}"
        ]
    problems = [
        f"{header}: duplicate keys in {label}: {show(table.duplicate_keys)}"
        for label, table in zip(labels, (left, right), strict=True)
        if table.duplicate_keys
    ]
    only_left = [k for k in left.rows if k not in right.rows]
    only_right = [k for k in right.rows if k not in left.rows]
    if only_left:
        problems.append(f"{header}: {len(only_left)} rows only in {labels[0]}: {show(only_left)}")
    if only_right:
        problems.append(f"{header}: {len(only_right)} rows only in {labels[1]}: {show(only_right)}")
    values = value_differences(left, right, labels)
    if values:
        problems.append(f"{header}: {len(values)} rows with differing values, first:")
        problems += [f"    {line}" for line in values[:SHOWN_DIFFERENCES]]
    return problems


def compare_table(
    left_con: duckdb.DuckDBPyConnection,
    right_con: duckdb.DuckDBPyConnection,
    relation: str,
    key: Sequence[str],
    ignored: Collection[str],
    labels: tuple[str, str],
) -> list[str]:
    """The differences of one table between two warehouses (a missing table is one)."""
    left = read_table(left_con, relation, key, ignored)
    right = read_table(right_con, relation, key, ignored)
    if left is None or right is None:
        where = [label for label, t in zip(labels, (left, right), strict=True) if t is None]
        return [f"{relation}: table missing in {' and '.join(where)}"]
    return table_differences(relation, key, left, right, labels)


def warehouse_differences(
    models: Sequence[IncrementalModel], left: Path, right: Path, labels: tuple[str, str]
) -> list[str]:
    """Differences of the models and their state tables between two warehouses."""
    problems: list[str] = []
    with (
        duckdb.connect(str(left), read_only=True) as left_con,
        duckdb.connect(str(right), read_only=True) as right_con,
    ):
        for model in models:
            compared = [
                (model.relation, model.key, (MODEL_AUDIT_COLUMN,)),
                (model.state_relation, model.partition_keys, (STATE_AUDIT_COLUMN,)),
            ]
            if any(table_exists(con, model.carry_relation) for con in (left_con, right_con)):
                compared.append((model.carry_relation, model.partition_keys, ()))
            for relation, key, ignored in compared:
                problems += compare_table(left_con, right_con, relation, key, ignored, labels)
    return problems


def assert_same_warehouses(
    models: Sequence[IncrementalModel],
    left: Path,
    right: Path,
    labels: tuple[str, str] = ("incremental", "full"),
    *,
    when: str = "",
) -> None:
    """The models and their state tables equal in both warehouses (see the module doc)."""
    assert models, "no incremental model to compare"
    problems = warehouse_differences(models, left, right, labels)
    context = f" {when}" if when else ""
    assert not problems, f"{labels[0]} != {labels[1]}{context} ({left} vs {right}):\n" + "\n".join(
        problems
    )


# -- what an incremental run wrote --------------------------------------------------------------


@dataclass(frozen=True)
class WrittenRange:
    """The rows one dbt invocation wrote into one partition of a model."""

    rows: int
    first: Any
    last: Any


def rows_written(
    warehouse: Path, model: IncrementalModel, invocation_id: str
) -> dict[Key, WrittenRange]:
    """Per partition: how many rows the invocation wrote, and their first and last range value."""
    keys = ", ".join(model.partition_keys)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found = con.execute(
            f"""
            select {keys}, count(*), min({model.range_column}), max({model.range_column})
            from {model.relation}
            where {MODEL_AUDIT_COLUMN} = ?
            group by {keys}
            """,
            [invocation_id],
        ).fetchall()
    width = len(model.partition_keys)
    return {tuple(row[:width]): WrittenRange(*row[width:]) for row in found}


INTERMEDIATE_MARKERS = ("__dbt_tmp", "__dbt_backup")


def leftover_relations(warehouse: Path) -> list[str]:
    """Intermediate relations dbt creates during a build and should have dropped after it."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables order by 1"
        ).fetchall()
    return [name for (name,) in found if any(mark in name for mark in INTERMEDIATE_MARKERS)]


# -- candidate rows for scenarios ----------------------------------------------------------------

EPOCH = datetime(1970, 1, 1)
MILLIS_PER_DAY = 86_400_000


def epoch_millis(day: date) -> int:
    return (datetime(day.year, day.month, day.day) - EPOCH) // timedelta(milliseconds=1)


def random_walk(
    symbol: str,
    start: date,
    days: int,
    *,
    interval: str = "1d",
    price: float = 100.0,
    seed: int | None = None,
) -> pa.Table:
    """Candidate klines of a plausible random walk: one row per bar from `start` for `days` days.

    Deterministic for a given symbol, interval and seed. Moves stay far below the toxic guard.
    """
    rng = np.random.default_rng(
        seed if seed is not None else zlib.crc32(f"{symbol}{interval}".encode())
    )
    length_ms = INTERVAL_MICROS[interval] // 1000
    count = days * MILLIS_PER_DAY // length_ms
    closes = price * np.exp(np.cumsum(rng.normal(0.0, 0.03, count)))
    opens = np.r_[price, closes[:-1]]
    highs = np.maximum(opens, closes) * (1 + np.abs(rng.normal(0.0, 0.01, count)))
    lows = np.minimum(opens, closes) * (1 - np.abs(rng.normal(0.0, 0.01, count)))
    volumes = rng.uniform(10.0, 1000.0, count)
    open_times = epoch_millis(start) + np.arange(count, dtype=np.int64) * length_ms
    return pa.table(
        {
            "symbol": [symbol] * count,
            "interval": [interval] * count,
            "open_time": open_times,
            "close_time": open_times + length_ms - 1,
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": volumes,
            "quote_volume": volumes * closes,
            "trade_count": rng.integers(1, 5000, count),
            "taker_buy_base_volume": volumes * 0.5,
            "taker_buy_quote_volume": volumes * closes * 0.5,
            "source_row": np.arange(1, count + 1, dtype=np.int64),
        },
        schema=CANDIDATE_SCHEMA,
    )


def bar_days(table: pa.Table) -> np.ndarray:
    """The UTC day (as numpy datetime64[D]) each candidate row opens on."""
    return table.column("open_time").to_numpy().astype("datetime64[ms]").astype("datetime64[D]")


def on_days(table: pa.Table, first: date, last: date) -> pa.Table:
    """Rows opening on a day in [first, last]."""
    days = bar_days(table)
    return table.filter(pa.array((days >= np.datetime64(first)) & (days <= np.datetime64(last))))


def except_days(table: pa.Table, first: date, last: date) -> pa.Table:
    """Rows opening outside [first, last]."""
    days = bar_days(table)
    return table.filter(pa.array((days < np.datetime64(first)) | (days > np.datetime64(last))))


def except_symbol(table: pa.Table, symbol: str) -> pa.Table:
    return table.filter(pc.not_equal(table.column("symbol"), symbol))


def revised(table: pa.Table, factor: float | np.ndarray) -> pa.Table:
    """The same bars with a new close (times `factor`, one or one per row), high and low widened
    to stay consistent with it."""
    factors = factor if isinstance(factor, float) else pa.array(factor, pa.float64())
    close = pc.multiply(table.column("close").combine_chunks(), factors)
    high = pc.max_element_wise(table.column("high").combine_chunks(), close)
    low = pc.min_element_wise(table.column("low").combine_chunks(), close)
    return (
        table.set_column(table.schema.get_field_index("close"), "close", close)
        .set_column(table.schema.get_field_index("high"), "high", high)
        .set_column(table.schema.get_field_index("low"), "low", low)
    )


def concat(*tables: pa.Table) -> pa.Table:
    return pa.concat_tables(tables)
