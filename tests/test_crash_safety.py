"""ARCHITECTURE invariant 9: a command killed (SIGKILL) at any moment and run again ends in the
same state as an uninterrupted run.

Each test starts a real subprocess on a copy of the same warehouse, kills it at two or three
points in turn (random delays, and the moment a given model starts or the first part of a load is
read, seen on the command's console), runs it again to completion, and compares the end state with
an uninterrupted run of the same command on another copy: same rows, no duplicates, nothing
missing, state tables consistent, no leftover relations. The random points come from
QWH_CRASH_SEED when set (each failure message gives the seed to replay it). Here: `dbt run` and
`orchestrate.py ingest`; `daily-refresh --all` is tests/test_daily_refresh_crash.py.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantwarehouse.dbt import dbt_args
from quantwarehouse.paths import REPO_ROOT
from tests.incremental_harness import (
    IncrementalModel,
    assert_same_warehouses,
    compare_table,
    concat,
    copy_warehouse,
    load_batch,
    new_warehouse,
    on_days,
    parsed_project,
    random_walk,
    revised,
    table_exists,
)

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("QWH_CRASH_SEED") or random.SystemRandom().randrange(10**6))
COMMAND_TIMEOUT = 300.0
PYTHON_MODEL_TEMP_TABLE = re.compile(r"__dbt_tmp\d+$")
START = date(2023, 1, 1)
SYMBOLS = ("CRASHAUSDT", "CRASHBUSDT", "CRASHCUSDT", "CRASHDUSDT", "CRASHEUSDT")


@dataclass(frozen=True)
class KillPoint:
    """Kill `delay` seconds after the start, or after the first console line matching `after`."""

    delay: float
    after: str | None = None

    def describe(self) -> str:
        where = f"the line /{self.after}/" if self.after else "the start"
        return f"{self.delay:.2f}s after {where}"


@dataclass
class Attempt:
    point: KillPoint
    killed: bool = False
    saw_trigger: bool = False
    output: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Completed:
    seconds: float
    output: str


class Command:
    """A command line run as a subprocess on one warehouse (in its own process group)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.args,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def complete(self) -> Completed:
        """Run to the end; fails with the output when the command fails."""
        started = time.perf_counter()
        process = self.start()
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
        assert process.returncode == 0, (
            f"{' '.join(self.args)} exited {process.returncode}:\n{output}"
        )
        return Completed(time.perf_counter() - started, output)

    def kill_at(self, point: KillPoint) -> Attempt:
        attempt = Attempt(point)
        trigger = threading.Event()
        process = self.start()

        def read_output() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                attempt.output.append(line)
                if point.after and re.search(point.after, line):
                    trigger.set()

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        if point.after:
            while not trigger.wait(0.01) and process.poll() is None:
                pass
            attempt.saw_trigger = trigger.is_set()
        time.sleep(point.delay)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            attempt.killed = True
        process.wait(timeout=COMMAND_TIMEOUT)
        reader.join(timeout=10)
        return attempt


def crash_and_recover(command: Command, points: list[KillPoint]) -> list[Attempt]:
    """Kill the command at each point in turn (on the same warehouse), then run it to the end."""
    attempts = [command.kill_at(point) for point in points]
    command.complete()
    return attempts


def describe(attempts: list[Attempt]) -> str:
    lines = [f"kill points (QWH_CRASH_SEED={SEED}):"]
    for attempt in attempts:
        outcome = "killed" if attempt.killed else "had already finished"
        if attempt.point.after and not attempt.saw_trigger:
            outcome += " (its line never came)"
        last = attempt.output[-1].strip() if attempt.output else "(no output)"
        lines.append(f"  {attempt.point.describe()}: {outcome}; last line: {last}")
    return "\n".join(lines)


def relations(warehouse: Path) -> set[str]:
    """Every table and view, except the `__dbt_tmp<timestamp>` tables Python incremental models
    leave behind on every run (a leak of its own, caught by test_incremental_equals_full)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables"
        ).fetchall()
    return {name for (name,) in found if not PYTHON_MODEL_TEMP_TABLE.search(name)}


def built_models(warehouse: Path) -> list[IncrementalModel]:
    """The incremental models the command builds (those present after an uninterrupted run)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return [m for m in parsed_project().models if table_exists(con, m.relation)]


def assert_same_end_state(crashed: Path, reference: Path, attempts: list[Attempt]) -> None:
    models = built_models(reference)
    assert {"bars_1d", "returns_daily"} <= {m.name for m in models}
    context = describe(attempts)
    assert relations(crashed) == relations(reference), (
        f"leftover or missing relations: {relations(crashed) ^ relations(reference)}\n{context}"
    )
    assert_same_warehouses(
        models, crashed, reference, ("killed and rerun", "uninterrupted"), when="\n" + context
    )


# -- data -----------------------------------------------------------------------------------------


def first_load() -> pa.Table:
    return concat(*(random_walk(s, START, 500) for s in SYMBOLS[:4]))


def second_load() -> pa.Table:
    """A day appended to every symbol, revisions of old bars, a new listing."""
    new_day = START + timedelta(days=500)
    appended = [on_days(random_walk(s, START, 501), new_day, new_day) for s in SYMBOLS[:4]]
    old = on_days(random_walk(SYMBOLS[0], START, 500), date(2023, 3, 1), date(2023, 3, 5))
    listed = random_walk(SYMBOLS[4], date(2023, 6, 1), 350)
    return concat(*appended, revised(old, 1.04), listed)


