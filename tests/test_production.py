"""`orchestrate.py production` end to end on a small warehouse (synthetic `tiny` preset): every
artifact, values checked against the warehouse by SQL, the sign-test gate, bad profiles and run
ids, the reader lock, and `audit verify` on an edited trail. The warehouse is never written."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from quantwarehouse.lock import WriterLock, current_readers
from quantwarehouse.paths import CONFIG_DIR, REPO_ROOT
from quantwarehouse.production import STEP_NAMES
from quantwarehouse.sleeves.audit import read_records
from tests.conftest import run_cli

# Windows small enough for the tiny preset (420 days, a few missing bars per symbol).
TEST_WINDOWS = {
    "lookback_days": 30,
    "backtest_days": 60,
    "rebalance_days": 14,
    "selection": {"min_history_days": 30},
}
ARTIFACTS = (
    "INDEX.md",
    "audit.jsonl",
    "run_manifest.json",
    "run.duckdb",
    "candidates.json",
    "selection.json",
    "directional_sign_test_pre_opt.json",
    "directional_sign_test.json",
    "optimization.json",
    "weights.csv",
    "tearsheet.html",
    "validation.json",
    "validation_metrics.json",
    "backtest_weights.csv",
    "plots/cluster_map.png",
    "plots/backtest_equity.png",
)
SLEEVE_SOURCES = ("+features_matrix", "+returns_daily", "+dim_symbols")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def tiny_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse of the `tiny` preset with the tables the sleeves read, built once per session
    (ingest through the CLI, then the models the sleeves read, with dbt) and copied by callers."""
    folder = tmp_path_factory.getbasetemp() / "tiny-sleeves"
    built = folder / "data" / "warehouse.duckdb"
    if (folder / "done").exists():
        return built
    from quantwarehouse.dbt import run_dbt

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    env = {"QWH_DATA_DIR": str(folder / "data"), "QWH_WAREHOUSE": str(built)}
    run_cli("ingest", "--source", "synthetic", "--preset", "tiny", "--quiet", env=env, check=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_WAREHOUSE", str(built))
        run_dbt(
            ["build", "--select", *SLEEVE_SOURCES],
            target_path=folder / "dbt" / "target",
            log_path=folder / "dbt" / "logs",
        )
    (folder / "done").touch()
    return built


def make_profile(folder: Path, base: str, **changes: Any) -> Path:
    """configs/profiles/<base>.yml with the test windows (and `changes`), as tiny_<...>.yml."""
    data = yaml.safe_load((CONFIG_DIR / "profiles" / f"{base}.yml").read_text())
    for key, value in {**TEST_WINDOWS, **changes}.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    path = folder / f"{base.replace('binance_spot_rating_', 'tiny_')}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    profiles: Path

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def runs(self) -> Path:
        return self.data_dir / "runs"

    def production(self, *args: str) -> Any:
        return run_cli("production", *args, env={"QWH_DATA_DIR": str(self.data_dir)})

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql, params or []).df()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    folder = tmp_path_factory.mktemp("production")
    data_dir = folder / "data"
    data_dir.mkdir()
    shutil.copyfile(tiny_warehouse(tmp_path_factory), data_dir / "warehouse.duckdb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QWH_DATA_DIR", str(data_dir))
        patch.delenv("QWH_WAREHOUSE", raising=False)
        yield Workspace(data_dir, folder / "profiles")


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path
    profile: Path
    result: Any
    warehouse_before: str

    def table(self, sql: str) -> pd.DataFrame:
        with duckdb.connect(str(self.run_dir / "run.duckdb"), read_only=True) as con:
            return con.execute(sql).df()

    def json(self, name: str) -> Any:
        return json.loads((self.run_dir / name).read_text())


