"""quantwarehouse.dbt: dbt in-process on the warehouse, per-model results, named failures."""

from __future__ import annotations

import os
from datetime import date

import duckdb
import pytest

from ingest.raw_schema import ensure_raw_schema
from quantwarehouse.dbt import DbtRunError, dbt_args, run_dbt
from quantwarehouse.paths import DBT_PROJECT_DIR
from tests.incremental_harness import load_batch, random_walk


def test_args_always_name_the_project_and_profiles():
    args = dbt_args(["build", "--select", "bars_1d"], variables={"symbols": ["A"]})
    assert args[:3] == ["build", "--select", "bars_1d"]
    assert args[args.index("--project-dir") + 1] == str(DBT_PROJECT_DIR)
    assert args[args.index("--profiles-dir") + 1] == str(DBT_PROJECT_DIR)
    assert args[args.index("--vars") + 1] == '{"symbols": ["A"]}'


def test_models_report_status_rows_and_time(warehouse, dbt_workdir, dbt_manifest):
    load_batch(warehouse, random_walk("AAAUSDT", date(2024, 1, 1), 20))

    first = run_dbt(["run", "--select", "stg_klines", "bars_1d"], manifest=dbt_manifest)
    models = {m.name: m for m in first.models}
    assert models["bars_1d"].status == "success"
    assert models["bars_1d"].rows_written == 20
    assert models["bars_1d"].seconds > 0
    assert models["stg_klines"].rows_written is None  # a view stores no rows

    # The file is released: another connection (here a read-only one) opens it at once.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ids = con.execute("select distinct invocation_id from main.bars_1d").fetchall()
    assert ids == [(first.invocation_id,)]

    again = run_dbt(["run", "--select", "bars_1d"], manifest=dbt_manifest)
    assert [(m.name, m.rows_written) for m in again.models] == [("bars_1d", 0)]
    assert again.invocation_id != first.invocation_id


def test_json_artifacts_are_written_only_when_asked(warehouse, dbt_workdir, dbt_manifest, tmp_path):
    load_batch(warehouse, random_walk("AAAUSDT", date(2024, 1, 1), 3))
    quiet, default = tmp_path / "quiet", tmp_path / "default"
    run_dbt(["run", "--select", "stg_klines"], manifest=dbt_manifest, target_path=quiet,
            write_json=False)  # fmt: skip
    assert not (quiet / "manifest.json").exists()
    assert not (quiet / "run_results.json").exists()
    run_dbt(["run", "--select", "stg_klines"], manifest=dbt_manifest, target_path=default)
    assert (default / "manifest.json").exists()
    assert (default / "run_results.json").exists()


def test_warehouse_comes_from_paths_and_env_is_restored(
    data_dir, warehouse, dbt_workdir, dbt_manifest
):
    load_batch(warehouse, random_walk("AAAUSDT", date(2024, 1, 1), 3))
    assert "QWH_WAREHOUSE" not in os.environ
    run_dbt(["run", "--select", "stg_klines"], manifest=dbt_manifest)
    assert "QWH_WAREHOUSE" not in os.environ
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from main.stg_klines").fetchone()[0] == 3


def test_failing_model_is_named(warehouse, dbt_workdir, dbt_manifest):
    # An empty warehouse: stg_klines cannot be created over a missing raw.klines.
    duckdb.connect(str(warehouse)).close()
    with pytest.raises(DbtRunError, match=r"failed in model stg_klines") as failure:
        run_dbt(["run", "--select", "stg_klines"], manifest=dbt_manifest)
    assert "klines" in str(failure.value)
    assert [(n.name, n.status) for n in failure.value.result.failures] == [("stg_klines", "error")]


def test_failing_test_names_its_model(warehouse, dbt_workdir, dbt_manifest):
    with duckdb.connect(str(warehouse)) as con:
        ensure_raw_schema(con)
        # Written past the loader on purpose: an interval no source produces.
        con.execute(
            "insert into raw.klines values ('AAAUSDT', '7m', timestamp '2024-01-01', "
            "timestamp '2024-01-01 00:06:59.999', 1, 1, 1, 1, 1, null, null, null, null, "
            "1, 1, 'test', 1, now(), null, null)"
        )
    with pytest.raises(DbtRunError) as failure:
        run_dbt(
            ["build", "--select", "stg_klines", "--exclude-resource-type", "unit_test"],
            manifest=dbt_manifest,
        )
    message = str(failure.value)
    assert "test accepted_values_stg_klines_interval" in message
    assert "(on stg_klines)" in message


def test_data_tests_on_written_rows_read_only_what_the_build_wrote(
    warehouse, dbt_workdir, dbt_manifest
):
    """With the var data_tests_on_written_rows (daily-refresh), a data test of an incremental
    model reads the rows its build wrote: an old broken row passes unseen, and the same test
    without the var (a whole-table audit) names it."""
    load_batch(warehouse, random_walk("AAAUSDT", date(2024, 1, 1), 10))
    build = ["build", "--select", "bars_1d", "--exclude-resource-type", "unit_test"]
    run_dbt(["run", "--select", "stg_klines"], manifest=dbt_manifest)
    run_dbt(build, manifest=dbt_manifest)
    with duckdb.connect(str(warehouse)) as con:  # an old row repeated, written past dbt
        con.execute("insert into main.bars_1d from main.bars_1d where bar_date = '2024-01-02'")
    load_batch(warehouse, random_walk("AAAUSDT", date(2024, 1, 11), 1, seed=2))
    on_slice = {"data_tests_on_written_rows": True}

    result = run_dbt(build, variables=on_slice, manifest=dbt_manifest)
    assert [(m.name, m.rows_written) for m in result.models] == [("bars_1d", 1)]
    with pytest.raises(DbtRunError, match=r"bars_1d_primary_key"):
        run_dbt(["test", "--select", "bars_1d", "--exclude-resource-type", "unit_test"],
                manifest=dbt_manifest)  # fmt: skip