def prepared_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two identical warehouses: batch 1 built, then batch 2 loaded and not built."""
    base = new_warehouse(tmp_path / "base")
    load_batch(base, first_load())
    parsed_project().session(tmp_path / "base-run").run(base)
    load_batch(base, second_load())
    return copy_warehouse(base, tmp_path / "crashed"), copy_warehouse(base, tmp_path / "reference")


# -- dbt, as an analyst runs it ------------------------------------------------------------------


def dbt_run_command(workdir: Path, warehouse: Path) -> Command:
    """`dbt run` of the incremental models and their parents: the writes of a `dbt build`
    without its tests, which write nothing."""
    args = dbt_args(
        ["run", "--select", *parsed_project().build_selection],
        echo=True,
        target_path=workdir / "dbt-target",
        log_path=workdir / "dbt-logs",
    )
    dbt = Path(sys.executable).with_name("dbt")
    return Command([str(dbt), *args], {"QWH_WAREHOUSE": str(warehouse)})


def test_killed_dbt_run_recovers_to_the_uninterrupted_state(tmp_path):
    rng = random.Random(SEED)
    crashed, reference = prepared_pair(tmp_path)
    project = parsed_project()
    started = time.perf_counter()
    project.session(tmp_path / "reference-run").run(reference)
    running = time.perf_counter() - started
    model = rng.choice([m.name for m in project.models])
    points = [
        KillPoint(rng.uniform(0.0, running), after=r"Concurrency: "),
        KillPoint(rng.uniform(0.0, 0.05), after=r"START sql incremental model main\.bars_1d "),
        KillPoint(rng.uniform(0.0, 0.2), after=rf"START \w+ incremental model main\.{model} "),
    ]
    attempts = crash_and_recover(dbt_run_command(tmp_path / "crashed-run", crashed), points)
    assert sum(a.killed for a in attempts) >= 2, describe(attempts)
    assert_same_end_state(crashed, reference, attempts)


# -- the published files, which test_daily_refresh_crash compares too ----------------------------


def published_files(data_dir: Path, ignored: tuple[str, ...] = ()) -> dict[str, pa.Table]:
    """The visible files under the lakehouse folder, read without their (timestamped) metadata
    and without the `ignored` columns."""
    tables = {
        path.name: pq.read_table(path).replace_schema_metadata(None)
        for path in sorted((data_dir / "lakehouse").glob("[!.]*"))
    }
    return {
        name: table.drop_columns([c for c in ignored if c in table.column_names])
        for name, table in tables.items()
    }


# -- orchestrate.py ingest ------------------------------------------------------------------------

# table -> (key, columns that record when and in which batch, not what)
RAW_TABLES = {
    "raw.klines": (("symbol", "interval", "open_time", "revision"), ("batch_id", "loaded_at")),
    "raw.symbols": (("symbol", "exchange", "revision"), ("batch_id", "loaded_at")),
    "raw.rejects": (("source", "source_file", "raw_row", "reason"), ("batch_id", "rejected_at")),
}


LOAD_PLANNED = r"ingest synthetic: 0/"


def ingest_command(warehouse: Path) -> Command:
    ingest = ["ingest", "--source", "synthetic", "--preset", "demo", "--workers", "1"]
    return Command(
        [sys.executable, str(REPO_ROOT / "orchestrate.py"), *ingest],
        {"QWH_WAREHOUSE": str(warehouse), "QWH_DATA_DIR": str(warehouse.parent)},
    )


def loads_in_progress(warehouse: Path) -> int:
    """Load batches started and never finished (a kill between start and finish leaves one)."""
    if not warehouse.exists():
        return 0
    with duckdb.connect(str(warehouse), read_only=True) as con:
        if not table_exists(con, "raw.load_batches"):
            return 0
        found = con.execute("select count(*) from raw.load_batches where status = 'running'")
        return int(found.fetchone()[0])


def test_killed_ingest_stores_what_an_uninterrupted_load_stores(tmp_path):
    pytest.importorskip("ingest.synthetic", reason="the synthetic source is not written yet")
    rng = random.Random(SEED + 2)
    reference = new_warehouse(tmp_path / "reference")
    crashed = new_warehouse(tmp_path / "crashed")
    summary = re.search(r"success in ([\d.]+)s", ingest_command(reference).complete().output)
    assert summary, "the ingest summary gives no load time"
    loading = float(summary.group(1))
    command = ingest_command(crashed)
    attempts, inside_load = [], []
    # The demo preset is one work item loaded in well under a second: two kills fall while it is
    # generated and written (after the plan's progress line), one anywhere from the start.
    for point in (
        KillPoint(rng.uniform(0.2, 3.0)),
        KillPoint(rng.uniform(0.0, loading / 2), after=LOAD_PLANNED),
        KillPoint(rng.uniform(0.0, loading), after=LOAD_PLANNED),
    ):
        before = loads_in_progress(crashed)
        attempts.append(command.kill_at(point))
        inside_load.append(loads_in_progress(crashed) > before)
    command.complete()
    assert any(inside_load), f"no kill landed inside the load\n{describe(attempts)}"
    problems = []
    with (
        duckdb.connect(str(crashed), read_only=True) as left,
        duckdb.connect(str(reference), read_only=True) as right,
    ):
        for table, (key, ignored) in RAW_TABLES.items():
            labels = ("killed and rerun", "uninterrupted")
            problems += compare_table(left, right, table, key, ignored, labels)
    assert not problems, "\n".join([*problems, describe(attempts)])