@pytest.fixture(scope="module")
def full_run(workspace: Workspace) -> FinishedRun:
    """One complete run of the all-short sleeve (the SHORT inversion is the delicate part)."""
    profile = make_profile(workspace.profiles, "binance_spot_rating_all_short")
    before = sha256(workspace.warehouse)
    result = workspace.production("--profile", str(profile), "--run-id", "full-run")
    return FinishedRun(workspace.runs / "full-run", profile, result, before)


# -- the complete run ----------------------------------------------------------------------------


def test_full_run_succeeds_and_writes_every_artifact(full_run, workspace):
    assert full_run.result.returncode == 0, full_run.result.stdout + full_run.result.stderr
    missing = [name for name in ARTIFACTS if not (full_run.run_dir / name).is_file()]
    assert missing == []
    assert sha256(workspace.warehouse) == full_run.warehouse_before, "the warehouse was written"
    assert not Path(str(workspace.warehouse) + ".wal").exists()
    assert sorted(p.name for p in workspace.runs.iterdir()) == ["full-run"]
    assert (full_run.run_dir / "dbt" / "target" / "manifest.json").is_file()


def test_manifest_records_every_stage_with_start_end_and_status(full_run):
    manifest = full_run.json("run_manifest.json")
    assert manifest["status"] == "success" and manifest["failed_step"] is None
    assert [s["name"] for s in manifest["stages"]] == list(STEP_NAMES)
    for stage in manifest["stages"]:
        assert stage["status"] == "success", stage
        started = datetime.fromisoformat(stage["started_at"])
        ended = datetime.fromisoformat(stage["ended_at"])
        assert started <= ended and stage["error"] is None


def test_index_names_profile_and_run_id(full_run):
    index = (full_run.run_dir / "INDEX.md").read_text()
    assert "Profile: **tiny_all_short**" in index
    assert "Run id: `full-run`" in index
    assert "[tearsheet.html](tearsheet.html)" in index and "| 10 | post_analysis | success" in index


def test_candidates_are_the_scanner_rule_on_the_latest_features_date(full_run, workspace):
    candidates = full_run.table("select * from sleeve_candidates")
    latest = workspace.query("select max(bar_date) as d from main.features_matrix")["d"].iloc[0]
    assert set(pd.to_datetime(candidates["as_of"])) == {pd.Timestamp(latest)}
    ratings = workspace.query(
        "select symbol, rating_all from main.features_matrix where bar_date = ?", [latest]
    ).set_index("symbol")["rating_all"]
    for row in candidates.itertuples():
        assert row.rating == pytest.approx(ratings[row.symbol])
        assert row.rating < 0  # the all-short rule
    assert len(candidates) >= 2


def test_strict_health_counts_the_missing_days_of_the_window(full_run, workspace):
    """Missing one-day returns per candidate over the 30-day window, counted in SQL."""
    candidates = full_run.table(
        "select symbol, missing_bars, healthy, as_of from sleeve_candidates"
    )
    as_of = pd.Timestamp(candidates["as_of"].iloc[0]).date()
    counted = workspace.query(
        """
        with days as (
            select cast(d as date) as bar_date
            from generate_series(cast(? as date) - interval 29 day, cast(? as date), interval 1 day)
                as t(d)
        )
        select s.symbol, count(*) filter (where r.symbol is null) as missing
        from (select unnest(?::varchar[]) as symbol) as s
        cross join days
        left join main.returns_daily as r
            on r.symbol = s.symbol and r.bar_date = days.bar_date
            and not r.is_first_bar and not r.spans_missing_days
        group by s.symbol
        """,
        [as_of, as_of, candidates["symbol"].tolist()],
    ).set_index("symbol")["missing"]
    for row in candidates.itertuples():
        assert row.missing_bars == counted[row.symbol], row.symbol
        assert row.healthy == (counted[row.symbol] == 0)


