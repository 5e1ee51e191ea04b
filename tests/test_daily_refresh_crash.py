"""ARCHITECTURE invariant 9 for the operator's command: `daily-refresh --all`, killed (SIGKILL) at
several points (inside the ingest, the bars, the EMAs, a gate, the last publish, and at a random
moment) and run again, ends in the state of an uninterrupted run: the same rows in every model,
consistent state tables, the same published files, no leftover relation, and a run manifest that
is whole JSON at every kill.

Both warehouses start from the same copy: the `tiny` synthetic preset (four symbols) loaded up to
the day before its last and built; the command then ingests the last day (configs like
configs/refresh.yml) and refreshes everything. The kill points reuse tests/test_crash_safety.py
(QWH_CRASH_SEED replays the random ones). When a kill lands inside the ingest, the rerun loads the
day under the next load batch id: the batch-id columns then differ by construction and only they
are left out of the comparison.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import duckdb
import pytest

from quantwarehouse.paths import REPO_ROOT
from quantwarehouse.refresh.runner import ALL_TARGETS, target_steps
from tests.incremental_harness import compare_table, copy_warehouse, parsed_project
from tests.test_crash_safety import (
    SEED,
    Attempt,
    Command,
    KillPoint,
    built_models,
    crash_and_recover,
    describe,
    published_files,
    relations,
)

pytestmark = pytest.mark.slow

SYMBOLS = ("BUDOBUSDT", "FEREUSDT", "GUFOZUSDT", "PETISBTC")
LAST_DAY = "2025-06-24"  # the tiny preset's last day
DAY_BEFORE = "2025-06-23"
# --all: ingest, gates and builds of every layer, two published files
STEPS = len([step for target in ALL_TARGETS for step in target_steps(target, True)])
BATCH_COLUMNS = {"model": ("source_batch_id",), "state": ("last_batch_id",)}


def write_config(path: Path, until: str) -> Path:
    symbols = ", ".join(SYMBOLS)
    path.write_text(
        f"source:\n  name: synthetic\n  options:\n    preset: tiny\n    until: {until}\n"
        f"    symbols: [{symbols}]\n    workers: 1\n"
    )
    return path


def refresh_command(folder: Path, warehouse: Path, config: Path) -> Command:
    env = {
        "QWH_WAREHOUSE": str(warehouse),
        "QWH_DATA_DIR": str(folder / "data"),
        "QWH_LOGS_DIR": str(folder / "logs"),
        "DBT_TARGET_PATH": str(folder / "dbt-target"),
        "DBT_LOG_PATH": str(folder / "dbt-logs"),
    }
    args = ["daily-refresh", "--all", "--config", str(config), "--verbose"]
    return Command([sys.executable, str(REPO_ROOT / "orchestrate.py"), *args], env)


def killed_in_ingest(attempt: Attempt) -> bool:
    steps = [line for line in attempt.output if line.startswith("step ")]
    return attempt.killed and bool(steps) and steps[-1].startswith(f"step 1/{STEPS}: ingest")


def manifest_statuses(data_dir: Path) -> list[str]:
    """The status of every run manifest, oldest run first (each must parse as a whole)."""
    paths = sorted((data_dir / "runs").glob("*/run_manifest.json"))
    return [json.loads(path.read_text())["status"] for path in paths]


def test_killed_daily_refresh_all_recovers_to_the_uninterrupted_state(tmp_path):
    rng = random.Random(SEED + 3)
    base_folder = tmp_path / "base"
    base = base_folder / "data" / "warehouse.duckdb"
    base.parent.mkdir(parents=True)
    before = write_config(tmp_path / "before.yml", DAY_BEFORE)
    refresh_command(base_folder, base, before).complete()
    config = write_config(tmp_path / "refresh.yml", LAST_DAY)
    crashed = copy_warehouse(base, tmp_path / "crashed" / "data")
    reference = copy_warehouse(base, tmp_path / "reference" / "data")

    duration = refresh_command(tmp_path / "reference", reference, config).complete().seconds
    # A random moment, then one in each kind of work: the load, a SQL model, a Python model, a
    # quality gate, the last step.
    points = [
        KillPoint(rng.uniform(0.2, duration)),
        KillPoint(rng.uniform(0.0, 0.3), after=rf"^step 1/{STEPS}: ingest"),
        KillPoint(rng.uniform(0.0, 0.3), after=r"START sql incremental model main\.bars_1d "),
        KillPoint(rng.uniform(0.0, 0.5), after=r"START python incremental model main\.emas_"),
        KillPoint(rng.uniform(0.0, 1.0), after=r"gate bars on "),
        KillPoint(0.0, after=rf"^step {STEPS}/{STEPS}: publish features matrix"),
    ]
    command = refresh_command(tmp_path / "crashed", crashed, config)
    attempts = crash_and_recover(command, points)
    context = describe(attempts)
    assert sum(a.killed and a.saw_trigger for a in attempts) >= 4, context

    assert relations(crashed) == relations(reference), context
    ignored_batches = any(killed_in_ingest(a) for a in attempts)
    problems = []
    labels = ("killed and rerun", "uninterrupted")
    models = [
        m for m in parsed_project().models if m.name in {b.name for b in built_models(reference)}
    ]
    assert {"bars_1d", "returns_daily", "emas_1d", "features_matrix"} <= {m.name for m in models}
    with (
        duckdb.connect(str(crashed), read_only=True) as left,
        duckdb.connect(str(reference), read_only=True) as right,
    ):
        for model in models:
            batch = BATCH_COLUMNS if ignored_batches else {"model": (), "state": ()}
            problems += compare_table(
                left, right, model.relation, model.key, ("invocation_id", *batch["model"]), labels
            )
            problems += compare_table(
                left,
                right,
                model.state_relation,
                model.partition_keys,
                ("updated_at", *batch["state"]),
                labels,
            )
    assert not problems, "\n".join([*problems, context])
    # A load killed after it took its batch id shifts the later ids: compare without them then.
    ignored = BATCH_COLUMNS["model"] if ignored_batches else ()
    assert published_files(tmp_path / "crashed" / "data", ignored) == published_files(
        tmp_path / "reference" / "data", ignored
    ), context
    statuses = manifest_statuses(tmp_path / "crashed" / "data")
    assert statuses[-1] == "success", (statuses, context)
    assert statuses.count("running") >= sum(a.killed and a.saw_trigger for a in attempts), context
