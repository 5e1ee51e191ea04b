"""Where the warehouse lives, the command line's help, and the DuckDB shell opening our file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from quantwarehouse import paths
from quantwarehouse.runs import validate_run_id
from tests.conftest import run_cli

REPO = paths.REPO_ROOT


def test_default_warehouse_is_in_the_repo_data_folder(monkeypatch):
    monkeypatch.delenv("QWH_WAREHOUSE", raising=False)
    monkeypatch.delenv("QWH_DATA_DIR", raising=False)
    assert paths.warehouse_path() == REPO / "data" / "warehouse.duckdb"


def test_warehouse_override_and_independence_from_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("QWH_WAREHOUSE", str(tmp_path / "x.duckdb"))
    monkeypatch.chdir(tmp_path)
    assert paths.warehouse_path() == tmp_path / "x.duckdb"
    monkeypatch.delenv("QWH_WAREHOUSE")
    monkeypatch.delenv("QWH_DATA_DIR", raising=False)
    assert paths.warehouse_path() == REPO / "data" / "warehouse.duckdb"


def test_dbt_profile_resolves_the_same_file_from_any_directory():
    """What the venv's activate script sets (DBT_PROJECT_DIR) is enough to find the warehouse.

    The profile is rendered with jinja and an `env_var` like dbt's, as dbt would from any directory.
    """
    import jinja2

    template = (REPO / "dbt_project" / "profiles.yml").read_text()
    env = {"DBT_PROJECT_DIR": str(REPO / "dbt_project")}

    def env_var(name: str, default: str | None = None) -> str:
        # Other targets (the sleeves' run target) read variables set only for their runs.
        return env.get(name, default if default is not None else f"<{name} unset>")

    rendered = jinja2.Template(template).render(env_var=env_var)
    path_line = next(line for line in rendered.splitlines() if "path:" in line)
    resolved = Path(path_line.split("path:", 1)[1].strip().strip('"')).resolve()
    assert resolved == REPO / "data" / "warehouse.duckdb"


def test_help_lists_every_command():
    result = run_cli("--help", check=True)
    for command in ("ingest", "scan", "daily-refresh"):
        assert command in result.stdout
    ingest_help = run_cli("ingest", "--help", check=True).stdout
    for flag in (
        "--source",
        "--symbols",
        "--interval",
        "--start",
        "--end",
        "--path",
        "--base-url",
        "--preset",
        "--until",
        "--force",
    ):
        assert flag in ingest_help


def test_a_command_imports_only_its_own_module():
    probe = (
        "import sys\n"
        "from quantwarehouse.cli import build_parser\n"
        "build_parser('daily-refresh').parse_args(['daily-refresh', '--all'])\n"
        "print('quantwarehouse.commands.production' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (found.returncode, found.stdout.strip()) == (0, "False"), found.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source", "nope"], "invalid choice"),
        (["--source", "synthetic", "--interval", "7x"], "unknown interval '7x'"),
        (["--source", "synthetic", "--start", "2024-13-01"], "--start: '2024-13-01' is not a date"),
        (
            ["--source", "synthetic", "--start", "2024-02-01", "--end", "2024-01-01"],
            "is after --end",
        ),
        (
            ["--source", "synthetic", "--until", "2025-06-24", "--start=-10x"],
            "--start: '-10x' is not a date; expected YYYY-MM-DD or -Nd (days before 2025-06-24)",
        ),
        (["--source", "synthetic", "--workers", "0"], "--workers: expected a positive integer"),
        (["--source", "synthetic", "--symbols", "BTC-USDT"], "--symbols: BTC-USDT not valid"),
        (["--source", "synthetic", "--freshness-hours", "-1"], "--freshness-hours"),
    ],
)
def test_bad_ingest_flags_give_a_clear_error_and_touch_nothing(data_dir, args, expected):
    result = run_cli("ingest", *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert not (data_dir / "warehouse.duckdb").exists()


def test_ingest_start_in_days_before_until(data_dir):
    flags = ["--source", "synthetic", "--preset", "tiny", "--until", "2025-06-24"]
    run_cli("ingest", *flags, "--start=-10d", "--end=-2d", "--quiet", check=True)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        days = con.execute(
            "select min(open_time)::date, max(open_time)::date from raw.klines"
        ).fetchone()
    assert days == (date(2025, 6, 14), date(2025, 6, 22))


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", "x" * 200, ".hidden"])
def test_run_ids_that_could_escape_their_folder_are_refused(bad):
    with pytest.raises(ValueError, match="not a valid run id"):
        validate_run_id(bad)


def test_duckdb_shell_from_the_registry_opens_the_warehouse(tmp_path):
    """Files must stay readable by the `duckdb-cli` package users install (a 1.x shell)."""
    shell = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    if shell is None:
        pytest.skip("duckdb-cli is not installed in this environment (pip install duckdb-cli)")
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema raw; create table raw.t as select 42 as answer")
    result = subprocess.run(
        [shell, "-readonly", "-csv", str(warehouse), "select answer from raw.t"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "42"