def test_short_atoms_are_the_capped_inverse_of_the_raw_returns(full_run, workspace):
    atoms = full_run.table("select * from sleeve_atom_returns")
    assert set(atoms["direction"]) == {"SHORT"} and len(atoms) > 0
    raw = workspace.query(
        "select symbol, bar_date, simple_return from main.returns_daily where symbol in "
        "(select unnest(?::varchar[]))",
        [sorted(atoms["symbol"].unique())],
    )
    raw["bar_date"] = pd.to_datetime(raw["bar_date"])
    atoms["bar_date"] = pd.to_datetime(atoms["bar_date"])
    joined = atoms.merge(raw, on=["symbol", "bar_date"], how="left")
    expected = -np.minimum(joined["simple_return"].to_numpy(), 1.0)
    np.testing.assert_array_equal(joined["atom_return"].to_numpy(), expected)


def test_weights_are_long_only_sum_to_one_and_match_weights_csv(full_run):
    weights = full_run.table("select * from sleeve_weights where gate_passed")
    sums = weights.groupby("method")["weight"].sum()
    assert set(sums.index) == {"hrp", "min_variance", "max_sharpe", "equal_weight"}
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)
    assert (weights["weight"] >= 0).all()
    portfolio = full_run.table("select atom, weight, method from sleeve_portfolio")
    csv = pd.read_csv(full_run.run_dir / "weights.csv").set_index("atom")
    assert set(portfolio["method"]) == {"hrp"}  # the primary optimizer passed the gate
    for row in portfolio.itertuples():
        assert csv.at[row.atom, "weight"] == pytest.approx(row.weight, abs=1e-9)
        assert csv.at[row.atom, "hrp"] == pytest.approx(row.weight, abs=1e-9)


def test_sign_tests_pass_before_and_after_optimization(full_run):
    for name, check in (
        ("directional_sign_test_pre_opt.json", "pre_opt"),
        ("directional_sign_test.json", "post_opt"),
    ):
        document = full_run.json(name)
        assert document["status"] == "PASS" and document["findings"] == []
        assert document["check"] == check and document["gate"] is True
    assert full_run.json("directional_sign_test.json")["checked_weights"] is True


def test_backtest_universe_is_read_as_of_each_rebalance_date(full_run, workspace):
    rebalances = full_run.json("validation.json")["rebalances"]
    assert len(rebalances) >= 4
    for record in rebalances:
        day = record["rebalance_date"][:10]
        eligible = workspace.query(
            "select count(*) as n from main.features_matrix where bar_date = ? and rating_all < 0",
            [day],
        )["n"].iloc[0]
        assert record["universe"] == eligible, day


def test_validation_metrics_by_hand_from_the_daily_ledger(full_run):
    ledger = full_run.table("select * from sleeve_backtest order by bar_date")
    net = ledger["net_return"].to_numpy()
    np.testing.assert_allclose(ledger["equity"].to_numpy(), np.cumprod(1 + net), rtol=1e-12)
    metrics = full_run.json("validation_metrics.json")["metrics"]
    assert metrics["days"] == len(net)
    sharpe = net.mean() / net.std(ddof=1) * math.sqrt(365)
    cagr = np.prod(1 + net) ** (365 / len(net)) - 1
    assert metrics["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert metrics["cagr"] == pytest.approx(cagr, rel=1e-9)
    turnover = ledger["turnover"].dropna()
    assert metrics["rebalances"] == len(turnover)
    assert metrics["total_cost"] == pytest.approx(turnover.sum() * 10 / 10_000, rel=1e-12)


def test_tearsheet_is_one_page_with_embedded_plots(full_run):
    page = (full_run.run_dir / "tearsheet.html").read_text()
    assert "<title>tiny_all_short tearsheet (full-run)</title>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # in-sample equity and drawdown, weights, cluster map, backtest
    for image in images:
        assert base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in (
        "Key figures",
        "Validation: walk-forward backtest",
        "Weights",
        "Clusters",
        "Directional sign test",
        "Selection (HTR)",
        "Candidates",
    ):
        assert f"<h2>{heading}" in page, heading
    assert 'src="http' not in page and "<script" not in page


def test_audit_trail_has_an_intent_and_outcome_per_step_and_verifies(full_run):
    records = read_records(full_run.run_dir / "audit.jsonl")
    assert records[0]["kind"] == "genesis" and records[0]["run_id"] == "full-run"
    assert records[0]["config"]["profile"]["name"] == "tiny_all_short"
    assert records[-1] == {**records[-1], "kind": "close", "status": "success"}
    steps = [(r["kind"], r["step"]) for r in records[1:-1]]
    assert steps == [(kind, name) for name in STEP_NAMES for kind in ("intent", "outcome")]
    outcomes = [r for r in records if r["kind"] == "outcome"]
    assert {r["status"] for r in outcomes} == {"success"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["outputs_hash"]) for r in outcomes)
    result = run_cli("audit", "verify", str(full_run.run_dir))
    assert result.returncode == 0, result.stderr
    assert "verified, 22 records, chain intact" in result.stdout


def test_every_table_of_the_run_is_documented_column_by_column(full_run):
    docs = yaml.safe_load((REPO_ROOT / "python_models/sleeves/_sleeves__models.yml").read_text())
    documented = {m["name"]: {c["name"] for c in m["columns"]} for m in docs["models"]}
    tables = full_run.table(
        "select table_name, column_name from information_schema.columns "
        "where table_catalog = 'run' and table_schema = 'main'"
    )
    written = tables.groupby("table_name")["column_name"].apply(set).to_dict()
    assert written == documented
    for model in docs["models"]:
        assert model["description"].strip() and all(c["description"] for c in model["columns"])


# -- audit verify on damaged trails --------------------------------------------------------------


def damaged_copy(full_run: FinishedRun, folder: Path, edit: Any) -> Path:
    lines = (full_run.run_dir / "audit.jsonl").read_text().splitlines()
    folder.mkdir()
    (folder / "audit.jsonl").write_text("\n".join(edit(lines)) + "\n")
    return folder


def test_audit_verify_names_an_edited_line(full_run, tmp_path):
    def edit(lines: list[str]) -> list[str]:
        record = json.loads(lines[4])
        record["metrics"]["atoms"] = 99  # the outcome of synthesis, tampered with
        lines[4] = json.dumps(record, sort_keys=True, separators=(",", ":"))
        return lines

    result = run_cli("audit", "verify", str(damaged_copy(full_run, tmp_path / "run", edit)))
    assert result.returncode == 1
    assert "line 5: hash mismatch" in last_line(result.stderr)


def test_audit_verify_names_a_removed_line(full_run, tmp_path):
    folder = damaged_copy(full_run, tmp_path / "run", lambda lines: lines[:3] + lines[4:])
    result = run_cli("audit", "verify", str(folder / "audit.jsonl"))
    assert result.returncode == 1
    assert "line 4: prev_hash does not match" in last_line(result.stderr)


def test_audit_verify_without_a_trail_is_a_clear_error(tmp_path):
    result = run_cli("audit", "verify", str(tmp_path))
    assert result.returncode == 2
    assert "no audit trail for" in last_line(result.stderr)


# -- the sign-test gate ---------------------------------------------------------------------------


def test_sign_test_gate_stops_a_run_with_an_inverted_atom(workspace):
    profile = make_profile(workspace.profiles, "binance_spot_rating_all_short")
    result = workspace.production(
        "--profile",
        str(profile),
        "--run-id",
        "inverted",
        "--inject-sign-error",
        "first",
        "--skip-validation",
        "--skip-analysis",
    )
    run_dir = workspace.runs / "inverted"
    assert result.returncode == 1
    with duckdb.connect(str(run_dir / "run.duckdb"), read_only=True) as con:
        atom, symbol = con.execute(
            "select atom, symbol from sleeve_atoms order by atom_order limit 1"
        ).fetchone()
        stored = con.execute(
            "select bar_date, atom_return from sleeve_atom_returns where atom = ? order by 1",
            [atom],
        ).df()
    message = last_line(result.stderr)
    assert "failed at step 'sign_test_pre_opt'" in message and atom in message
    # The atom really holds the raw returns (not inverted): read from the warehouse.
    raw = workspace.query(
        "select bar_date, simple_return from main.returns_daily where symbol = ? and bar_date "
        "between ? and ? order by 1",
        [symbol, stored["bar_date"].min(), stored["bar_date"].max()],
    )
    np.testing.assert_array_equal(stored["atom_return"].to_numpy(), raw["simple_return"].to_numpy())
    document = json.loads((run_dir / "directional_sign_test_pre_opt.json").read_text())
    assert document["status"] == "FAIL"
    assert [f["atom"] for f in document["findings"]] == [atom]
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["failed_step"] == "sign_test_pre_opt"
    states = {s["name"]: s["status"] for s in manifest["stages"]}
    assert states["sign_test_pre_opt"] == "failed"
    assert {states[s] for s in STEP_NAMES[STEP_NAMES.index("pre_optimization") :]} == {"not_run"}
    assert not (run_dir / "weights.csv").exists()
    outcomes = {
        r["step"]: r["status"]
        for r in read_records(run_dir / "audit.jsonl")
        if r["kind"] == "outcome"
    }
    assert outcomes["sign_test_pre_opt"] == "failure"
    assert run_cli("audit", "verify", str(run_dir)).returncode == 0  # failed, but intact
    assert "failed at step `sign_test_pre_opt`" in (run_dir / "INDEX.md").read_text()


def test_with_the_gate_off_a_failed_sign_test_is_recorded_and_the_run_goes_on(workspace):
    profile = make_profile(
        workspace.profiles / "gate-off",
        "binance_spot_rating_all_short",
        gates={"sign_test": False, "stable_sum": True},
    )
    result = workspace.production(
        "--profile",
        str(profile),
        "--run-id",
        "gate-off",
        "--inject-sign-error",
        "first",
        "--skip-validation",
        "--skip-analysis",
    )
    assert result.returncode == 0, result.stderr
    run_dir = workspace.runs / "gate-off"
    for name in ("directional_sign_test_pre_opt.json", "directional_sign_test.json"):
        document = json.loads((run_dir / name).read_text())
        assert document["status"] == "FAIL" and document["gate"] is False
    page = (run_dir / "tearsheet.html").read_text()
    assert '<div class="value bad">FAIL</div>' in page


# -- bad input: nothing is written ---------------------------------------------------------------


def assert_nothing_written(workspace: Workspace, before: set[str]) -> None:
    assert {p.name for p in workspace.runs.iterdir()} == before


def existing_runs(workspace: Workspace) -> set[str]:
    return {p.name for p in workspace.runs.iterdir()} if workspace.runs.exists() else set()


def test_dry_run_prints_the_plan_and_writes_nothing(workspace):
    before = existing_runs(workspace)
    result = workspace.production(
        "--profile",
        "binance_spot_rating_ma_long",
        "--run-id",
        "planned",
        "--dry-run",
        "--skip-analysis",
    )
    assert result.returncode == 0, result.stderr
    assert "step 1 aggregation:" in result.stdout
    assert "step 10 post_analysis: post-analysis plots: skipped (--skip-analysis given)" in (
        result.stdout
    )
    assert "(not created)" in result.stdout
    assert existing_runs(workspace) == before


def test_unknown_profile_lists_the_profiles(workspace):
    before = existing_runs(workspace)
    result = workspace.production("--profile", "no_such_sleeve")
    assert result.returncode == 2
    message = last_line(result.stderr)
    assert "unknown profile 'no_such_sleeve'" in message
    assert "binance_spot_rating_all_long, binance_spot_rating_all_short" in message
    assert existing_runs(workspace) == before


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"lookback_days": "many"}, "lookback_days: expected an integer"),
        ({"direction": "SIDEWAYS"}, "direction: unknown value 'SIDEWAYS'"),
        ({"optimizers": ["hrp", "magic"]}, "optimizers[1]: unknown value 'magic'"),
        ({"leverage": 3}, "leverage: unknown key"),
    ],
)
def test_bad_profile_file_names_the_file_and_key(workspace, tmp_path, change, expected):
    profile = make_profile(tmp_path, "binance_spot_rating_all_long", **change)
    before = existing_runs(workspace)
    result = workspace.production("--profile", str(profile))
    assert result.returncode == 2
    message = last_line(result.stderr)
    assert str(profile) in message and expected in message
    assert existing_runs(workspace) == before


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "..", ""])
def test_invalid_run_id_is_refused(workspace, run_id):
    before = existing_runs(workspace)
    result = workspace.production("--profile", "binance_spot_rating_all_long", "--run-id", run_id)
    assert result.returncode == 2
    assert "is not a valid run id" in last_line(result.stderr)
    assert existing_runs(workspace) == before


def test_a_run_id_is_used_once(full_run, workspace):
    result = workspace.production("--profile", str(full_run.profile), "--run-id", "full-run")
    assert result.returncode == 2
    assert "already exists: every run needs its own run id" in last_line(result.stderr)


def test_warehouse_without_the_sleeve_tables_is_a_clear_error(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    duckdb.connect(str(data_dir / "warehouse.duckdb")).close()
    result = run_cli(
        "production",
        "--profile",
        "binance_spot_rating_all_long",
        env={"QWH_DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 2
    assert "main.features_matrix does not exist" in last_line(result.stderr)
    assert not (data_dir / "runs").exists()


def test_production_while_a_writer_holds_the_warehouse_fails_at_once(workspace):
    before = existing_runs(workspace)
    with WriterLock(workspace.warehouse, "refresh-now", "daily-refresh"):
        result = workspace.production("--profile", "binance_spot_rating_all_long")
    assert result.returncode == 3
    message = last_line(result.stderr)
    assert "locked for writing by run refresh-now" in message and "daily-refresh" in message
    assert existing_runs(workspace) == before


# -- an interrupted run says where it stopped ---------------------------------------------------


def test_an_interrupted_run_records_where_it_stopped_and_releases_the_warehouse(workspace):
    profile = make_profile(workspace.profiles, "binance_spot_rating_all_short")
    run_dir = workspace.runs / "interrupted"
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "orchestrate.py"),
            "production",
            "--profile",
            str(profile),
            "--run-id",
            "interrupted",
            "--skip-validation",
            "--skip-analysis",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        running = wait_for_stage(run_dir / "run_manifest.json", "selection", process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert last_line(stderr) == "error: interrupted"
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "interrupted"
    assert manifest["failed_step"] in STEP_NAMES[STEP_NAMES.index(running) :]
    stopped = next(s for s in manifest["stages"] if s["name"] == manifest["failed_step"])
    assert stopped["status"] == "failed" and stopped["ended_at"] is not None
    assert run_cli("audit", "verify", str(run_dir)).returncode == 0
    assert (
        f"failed at step `{manifest['failed_step']}`: interrupted"
        in (run_dir / "INDEX.md").read_text()
    )
    assert current_readers(workspace.warehouse) == []


def wait_for_stage(manifest: Path, stage: str, process: subprocess.Popen[str]) -> str:
    """Wait until `stage` (or a later one) runs; return the stage that runs."""
    deadline = time.monotonic() + 300
    later = STEP_NAMES[STEP_NAMES.index(stage) :]
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if manifest.exists():
            stages = json.loads(manifest.read_text())["stages"]  # replaced atomically: whole
            running = [s["name"] for s in stages if s["status"] == "running"]
            if running and running[0] in later:
                return running[0]
        time.sleep(0.1)
    raise AssertionError(f"stage {stage} never ran")
